#!/usr/bin/env bash
# Mutation testing (cargo-mutants) of the modules that keep Clawy's security
# promises: each mutant is a small bug put into the code (a condition flipped, a
# function returning a default); a mutant that no test notices ("missed") is a
# promise that is not really proven. docs/SECURITY-TESTS.md records the runs, the
# survivors and why the remaining ones cannot matter.
#
#   scripts/mutants.sh                 what CI (scripts/test-all) runs: only mutants on
#                                      lines this branch changes against main (merge-base),
#                                      in the modules below; skips with a message when
#                                      none of them changed; bounded by MUTANTS_BUDGET
#   scripts/mutants.sh --full [GROUP…] every mutant of the groups (all by default); by
#                                      hand: hours on a small machine
#   scripts/mutants.sh --list          the groups, their files and test filters
#
# Environment:
#   MUTANTS_BASE     branch to diff against (default main)
#   MUTANTS_BUDGET   seconds for the whole --changed run (default 900); a group that
#                    runs out of time is reported, and the run fails only on missed mutants
#   MUTANTS_TIMEOUT  seconds per test run of one mutant (default 300)
#   MUTANTS_JOBS     parallel builds (default 1: each job is a full build directory)
#   MUTANTS_OUT      where results and the shared build directory go (default target/mutants)
#
# Exit: 0 no missed mutant (or nothing to test), 1 a mutant was missed or the
# unmutated tests failed, 2 usage.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

# The pinned cargo-mutants; installed on first use (crates.io, --locked).
MUTANTS_VERSION=27.1.0
mode=changed
case "${1:-}" in
  --full) mode=full; shift ;;
  --list) mode=list; shift ;;
  --changed) shift ;;
  -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
  -*) echo "mutants: unknown option $1" >&2; exit 2 ;;
esac

# Groups: name | package | files | arguments for `cargo test` (after cargo-mutants'
# `--`). Each group's tests are the ones that exercise its files: the package's unit
# tests plus the integration tests by module name, never the slow QEMU suites (their
# properties are tested by the faster netns and unit tests named here).
groups=(
  "agent-ruleset|clawy-agent|crates/clawy-agent/src/network/ruleset.rs|--lib --test it -- --skip agent_ network:: network_rules:: network_host::"
  "agent-netconfig|clawy-agent|crates/clawy-agent/src/network/config.rs|--lib --test it -- --skip agent_ network:: network_rules:: network_host::"
  "agent-tokens|clawy-agent|crates/clawy-agent/src/tokens.rs|--lib --test it -- tokens:: agent_api::"
  "agent-spec|clawy-agent|crates/clawy-agent/src/spec.rs|--lib --test it -- spec:: agent_api::"
  "agent-routes|clawy-agent|crates/clawy-agent/src/api/mod.rs|--lib --test it -- api:: agent_api::"
  "core-throttle|clawy-core|crates/clawy-core/src/throttle.rs|--lib --test it -- throttle:: accounts:: reports::"
  "core-sessions|clawy-core|crates/clawy-core/src/sessions.rs|--lib --test it -- sessions:: accounts::"
  "core-api-keys|clawy-core|crates/clawy-core/src/api_keys.rs|--lib --test it -- api_keys::"
  "core-crypto|clawy-core|crates/clawy-core/src/crypto.rs|--lib --test it -- crypto:: storage:: hosts_registry::"
  "core-accounts|clawy-core|crates/clawy-core/src/accounts.rs|--lib --test it -- accounts:: mail::"
  "server-origin|clawy-server|crates/clawy-server/src/auth/origin.rs|--lib --test it -- auth:: authz_matrix:: web_csrf::"
  "server-auth|clawy-server|crates/clawy-server/src/auth/caller.rs crates/clawy-server/src/auth/client_addr.rs|--lib --test it -- auth:: api_me:: authz_matrix:: web_csrf::"
  "server-csrf|clawy-server|crates/clawy-server/src/web/context.rs|--lib --test it -- web::context:: web_csrf:: web_auth::"
  "server-routes|clawy-server|crates/clawy-server/src/api/mod.rs|--lib --test it -- api:: authz_matrix::"
)

field() { echo "$1" | cut -d'|' -f"$2"; }

if [ "$mode" = list ]; then
  for g in "${groups[@]}"; do
    printf '%s (%s)\n  files: %s\n  tests: cargo test -p %s %s\n' \
      "$(field "$g" 1)" "$(field "$g" 2)" "$(field "$g" 3)" "$(field "$g" 2)" "$(field "$g" 4)"
  done
  exit 0
fi

if ! cargo mutants --version 2>/dev/null | grep -qx "cargo-mutants $MUTANTS_VERSION"; then
  echo "mutants: installing cargo-mutants $MUTANTS_VERSION" >&2
  cargo install --locked cargo-mutants --version "$MUTANTS_VERSION" >&2
fi

selected=("${groups[@]}")
if [ "$mode" = full ] && [ $# -gt 0 ]; then
  selected=()
  for want in "$@"; do
    found=
    for g in "${groups[@]}"; do
      [ "$(field "$g" 1)" = "$want" ] && selected+=("$g") && found=1
    done
    [ -n "$found" ] || { echo "mutants: no group $want (see --list)" >&2; exit 2; }
  done
fi

out_root=${MUTANTS_OUT:-$repo/target/mutants}
mkdir -p "$out_root"
diff_file=
if [ "$mode" = changed ]; then
  base=${MUTANTS_BASE:-main}
  if ! mb=$(git merge-base "$base" HEAD 2>/dev/null); then
    echo "mutants: no merge-base with $base; nothing to compare, skipped" >&2
    exit 0
  fi
  diff_file=$out_root/changed.diff
  # The working tree against the merge-base: uncommitted edits count too.
  git diff "$mb" -- '*.rs' > "$diff_file"
  changed=$(git diff --name-only "$mb" -- '*.rs')
  keep=()
  for g in "${selected[@]}"; do
    for f in $(field "$g" 3); do
      if grep -qx "$f" <<<"$changed"; then keep+=("$g"); break; fi
    done
  done
  if [ ${#keep[@]} -eq 0 ]; then
    echo "mutants: no promise-keeping module changed against $base ($(git rev-parse --short "$mb")); skipped (scripts/mutants.sh --full runs them all)"
    exit 0
  fi
  selected=("${keep[@]}")
fi

budget=${MUTANTS_BUDGET:-900}
started=$(date +%s)
status=0
summary=()
for g in "${selected[@]}"; do
  name=$(field "$g" 1)
  pkg=$(field "$g" 2)
  files=$(field "$g" 3)
  read -r -a test_args <<<"$(field "$g" 4)"
  # Results of a --changed run go apart from the last full run's.
  out=$out_root/$name
  [ "$mode" = changed ] && out=$out_root/changed/$name
  rm -rf "$out"
  args=(mutants --package "$pkg" --timeout "${MUTANTS_TIMEOUT:-300}" --build-timeout 1800
    --jobs "${MUTANTS_JOBS:-1}" --output "$out" --no-shuffle --copy-target=false)
  for f in $files; do args+=(--file "$f"); done
  [ -n "$diff_file" ] && args+=(--in-diff "$diff_file")
  left=$budget
  if [ "$mode" = changed ]; then
    left=$((budget - ($(date +%s) - started)))
    if [ "$left" -le 60 ]; then
      summary+=("$name: not run (time budget of ${budget}s used up)")
      continue
    fi
  fi
  echo "== mutants: $name ($pkg: $files) $(date -u +%H:%M:%S)" >&2
  rc=0
  # The copies cargo-mutants builds in share one target directory (never the
  # checkout's own), so later runs build incrementally.
  if [ "$mode" = changed ]; then
    CARGO_TARGET_DIR=$out_root/build timeout --signal=INT "$left" cargo "${args[@]}" -- "${test_args[@]}" || rc=$?
  else
    CARGO_TARGET_DIR=$out_root/build cargo "${args[@]}" -- "${test_args[@]}" || rc=$?
  fi
  count() { if [ -f "$out/mutants.out/$1.txt" ]; then grep -c . "$out/mutants.out/$1.txt" || true; else echo 0; fi; }
  line="$name: caught $(count caught), missed $(count missed), timeout $(count timeout), unviable $(count unviable)"
  if [ "$mode" = changed ] && [ "$rc" = 0 ] && [ ! -s "$out/mutants.out/caught.txt" ] && [ ! -s "$out/mutants.out/unviable.txt" ]; then
    line="$name: no mutant on the changed lines (changes only in tests or comments)"
  fi
  case $rc in
    0) ;;
    2) status=1; line+=" — MISSED: $(tr '\n' ';' < "$out/mutants.out/missed.txt")" ;;
    3) line+=" (timeouts count as caught: the mutant hung the tests)" ;;
    124 | 130) line+=" — stopped by the time budget; the rest is untested" ;;
    *) status=1; line+=" — cargo-mutants exit $rc (1: usage or internal error, 4: the unmutated tests fail)" ;;
  esac
  summary+=("$line")
done

echo "== mutants summary ($mode, $(date -u +%Y-%m-%dT%H:%MZ))"
printf '  %s\n' "${summary[@]}"
exit $status
