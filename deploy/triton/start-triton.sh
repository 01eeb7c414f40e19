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

python3 -m dfserve.export.tensorrt check "$repository"

max_input=""
if tritonserver --help 2>&1 | grep -q -- "--http-max-input-size"; then
  max_input="--http-max-input-size=${DFSERVE_MAX_REQUEST_BYTES:-67108864}"
fi

# shellcheck disable=SC2086  # $max_input is one flag or nothing
exec tritonserver "$@" \
  "--http-restricted-api=${apis}:${header}=${key}" \
  "--grpc-restricted-protocol=${apis}:${header}=${key}" \
  $max_input
