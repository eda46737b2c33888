# What the tests and benchmarks need on a fresh machine, installed once: sourced by tests/run.sh
# and benches/run.sh (from the repository root).

# One persistent build folder outside the clone: DataFusion and librdkafka build once, not per clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/index766/target}"

TOOLS="$HOME/.cache/index766/tools"

# Apache Kafka itself, the broker every end-to-end test starts (KRaft, one node): its jars and
# tools from Maven Central (tests/kafka/pom.xml pins the version; the Maven repository stays in
# ~/.m2, outside the clone).
KAFKA_VERSION=4.1.1
export KAFKA_LIBS="$HOME/.cache/index766/kafka/$KAFKA_VERSION/libs"
if [[ ! -f "$KAFKA_LIBS/kafka-tools-$KAFKA_VERSION.jar" ]]; then
  echo "tests/run.sh: fetching Apache Kafka $KAFKA_VERSION from Maven Central (once)"
  command -v java >/dev/null || { apt-get update && apt-get install -y openjdk-17-jre-headless; }
  command -v mvn >/dev/null || { apt-get update && apt-get install -y maven; }
  rm -rf "$KAFKA_LIBS.partial"
  mvn -q -f tests/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIBS.partial"
  rm -rf "$KAFKA_LIBS"
  mv "$KAFKA_LIBS.partial" "$KAFKA_LIBS"
fi

# The S3-compatible object store the snapshot-store tests start (moto's server, pinned, from PyPI).
MOTO_VERSION=5.2.5
export MOTO_PYTHONPATH="$TOOLS/moto-$MOTO_VERSION"
if ! PYTHONPATH="$MOTO_PYTHONPATH" python3 -c "import moto.server" 2>/dev/null; then
  echo "tests/run.sh: installing moto $MOTO_VERSION, the S3-compatible test server (once)"
  command -v python3 >/dev/null || { apt-get update && apt-get install -y python3; }
  python3 -m pip --version >/dev/null 2>&1 || { apt-get update && apt-get install -y python3-pip; }
  python3 -m pip install --quiet --target "$MOTO_PYTHONPATH" "moto[server]==$MOTO_VERSION" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages --target "$MOTO_PYTHONPATH" "moto[server]==$MOTO_VERSION"
fi

# A PostgreSQL client that speaks the extended protocol (bound parameters, prepared statements),
# as JDBC (DBeaver) and Grafana do: psycopg 3, pinned, from PyPI.
PSYCOPG_VERSION=3.2.12
export PSYCOPG_PYTHONPATH="$TOOLS/psycopg-$PSYCOPG_VERSION"
if ! PYTHONPATH="$PSYCOPG_PYTHONPATH" python3 -c "import psycopg" 2>/dev/null; then
  echo "tests/run.sh: installing psycopg $PSYCOPG_VERSION, the extended-protocol test client (once)"
  python3 -m pip install --quiet --target "$PSYCOPG_PYTHONPATH" "psycopg[binary]==$PSYCOPG_VERSION" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages --target "$PSYCOPG_PYTHONPATH" "psycopg[binary]==$PSYCOPG_VERSION"
fi

# The fuzzer of the typed API's OpenAPI document: schemathesis, pinned, from PyPI, in a
# virtual environment of its own (its command line and many dependencies).
SCHEMATHESIS_VERSION=4.32.5
export SCHEMATHESIS="$TOOLS/schemathesis-$SCHEMATHESIS_VERSION/bin/schemathesis"
if ! "$SCHEMATHESIS" --version >/dev/null 2>&1; then
  echo "tests/run.sh: installing schemathesis $SCHEMATHESIS_VERSION, the API fuzzer (once)"
  python3 -m venv --help >/dev/null 2>&1 || { apt-get update && apt-get install -y python3-venv; }
  rm -rf "$TOOLS/schemathesis-$SCHEMATHESIS_VERSION"
  python3 -m venv "$TOOLS/schemathesis-$SCHEMATHESIS_VERSION"
  "$TOOLS/schemathesis-$SCHEMATHESIS_VERSION/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

# The real clients and servers the serving tests drive: psql, promtool, Alertmanager, Chromium
# with ChromeDriver, curl and openssl (test CAs) (Debian's packages).
missing=()
for need in psql:postgresql-client promtool:prometheus prometheus-alertmanager:prometheus-alertmanager \
    chromium:chromium chromedriver:chromium-driver curl:curl openssl:openssl; do
  command -v "${need%%:*}" >/dev/null || missing+=("${need##*:}")
done
if ((${#missing[@]})); then
  echo "tests/run.sh: installing ${missing[*]} (Debian packages, once)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

