#!/usr/bin/env bash
# The final secrets scan of scripts/test-all: every secret the tests registered
# (clawy_testkit::secrets::register, and the scripts' own) is searched for in every
# log and database dump the run left. Any hit fails, naming the file and which
# registered secret file it came from, never the secret itself.
#
#   scripts/secrets-scan.sh [ARTIFACTS_DIR]     # default: $CLAWY_TEST_ARTIFACTS or target/test-artifacts
#
# Layout (clawy_testkit::secrets): ARTIFACTS_DIR/secrets/*.txt (one secret a line),
# ARTIFACTS_DIR/logs/** (test logs, server logs, cargo test output) and
# ARTIFACTS_DIR/dumps/** (SQLite copies and pg_dump output of every test database).
# It fails too when nothing was registered or nothing was scanned: an empty scan
# proves nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${1:-${CLAWY_TEST_ARTIFACTS:-${CARGO_TARGET_DIR:-target}/test-artifacts}}"
MIN_LEN=12   # clawy_testkit::secrets::MIN_SCANNED_LEN

fail() { echo "secrets-scan: $*" >&2; exit 1; }

[ -d "$DIR/secrets" ] || fail "no $DIR/secrets: the tests registered no secret (is CLAWY_TEST_ARTIFACTS set for the run?)"

# One pattern file, deduplicated, short lines dropped; kept private.
patterns=$(mktemp)
trap 'rm -f "$patterns"' EXIT
chmod 600 "$patterns"
cat "$DIR"/secrets/*.txt 2>/dev/null | awk -v m="$MIN_LEN" 'length($0) >= m' | sort -u > "$patterns"
n_secrets=$(wc -l < "$patterns")
[ "$n_secrets" -gt 0 ] || fail "no secret registered in $DIR/secrets"

files=()
while IFS= read -r -d '' f; do files+=("$f"); done < <(find "$DIR/logs" "$DIR/dumps" -type f -print0 2>/dev/null)
[ ${#files[@]} -gt 0 ] || fail "no log or dump under $DIR/logs or $DIR/dumps: nothing to scan"

# -a: dumps are binary (SQLite pages); -l: names only, never the matching text;
# -F: secrets are literal strings. xargs keeps the argument list bounded.
hits=$(printf '%s\0' "${files[@]}" | xargs -0 grep -a -l -F -f "$patterns" -- 2>/dev/null || true)
if [ -n "$hits" ]; then
  echo "secrets-scan: FAILED: a secret the tests created is in these files (the secret is not printed; grep the file for the registered values in $DIR/secrets to see which):" >&2
  printf '  %s\n' $hits >&2
  exit 1
fi
echo "secrets-scan: $n_secrets secrets, ${#files[@]} logs and dumps, no hit"
