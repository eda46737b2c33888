#!/usr/bin/env bash
# The whole test suite, installing what it needs first: the README's test command, and what CI runs.
#   bash tests/run.sh            all tests
#   bash tests/run.sh real_broker   only tests whose name matches (cargo test filter)
set -euo pipefail
cd "$(dirname "$0")/.."

source tests/tools.sh

# The scoring core on its own: its tests compile neither DataFusion nor librdkafka.
cargo test -p index766-core --locked "$@"
# The pipeline. Run per package, not --workspace: one invocation unifies the features of every
# member's dev-dependencies, and the demo's `cargo run -p index766` would then build DataFusion again.
cargo test -p index766 --locked "$@"
bash tests/one_build.sh
bash tests/deploy.sh
bash tests/image.sh
