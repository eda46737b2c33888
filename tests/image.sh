#!/usr/bin/env bash
# The container image, built and checked without a Docker daemon (none runs here). The final
# stage of the Dockerfile is assembled as an OCI image layout, instruction by instruction, with
# the build stage's output made from this test build's binary (its debug info stripped, as the
# Dockerfile does to the release binary); umoci (Debian) unpacks it as a runtime would. Checked:
# the image config's numeric non-root user, entrypoint, exposed ports and labels; that the root
# filesystem holds only the binary, the libraries it links, the CA certificates, schemas/ and
# sql/; and that the binary runs from it, as that user (`--version`, and `check-config` of the
# configuration the chart renders). Run by tests/run.sh after the cargo tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/tools.sh

binary="$CARGO_TARGET_DIR/debug/index766"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The build stage's /rootfs, as its RUN line makes it.
build="$work/build/rootfs"
mkdir -p "$build/usr/local/bin" "$build/etc/ssl/certs"
objcopy --strip-debug "$binary" "$build/usr/local/bin/index766"
for lib in $(ldd "$binary" | grep -o '/lib[^ ]*'); do
  mkdir -p "$build$(dirname "$lib")" && cp "$lib" "$build$lib"
done
cp /etc/ssl/certs/ca-certificates.crt "$build/etc/ssl/certs/"

version="$(sed -n 's/^version = "\(.*\)"/\1/p' pipeline/Cargo.toml | head -1)"
python3 - Dockerfile "$work/build" "$work/layout" "VERSION=$version" "SOURCE=file://$PWD" <<'PY'
import gzip, hashlib, io, json, os, shlex, sys, tarfile

dockerfile, build_root, layout, *build_args = sys.argv[1:]
args = dict(a.split("=", 1) for a in build_args)
text = open(dockerfile).read().replace("\\\n", " ")
lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
final = lines[max(i for i, l in enumerate(lines) if l.upper().startswith("FROM "))]
assert final.split()[1] == "scratch", f"the final stage must start FROM scratch: {final}"
stage = lines[lines.index(final) + 1:]

def expand(value):
    for key, val in args.items():
        value = value.replace("${%s}" % key, val).replace("$" + key, val)
    return value

files = {}  # path in the image -> path on this machine
config = {"Env": [], "Labels": {}, "ExposedPorts": {}}
def add(source, target):
    if os.path.isdir(source):
        for root, _, names in os.walk(source):
            for name in names:
                path = os.path.join(root, name)
                files[os.path.join(target, os.path.relpath(path, source)).lstrip("/")] = path
    else:
        files[target.lstrip("/")] = source
for line in stage:
    word, rest = line.split(None, 1)
    word = word.upper()
    if word == "ARG":
        assert rest in args, f"ARG {rest} has no --build-arg"
    elif word == "COPY":
        parts = shlex.split(rest)
        if parts[0] == "--from=build":
            add(os.path.join(build_root, parts[1].lstrip("/")), parts[2])
        else:
            add(parts[0], parts[1])
    elif word == "LABEL":
        config["Labels"].update(dict(p.split("=", 1) for p in (expand(x) for x in shlex.split(rest))))
    elif word == "ENV":
        config["Env"].append(expand(rest))
    elif word == "USER":
        config["User"] = rest
    elif word == "WORKDIR":
        config["WorkingDir"] = rest
    elif word == "EXPOSE":
        config["ExposedPorts"].update({f"{p}/tcp": {} for p in rest.split()})
    elif word in ("ENTRYPOINT", "CMD"):
        config["Entrypoint" if word == "ENTRYPOINT" else "Cmd"] = json.loads(rest)
    else:
        sys.exit(f"tests/image.sh cannot assemble {word} in the final stage")

# One layer: every file, owned by root, in a fixed order and time, so the same input gives the
# same digest.
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
    dirs = sorted({os.path.dirname(p) for p in files} | {config["WorkingDir"].lstrip("/")})
    for d in sorted({"/".join(d.split("/")[:i]) for d in dirs for i in range(1, len(d.split("/")) + 1)}):
        info = tarfile.TarInfo(d); info.type = tarfile.DIRTYPE; info.mode = 0o755; tar.addfile(info)
    for path in sorted(files):
        info = tar.gettarinfo(files[path], arcname=path)
        info.uid = info.gid = 0; info.uname = info.gname = ""; info.mtime = 0
        info.mode = 0o755 if os.access(files[path], os.X_OK) else 0o644
        with open(files[path], "rb") as f:
            tar.addfile(info, f)
layer = gzip.compress(raw.getvalue(), mtime=0)

os.makedirs(f"{layout}/blobs/sha256")
def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    open(f"{layout}/blobs/sha256/{digest}", "wb").write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}
image = {"architecture": "amd64", "os": "linux", "config": config,
         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()]}}
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(json.dumps(image).encode())},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **blob(layer)}]}
index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
         **blob(json.dumps(manifest).encode()), "annotations": {"org.opencontainers.image.ref.name": "test"}}]}
open(f"{layout}/index.json", "w").write(json.dumps(index))
open(f"{layout}/oci-layout", "w").write('{"imageLayoutVersion": "1.0.0"}')
print(f"tests/image.sh: an image of {len(files)} files, layer {len(layer) >> 20} MiB")
PY

# Unpacked as a runtime would: its config says who runs what.
umoci unpack --image "$work/layout:test" "$work/bundle" >/dev/null
python3 - "$work/bundle/config.json" "$work/layout" "$version" <<'PY'
import json, sys
runtime, layout, version = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
index = json.load(open(f"{layout}/index.json"))
blob = lambda d: json.load(open(f"{layout}/blobs/sha256/{d.split(':')[1]}"))
config = blob(blob(index["manifests"][0]["digest"])["config"]["digest"])["config"]
user = runtime["process"]["user"]
assert user["uid"] == 10766 and user["gid"] == 10766, f"a numeric non-root user: {user}"
assert config["User"] == "10766:10766", config["User"]
assert runtime["process"]["args"] == ["/usr/local/bin/index766", "run", "--config", "/etc/index766/config/index766.toml"], runtime["process"]["args"]
assert set(config["ExposedPorts"]) == {"8766/tcp", "5766/tcp"}, config["ExposedPorts"]
labels = config["Labels"]
assert labels["org.opencontainers.image.version"] == version, labels
assert labels["org.opencontainers.image.source"] and labels["org.opencontainers.image.licenses"] == "Apache-2.0", labels
PY
rootfs="$work/bundle/rootfs"
extra="$(cd "$rootfs" && find . -type f | grep -vE '^\./(usr/local/bin/index766|lib(64)?/.*\.so[.0-9]*|lib/x86_64-linux-gnu/.*|etc/ssl/certs/ca-certificates\.crt|usr/share/index766/(schemas|sql)/.*)$' || true)"
[[ -z "$extra" ]] || { echo "tests/image.sh: the image holds more than it should:"; echo "$extra"; exit 1; }

# The binary runs from the image's root filesystem alone, as the image's user.
chroot --userspec=10766:10766 "$rootfs" /usr/local/bin/index766 --version
"$HELM" template index766 helm/index766 -f helm/index766/ci/volume-values.yaml --show-only templates/configmap.yaml \
  | PYTHONPATH="$KUBERNETES_VALIDATE_PYTHONPATH" python3 -c 'import sys, yaml; print(yaml.safe_load(sys.stdin)["data"]["index766.toml"])' \
  >"$rootfs/chart.toml"
chroot --userspec=10766:10766 "$rootfs" /usr/local/bin/index766 check-config --config /chart.toml
echo "tests/image.sh: the image is built and checked"
