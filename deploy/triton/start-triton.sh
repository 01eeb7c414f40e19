#!/bin/sh
# Entry point of the dfserve Triton image: starts NVIDIA's tritonserver with the safeguards `dfserve serve`
# gives the embedded one. Arguments are tritonserver's own (compose and Kubernetes pass them).
#
# 1. A TensorRT plan in the repository is checked against this host's TensorRT and GPUs first, so a plan from
#    another GPU or release stops the container with one readable line instead of a backend failure.
# 2. The model-repository, shared-memory, logging and trace APIs are restricted behind a key, sent as the
#    header `dfserve-admin-key` (gRPC metadata `triton-grpc-protocol-dfserve-admin-key`). Without
#    DFSERVE_ADMIN_KEY a random key is used: the APIs are then closed to everyone.
# 3. Request bodies are bounded where this tritonserver supports --http-max-input-size.
# 4. It serves only a finished build: it waits (DFSERVE_BUILD_WAIT_S, default 600 s) while the repository has no
#    build_report.json or still carries the build's in-progress marker, so neither an empty volume nor a stale
#    report of a build being rewritten is served; the build runs on its own (`docker compose run --rm build`).
# 5. NVIDIA's own entrypoint (/opt/nvidia/nvidia_entrypoint.sh: driver checks, banner) still runs first.
set -eu

repository=/models
for arg in "$@"; do
  case "$arg" in
    --model-repository=*) repository="${arg#--model-repository=}" ;;
  esac
done

header="dfserve-admin-key"
apis="${DFSERVE_RESTRICTED_APIS:-model-repository,shared-memory,logging,trace}"
key="${DFSERVE_ADMIN_KEY:-}"
if [ -z "$key" ]; then
  key="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  echo "start-triton: DFSERVE_ADMIN_KEY is not set: restricted APIs ($apis) use a random key" >&2
fi

waited=0
limit="${DFSERVE_BUILD_WAIT_S:-600}"
while [ ! -f "$repository/build_report.json" ] || [ -e "$repository/.dfserve-build-in-progress" ]; do
  if [ "$waited" -ge "$limit" ]; then
    echo "error: $repository holds no finished dfserve build after ${limit} s (no build_report.json, or a build is" \
      "still writing it): run \`docker compose run --rm build\` first" >&2
    exit 1
  fi
  if [ $((waited % 30)) -eq 0 ]; then
    echo "start-triton: waiting for a finished build in $repository (${waited} s)" >&2
  fi
  sleep 1
  waited=$((waited + 1))
done

python3 -m dfserve.export.tensorrt check "$repository"

max_input=""
if tritonserver --help 2>&1 | grep -q -- "--http-max-input-size"; then
  max_input="--http-max-input-size=${DFSERVE_MAX_REQUEST_BYTES:-67108864}"
fi

entry=""
if [ -x /opt/nvidia/nvidia_entrypoint.sh ]; then
  entry=/opt/nvidia/nvidia_entrypoint.sh
fi

# shellcheck disable=SC2086  # $entry and $max_input are one word or nothing
exec $entry tritonserver "$@" \
  "--http-restricted-api=${apis}:${header}=${key}" \
  "--grpc-restricted-protocol=${apis}:${header}=${key}" \
  $max_input
