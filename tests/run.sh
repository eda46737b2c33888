#!/usr/bin/env bash
# The whole test suite, installing what it needs first: the README's test command, and what CI runs.
#   bash tests/run.sh            all tests
#   bash tests/run.sh real_broker   only tests whose name matches (cargo test filter)
set -euo pipefail
cd "$(dirname "$0")/.."

source tests/tools.sh

cargo test --workspace --locked "$@"
