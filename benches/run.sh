#!/usr/bin/env bash
# Every figure of BENCHMARKS.md, measured in one run and written there (a release build; about
# an hour at the default scale on 2 cores, most of it generating and replaying a year of national
# history). Arguments go to index766-bench, e.g.:
#   bash benches/run.sh --dossiers 1000000 --out /tmp/BENCHMARKS.md   a smaller, quicker run
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/tools.sh

# DuckDB, the peer of the SQL figure (Python package, pinned).
DUCKDB_VERSION=1.4.2
DUCKDB_PYTHONPATH="$TOOLS/duckdb-$DUCKDB_VERSION"
if ! PYTHONPATH="$DUCKDB_PYTHONPATH" python3 -c "import duckdb" 2>/dev/null; then
  echo "benches/run.sh: installing duckdb $DUCKDB_VERSION (once)"
  python3 -m pip install --quiet --target "$DUCKDB_PYTHONPATH" "duckdb==$DUCKDB_VERSION" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages --target "$DUCKDB_PYTHONPATH" "duckdb==$DUCKDB_VERSION"
fi

cargo build --release --locked -p index766 --features bench --bins
PYTHONPATH="$DUCKDB_PYTHONPATH" "$CARGO_TARGET_DIR/release/index766-bench" "$@"
