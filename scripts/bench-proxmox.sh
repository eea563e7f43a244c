#!/usr/bin/env bash
# Proxmox driver benchmark against pve-sim (the Proxmox VE simulator; a real PVE
# cannot run on the project's machines): 50 concurrent creates (clone + config +
# resize, not started) with 2 s clone tasks against one simulated node, through
# the agent's executor, versus one create alone. Target: wall <= 3 x one create.
# Prints both figures; record them in docs/BENCHMARKS.md.
# Needs root (the test suite's usual rights) and qemu-img.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -p clawy-agent --test it -- --ignored --exact \
  proxmox_driver::bench_proxmox_50_concurrent_creates_with_2s_clones --nocapture 2>&1 \
  | grep -E '^BENCH|test result'
