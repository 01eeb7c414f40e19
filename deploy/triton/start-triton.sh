#!/bin/sh
# Entry point of the dfserve Triton image: NVIDIA's tritonserver run by dfserve's launcher (`dfserve serve`), so the
# container gets the safeguards of the embedded server. Arguments are tritonserver's own (compose and Kubernetes
# pass them); they reach the launcher after `--` (dfserve.triton.args.split_tritonserver_args reads them).
#
# 1. It serves only a finished build: it waits (DFSERVE_BUILD_WAIT_S, default 600 s) while the repository has no
#    build_report.json or still carries the build's in-progress marker, so neither an empty volume nor a stale
#    report of a build being rewritten is served; the build runs on its own (`docker compose run --rm build`).
# 2. A TensorRT plan in the repository is checked against this host's TensorRT and GPUs, so a plan from another GPU
#    or release stops the container with one readable line instead of a backend failure.
# 3. The launcher restricts the model-repository, shared-memory, logging and trace APIs behind DFSERVE_ADMIN_KEY
#    (header `dfserve-admin-key`; unset: a random key in a 0600 file, the APIs closed to everyone; weak keys are
#    refused) and erases the key from tritonserver's command line, so `ps` never shows it; system shared memory
#    stays off. It watches the Python-backend stubs and restarts the server when one dies (Triton 2.51 would keep
#    answering ready), and it cleans up processes and /dev/shm regions a killed run left.
# 4. Request bodies: the launcher passes --http-max-input-size where this tritonserver has it (not 2.51); the
#    bound on every path is the nginx proxy in front (compose service `proxy`, the Kubernetes sidecar).
# 5. NVIDIA's own entrypoint (/opt/nvidia/nvidia_entrypoint.sh: driver checks, banner) still runs first.
# 6. `preprocess` runs one instance per CPU this container may use (affinity mask and cgroup CPU quota, capped:
#    dfserve.triton.sizing), not the build host's core count the build wrote; DFSERVE_PREPROCESS_INSTANCES sets a
#    count instead. /dev/shm (compose shm_size, the Kubernetes emptyDir) is sized for the cap.
set -eu

repository=/models
previous=""
for arg in "$@"; do
  case "$arg" in
    --model-repository=*) repository="${arg#--model-repository=}" ;;
  esac
  if [ "$previous" = "--model-repository" ]; then repository="$arg"; fi
  previous="$arg"
done

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

python3 -m dfserve.engine.tensorrt check "$repository"

entry=""
if [ -x /opt/nvidia/nvidia_entrypoint.sh ]; then
  entry=/opt/nvidia/nvidia_entrypoint.sh
fi

# 0.0.0.0: the proxy reaches this container over the compose network (in a Kubernetes pod, over loopback).
# shellcheck disable=SC2086  # $entry is one word or nothing
exec $entry dfserve serve --host 0.0.0.0 --start-timeout 600 \
  --preprocess-instances "${DFSERVE_PREPROCESS_INSTANCES:-auto}" -- "$@"
