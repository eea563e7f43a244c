#!/usr/bin/env python3
"""Extracts the subset of Proxmox VE's published API schema that pve-sim serves.

Input:  api-viewer/apidata.js of proxmox/pve-docs (a JavaScript file holding one JSON
        array: the API tree with, per method, its parameters, permissions and returns).
Output: pve-api-subset.json (beside this script), keyed by "METHOD /path".

Run it again when PVE's schema moves:
    git -C pve-docs show <commit>:api-viewer/apidata.js > /tmp/apidata.js
    python3 extract-subset.py /tmp/apidata.js <pve-docs commit> <apidata.js last-change commit>

Only data is extracted; nothing of Proxmox's code is copied. The named property-string
formats that apidata.js refers to by name only live in named-formats.json (hand-written
from qemu-server's format definitions, see its _source).
"""
import json
import sys

# Exactly the endpoints pve-sim implements (crates/pve-sim/src/api/).
ENDPOINTS = [
    ("GET", "/version"),
    ("GET", "/cluster/nextid"),
    ("GET", "/cluster/resources"),
    ("GET", "/nodes"),
    ("GET", "/nodes/{node}/status"),
    ("GET", "/nodes/{node}/qemu"),
    ("POST", "/nodes/{node}/qemu/{vmid}/clone"),
    ("GET", "/nodes/{node}/qemu/{vmid}/config"),
    ("POST", "/nodes/{node}/qemu/{vmid}/config"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/config"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/resize"),
    ("GET", "/nodes/{node}/qemu/{vmid}/status/current"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/start"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/stop"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/reboot"),
    ("DELETE", "/nodes/{node}/qemu/{vmid}"),
    ("GET", "/nodes/{node}/qemu/{vmid}/rrddata"),
    ("GET", "/nodes/{node}/tasks/{upid}/status"),
    ("GET", "/nodes/{node}/tasks/{upid}/log"),
]


def main():
    src, docs_commit, apidata_commit = sys.argv[1], sys.argv[2], sys.argv[3]
    text = open(src, encoding="utf-8").read()
    tree = json.loads(text[text.index("["): text.rindex("]") + 1])
    index = {}

    def walk(node):
        index[node["path"]] = node
        for child in node.get("children", []):
            walk(child)

    for node in tree:
        walk(node)

    out = {
        "_source": {
            "repository": "https://github.com/proxmox/pve-docs",
            "path": "api-viewer/apidata.js",
            "commit": docs_commit,
            "apidata_last_changed_in": apidata_commit,
            "extracted_by": "crates/pve-sim/schema/extract-subset.py",
        },
        "endpoints": {},
    }
    for method, path in ENDPOINTS:
        info = index[path]["info"][method]
        out["endpoints"][f"{method} {path}"] = {
            k: info[k]
            for k in ("parameters", "permissions", "returns", "allowtoken", "protected", "proxyto")
            if k in info
        }
    dst = __file__.rsplit("/", 1)[0] + "/pve-api-subset.json"
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
