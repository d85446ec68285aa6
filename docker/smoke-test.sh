#!/usr/bin/env bash
# Container smoke test: build the CPU image with podman, run it the way Kubernetes does (non-root,
# read-only root filesystem, no capabilities, no privilege escalation), wait for /ready, check
# POST /embed and /metrics, send SIGTERM and expect a clean exit (status 0) within the drain time.
#
# No image registry is needed. The base image is a Debian rootfs made by debootstrap from the
# mirror apt already uses (imported once, then reused), and the Python wheels are downloaded on
# the host and handed to the build as the `wheelhouse` build context, so pip inside the build runs
# offline and needs no certificates. Needs root, podman, runc and debootstrap (Debian packages).
#
# Exit status: 0 passed, 1 failed, 77 a prerequisite is missing (the test is skipped).
#
# Environment, all optional:
#   SMOKE_BUNDLE         bundle folder mounted over /models/gensen-base at run time; it is also
#                        baked in when the repository has no models/gensen-base yet
#   SMOKE_IMAGE          tag of the built image            (default localhost/gensen:smoke-cpu)
#   SMOKE_BASE_IMAGE     base image, made by debootstrap when absent
#                                                          (default localhost/gensen-smoke-base:SUITE)
#   DEBIAN_SUITE         Debian release of that base        (default bookworm)
#   DEBIAN_MIRROR        mirror for debootstrap     (default: apt's Debian source, else deb.debian.org)
#   PYTHON               Python with pip, to download wheels (default python3)
#   SMOKE_READY_TIMEOUT  seconds to wait for /ready          (default 180)
#   SMOKE_STOP_TIMEOUT   seconds to wait for exit after SIGTERM (default 60)
#   SMOKE_KEEP=1         keep the container and work folder after a failure
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE="${DEBIAN_SUITE:-bookworm}"
IMAGE="${SMOKE_IMAGE:-localhost/gensen:smoke-cpu}"
BASE_IMAGE="${SMOKE_BASE_IMAGE:-localhost/gensen-smoke-base:${SUITE}}"
PYTHON="${PYTHON:-python3}"
READY_TIMEOUT="${SMOKE_READY_TIMEOUT:-180}"
STOP_TIMEOUT="${SMOKE_STOP_TIMEOUT:-60}"
NAME="gensen-smoke-$$"

log() { printf 'smoke: %s\n' "$*" >&2; }
skip() { log "SKIP: $*"; exit 77; }
fail() { log "FAIL: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---- prerequisites ---------------------------------------------------------------------------
[[ "$(id -u)" == 0 ]] || skip "needs root (debootstrap and rootful podman)"
for tool in podman runc; do
    command -v "$tool" >/dev/null || skip "$tool not installed (apt-get install podman runc)"
done
"$PYTHON" -m pip --version >/dev/null 2>&1 || skip "$PYTHON has no pip (set PYTHON)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gensen-smoke.XXXXXX")"
chmod 755 "$WORK"
cleanup() {
    local rc=$?
    if [[ $rc -ne 0 && "${SMOKE_KEEP:-0}" == 1 ]]; then
        log "kept container $NAME and $WORK"
        return
    fi
    if podman container exists "$NAME" 2>/dev/null; then
        if [[ $rc -ne 0 ]]; then
            log "container logs:"
            podman logs "$NAME" 2>&1 | tail -n 60 >&2 || true
        fi
        podman rm -f "$NAME" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# podman here: runc as the runtime and lowered default ulimits (podman's built-in defaults, and
# even this shell's own process limit, can exceed what an unprivileged sandbox lets runc set).
# A private containers.conf, so nothing on the machine is changed.
clip() { # VALUE CAP -> the smaller, "unlimited" counting as infinite
    if [[ "$1" == unlimited || "$1" -gt "$2" ]]; then echo "$2"; else echo "$1"; fi
}
nofile="$(clip "$(ulimit -Sn)" 65536)"
nproc="$(clip "$(ulimit -Su)" 4096)"
ulimits="\"nofile=${nofile}:${nofile}\", \"nproc=${nproc}:${nproc}\""
cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = [${ulimits}]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF="$WORK/containers.conf"
podman info >/dev/null 2>&1 || skip "podman cannot run here: $(podman info 2>&1 | tail -n 1)"

T_ALL="$(now)"

# ---- base image: Debian with Python, from debootstrap ----------------------------------------
debian_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
        echo "$DEBIAN_MIRROR"
        return
    fi
    local uri
    uri="$({
        grep -hE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | awk '{ for (i = 2; i <= NF; i++) print $i }'
        grep -hE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
            2>/dev/null | awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }'
    } | grep -E '/debian/?$' | head -n 1 || true)"
    echo "${uri:-http://deb.debian.org/debian}"
}

T="$(now)"
if podman image exists "$BASE_IMAGE"; then
    log "base image $BASE_IMAGE already present"
else
    command -v debootstrap >/dev/null || skip "debootstrap not installed (apt-get install debootstrap)"
    mirror="$(debian_mirror)"
    log "debootstrap $SUITE from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv \
        "$SUITE" "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 30 "$WORK/debootstrap.log" >&2; fail "debootstrap failed"; }
    rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
    tar -C "$WORK/rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$WORK/rootfs"
fi
log "base image: $(since "$T") s"

# ---- wheelhouse for the base's Python and C library ------------------------------------------
T="$(now)"
read -r py_version glibc arch < <(podman run --rm --network none "$BASE_IMAGE" python3 -c \
    "import os, platform, sys; print('%d.%d' % sys.version_info[:2], \
os.confstr('CS_GNU_LIBC_VERSION').split()[1], platform.machine())") \
    && [[ -n "${arch:-}" ]] || fail "cannot run python3 in $BASE_IMAGE"
platforms=(--platform "manylinux2014_${arch}")
for ((minor = 17; minor <= ${glibc#2.}; minor++)); do
    platforms+=(--platform "manylinux_2_${minor}_${arch}")
done
# the CPU image's requirements: the CPU-only onnxruntime in place of onnxruntime-gpu (Dockerfile)
sed "s/^onnxruntime-gpu==/onnxruntime==/" "$ROOT/requirements.txt" > "$WORK/requirements-cpu.txt"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --python-version "$py_version" --implementation cp "${platforms[@]}" \
    -r "$WORK/requirements-cpu.txt" -d "$WORK/wheelhouse" \
    || fail "could not download the wheels of requirements.txt"
log "wheelhouse (Python $py_version, glibc $glibc, $arch): $(since "$T") s"

# ---- build context: the repository, or a copy with SMOKE_BUNDLE as the default bundle --------
BUNDLE_DIR="$ROOT/models/gensen-base"
CONTEXT="$ROOT"
if [[ -n "${SMOKE_BUNDLE:-}" ]]; then
    [[ -f "$SMOKE_BUNDLE/model.json" ]] || fail "SMOKE_BUNDLE=$SMOKE_BUNDLE has no model.json"
    # Copied so that the container's non-root user can read it whatever the source's modes.
    cp -r "$SMOKE_BUNDLE" "$WORK/bundle"
    chmod -R a+rX "$WORK/bundle"
    BUNDLE_DIR="$WORK/bundle"
fi
if [[ ! -f "$ROOT/models/gensen-base/model.json" ]]; then
    [[ -n "${SMOKE_BUNDLE:-}" ]] || skip "no models/gensen-base in the repository; set SMOKE_BUNDLE"
    log "no models/gensen-base yet: building from a copy of the context with SMOKE_BUNDLE in it"
    CONTEXT="$WORK/context"
    mkdir -p "$CONTEXT/models"
    cp "$ROOT/Dockerfile" "$ROOT/.dockerignore" "$ROOT/requirements.txt" "$CONTEXT/"
    cp -r "$ROOT/service" "$CONTEXT/service"
    cp -r "$BUNDLE_DIR" "$CONTEXT/models/gensen-base"
fi

# ---- build -----------------------------------------------------------------------------------
T="$(now)"
previous="$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
podman build --format docker --network host --layers \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg PIP_NO_INDEX=1 \
    --build-context wheelhouse="$WORK/wheelhouse" \
    -t "$IMAGE" -f "$CONTEXT/Dockerfile" "$CONTEXT" >"$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log" >&2; fail "image build failed"; }
# The image this tag named before is garbage now: remove it so that runs do not pile up images.
current="$(podman image inspect --format '{{.Id}}' "$IMAGE")"
if [[ -n "$previous" && "$previous" != "$current" ]]; then
    podman rmi "$previous" >/dev/null 2>&1 || true
fi
log "build $IMAGE: $(since "$T") s ($(podman image inspect --format '{{.Size}}' "$IMAGE" \
    | awk '{ printf "%.0f MB", $1 / 1e6 }'))"

# The image takes the flags of `python -m service` after its name.
podman run --rm --network none "$IMAGE" --help 2>/dev/null | grep -q -- '--bundle' \
    || fail "\`$IMAGE --help\` does not list the flags of python -m service"

# ---- run as Kubernetes would -----------------------------------------------------------------
PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
run_args=(--detach --name "$NAME" --network host
    --read-only --tmpfs /tmp:rw,size=64m,mode=1777
    --cap-drop ALL --security-opt no-new-privileges
    -e GENSEN_PORT="$PORT" -e GENSEN_PROVIDER=cpu)
if [[ -n "${SMOKE_BUNDLE:-}" ]]; then
    # The documented way to serve another bundle: a volume over the baked-in one.
    run_args+=(--volume "$BUNDLE_DIR:/models/gensen-base:ro")
fi
T="$(now)"
# (stderr kept aside: without systemd, podman logs errors about health-check timers it cannot
# install; `podman healthcheck run` below still runs the image's HEALTHCHECK.)
podman run "${run_args[@]}" "$IMAGE" >/dev/null 2>"$WORK/run.err" \
    || { cat "$WORK/run.err" >&2; fail "podman run failed"; }
URL="http://127.0.0.1:$PORT"

http() { # METHOD PATH [JSON BODY] -> prints "STATUS BODY"
    "$PYTHON" - "$1" "$URL$2" "${3:-}" <<'EOF'
import sys, urllib.error, urllib.request
method, url, body = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request(url, method=method, data=body.encode() or None,
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except OSError as e:
    print(0, e)
EOF
}

deadline=$((SECONDS + READY_TIMEOUT))
until [[ "$(http GET /ready | cut -d' ' -f1)" == 200 ]]; do
    [[ "$(podman inspect --format '{{.State.Running}}' "$NAME")" == true ]] \
        || fail "container exited before it was ready"
    ((SECONDS < deadline)) || fail "not ready after ${READY_TIMEOUT} s"
    sleep 0.5
done
log "ready: $(since "$T") s after start"

uid="$(podman exec "$NAME" id -u)"
[[ "$uid" != 0 ]] || fail "the service runs as root"
podman healthcheck run "$NAME" >/dev/null || fail "the image's HEALTHCHECK failed"

dim="$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["dim"])' \
    "$BUNDLE_DIR/model.json")"
reply="$(http POST /embed '{"inputs": "a man is playing a guitar ."}')"
"$PYTHON" - "$dim" "$reply" <<'EOF' || fail "POST /embed: $reply"
import json, math, sys
dim, (status, body) = int(sys.argv[1]), sys.argv[2].split(" ", 1)
assert status == "200", status
vectors = json.loads(body)
assert len(vectors) == 1 and len(vectors[0]) == dim, (len(vectors), len(vectors[0]), dim)
assert all(isinstance(x, float) and math.isfinite(x) for x in vectors[0])
assert abs(math.sqrt(sum(x * x for x in vectors[0])) - 1) < 1e-3, "not normalised"
EOF
log "POST /embed: one vector of $dim floats (uid $uid)"
metrics="$(http GET /metrics)"
grep -q '^gensen_requests_total' <<<"$metrics" || fail "/metrics has no gensen_requests_total"

# ---- SIGTERM: drain and exit 0 ---------------------------------------------------------------
T="$(now)"
podman kill --signal TERM "$NAME" >/dev/null
status="$(timeout "$STOP_TIMEOUT" podman wait "$NAME")" \
    || fail "still running ${STOP_TIMEOUT} s after SIGTERM"
[[ "$status" == 0 ]] || fail "exit status $status after SIGTERM"
log "SIGTERM: exited 0 after $(since "$T") s"
log "PASS in $(since "$T_ALL") s"
