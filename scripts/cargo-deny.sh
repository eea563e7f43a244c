#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (policy: deny.toml): RustSec advisories,
# licences, banned crates and sources. Fails on a vulnerable, yanked, banned or
# unlicensed dependency.
#
# The machines that run CI reach crates.io but not GitHub, so advisories come from
# the offline RustSec snapshot beside the checkout (../shared/advisory-db, a git
# bundle; override with CLAWY_ADVISORY_DB_BUNDLE). Advisories published after the
# snapshot are not seen (docs/SECURITY-TESTS.md says so).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

bundle=${CLAWY_ADVISORY_DB_BUNDLE:-$repo/../shared/advisory-db/advisory-db.bundle}
if [ ! -f "$bundle" ]; then
  echo "cargo-deny: no RustSec snapshot at $bundle (set CLAWY_ADVISORY_DB_BUNDLE)" >&2
  exit 1
fi

if ! command -v cargo-deny >/dev/null; then
  echo "cargo-deny: installing cargo-deny 0.20.2 (about 2 minutes, once)" >&2
  cargo install cargo-deny --version 0.20.2 --locked --quiet
fi

# cargo-deny looks for the database in a directory named after its default URL,
# under deny.toml's db-path. Re-clone only when the snapshot changed.
db=$repo/target/advisory-db/advisory-db-3157b0e258782691
stamp=$repo/target/advisory-db/.bundle-sha256
sum=$(sha256sum "$bundle" | cut -d' ' -f1)
if [ ! -d "$db/.git" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
  rm -rf "$db"
  mkdir -p "$(dirname "$db")"
  git -c init.defaultBranch=main clone --quiet "$bundle" "$db"
  printf '%s\n' "$sum" > "$stamp"
fi

# cargo-deny reads `cargo metadata`, which needs every locked crate downloaded.
cargo fetch --locked --quiet
cargo deny --offline check
