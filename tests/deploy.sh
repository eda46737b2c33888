#!/usr/bin/env bash
# The two ways to deploy. The Helm chart, checked without a cluster (none can run here): helm lint --strict, template and
# install --dry-run of every ci/*-values.yaml scenario; each rendering valid for Kubernetes 1.30
# and the newest kubernetes-validate knows (strict: no unknown field); trivy finding no
# misconfiguration; the rendered configuration accepted by the binary's check-config; the values
# schema refusing a misspelt key; the Grafana dashboard's PromQL under promtool. The README's systemd unit, under systemd-analyze verify.
# Run by tests/run.sh after the cargo tests (it needs the binary they build).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/tools.sh

chart=helm/index766
binary="$CARGO_TARGET_DIR/debug/index766"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
validate() { PYTHONPATH="$KUBERNETES_VALIDATE_PYTHONPATH" python3 -m kubernetes_validate --strict --quiet "$@"; }

"$HELM" lint --strict "$chart"
for values in "$chart"/ci/*-values.yaml; do
  scenario="$(basename "$values" -values.yaml)"
  echo "tests/deploy.sh: $scenario"
  "$HELM" lint --strict --quiet "$chart" -f "$values"
  "$HELM" template index766 "$chart" -f "$values" >"$work/$scenario.yaml"
  "$HELM" install index766 "$chart" -f "$values" --dry-run=client >/dev/null
  validate -k 1.30.0 "$work/$scenario.yaml"
  validate "$work/$scenario.yaml"
  # The configuration the chart renders, as the pod's binary reads it (the SASL password, an
  # environment variable from a Secret in the pod, is given a stand-in).
  PYTHONPATH="$KUBERNETES_VALIDATE_PYTHONPATH" python3 - "$work/$scenario.yaml" "$work/$scenario.toml" <<'PY'
import sys, yaml
maps = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ConfigMap"]
open(sys.argv[2], "w").write(maps[0]["data"]["index766.toml"])
PY
  INDEX766_KAFKA_SASL_PASSWORD=stand-in INDEX766__SNAPSHOT__REPLICA=index766-0 "$binary" check-config --config "$work/$scenario.toml"
done

# Replicas sharing a bucket: a StatefulSet (stable pod names), each pod under its own prefix, and
# an alert sender elected; one replica in a bucket: a Deployment that elects nothing.
PYTHONPATH="$KUBERNETES_VALIDATE_PYTHONPATH" python3 - "$work" <<'PY'
import sys, yaml, tomllib
def rendered(scenario):
    docs = [d for d in yaml.safe_load_all(open(f"{sys.argv[1]}/{scenario}.yaml")) if d]
    workload = next(d for d in docs if d["kind"] in ("StatefulSet", "Deployment"))
    env = {e["name"]: e for e in workload["spec"]["template"]["spec"]["containers"][0]["env"]}
    return workload["kind"], env, tomllib.load(open(f"{sys.argv[1]}/{scenario}.toml", "rb"))
kind, env, config = rendered("replicas")
assert kind == "StatefulSet", kind
assert env["INDEX766__SNAPSHOT__REPLICA"]["value"] == "$(POD_NAME)", env
assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", env
assert config["alerts"]["election"] == {"topic": "index766.alert-sender", "session_timeout_ms": 15000}, config["alerts"]
kind, env, config = rendered("object-store")
assert kind == "Deployment" and "INDEX766__SNAPSHOT__REPLICA" not in env and "election" not in config["alerts"], (kind, env)
print("tests/deploy.sh: replicas elect a sender and keep their own prefixes; one replica does neither")
PY

# No misconfiguration in any scenario (the Restricted pod security profile among trivy's checks).
mkdir "$work/rendered" && mv "$work"/*.yaml "$work/rendered/"
"$TRIVY" config --quiet --skip-check-update --exit-code 1 "$work/rendered"

# The schema refuses a misspelt key, and check-config a value the pipeline would.
if "$HELM" template index766 "$chart" --set kafka.securityProtcol=SSL >"$work/out" 2>&1; then
  echo "tests/deploy.sh: the schema let a misspelt key through"; exit 1
fi
grep -q "additional properties 'securityProtcol' not allowed" "$work/out" || { cat "$work/out"; exit 1; }
"$HELM" template index766 "$chart" --set config.sql.max_concurrent=0 --show-only templates/configmap.yaml \
  | PYTHONPATH="$KUBERNETES_VALIDATE_PYTHONPATH" python3 -c 'import sys, yaml; print(yaml.safe_load(sys.stdin)["data"]["index766.toml"])' \
  >"$work/refused.toml"
if "$binary" check-config --config "$work/refused.toml" 2>"$work/out"; then
  echo "tests/deploy.sh: check-config accepted [sql] max_concurrent = 0"; exit 1
fi
grep -q "max_concurrent" "$work/out" || { cat "$work/out"; exit 1; }

# The Grafana dashboard: its JSON parses, every PromQL expression (variables given values) passes
# promtool as a recording rule, and names only metrics the pipeline exports (its PostgreSQL
# panels' SQL runs against a pipeline in tests/it/serving.rs).
grep -rhoE '"index766_[a-z_]+"' pipeline/src | tr -d '"' | sort -u >"$work/exported"
python3 - "$chart/files/grafana-dashboard.json" "$work/exported" "$work/dashboard.rules.yml" <<'PY'
import json, re, sys
dashboard, exported = json.load(open(sys.argv[1])), set(open(sys.argv[2]).read().split())
exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"] if "expr" in t]
exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
rules, unknown = [], set()
for i, expr in enumerate(exprs):
    expr = re.sub(r"label_values\((.*), *(\w+)\)", r"count by (\2) (\1)", expr)
    expr = expr.replace("$unit", "H99").replace("$period", "month")
    unknown |= {m for m in re.findall(r"index766_[a-z_]+", expr) if m not in exported}
    rules.append(f"      - record: dashboard:panel_{i}\n        expr: {json.dumps(expr)}")
if unknown:
    sys.exit(f"the dashboard names metrics the pipeline does not export: {sorted(unknown)}")
open(sys.argv[3], "w").write("groups:\n  - name: dashboard\n    rules:\n" + "\n".join(rules) + "\n")
print(f"tests/deploy.sh: {len(exprs)} dashboard expressions")
PY
promtool check rules "$work/dashboard.rules.yml"

# The README's systemd unit, as written there (the binary at the path it names: this build's).
python3 - README.md "$binary" "$work/index766.service" <<'PY'
import sys
text, binary, out = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3]
start = text.index("# /etc/systemd/system/index766.service")
open(out, "w").write(text[start:text.index("```", start)].replace("/usr/local/bin/index766", binary))
PY
systemd-analyze verify "$work/index766.service"
echo "tests/deploy.sh: the chart renders, validates and configures the binary in every scenario; the unit verifies"
