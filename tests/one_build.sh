#!/usr/bin/env bash
# The README's demo command must reuse the test build: after `cargo test -p index766`, building
# the binary as `cargo run -p index766 -- demo` does may compile nothing but index766 itself. A
# dependency compiled again means a dev-dependency changed a feature of a normal one (about 12
# minutes of DataFusion here): align the feature in pipeline/Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p index766 --locked --message-format=json-render-diagnostics | python3 -c '
import json, sys
rebuilt = sorted({m["package_id"] for m in map(json.loads, sys.stdin)
                  if m.get("reason") == "compiler-artifact" and not m["fresh"]
                  and "/pipeline#" not in m["package_id"] and "/core#" not in m["package_id"]})
if rebuilt:
    sys.exit("the demo build compiled dependencies the test build had compiled differently:\n  " + "\n  ".join(rebuilt))
'
echo "one build: the demo binary reuses every dependency of the test build"
