#!/usr/bin/env bash
# nftables scale benchmark: time adding the 10th and the 1000th port
# forward through the agent's network module in a throwaway network namespace;
# the 1000th must cost <= 2x the 10th and the rule count must be the same.
# Needs root (it creates and deletes a namespace). Exit status 0 = targets met.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run -q -p clawy-agent --example bench_nft
