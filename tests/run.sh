#!/usr/bin/env bash
# The whole test suite, installing what it needs first: the README's test command, and what CI runs.
#   bash tests/run.sh            all tests
#   bash tests/run.sh real_broker   only tests whose name matches (cargo test filter)
set -euo pipefail
cd "$(dirname "$0")/.."

# One persistent build folder outside the clone: DataFusion and librdkafka build once, not per clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/index766/target}"

# The real Kafka-compatible broker the end-to-end tests start (pinned; built from crates.io once).
TOOLS="$HOME/.cache/index766/tools"
TANSU_VERSION=0.6.0
if ! "$TOOLS/bin/tansu" --version 2>/dev/null | grep -qx "tansu $TANSU_VERSION"; then
  echo "tests/run.sh: installing tansu $TANSU_VERSION, the test broker (about 10 minutes on 2 cores, once)"
  CARGO_TARGET_DIR="$TOOLS/build" cargo install tansu --version "$TANSU_VERSION" --locked \
    --features dynostore,libsql --root "$TOOLS"
fi
export TANSU_BIN="$TOOLS/bin/tansu"

cargo test --workspace --locked "$@"
