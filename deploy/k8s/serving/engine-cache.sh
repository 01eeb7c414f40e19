#!/bin/sh
# Init container of the serving pod (deploy/k8s/serving/deployment.yaml), in the dfserve-build image: makes sure the
# pinned model version has a TensorRT engine for THIS pod's GPU model and TensorRT release in the shared store, then
# copies that build into the pod's own repository (an emptyDir), which Triton serves read-only.
#
# Why here and not in a Job that scales the Deployment: the pod builds on the GPU it already holds (no second GPU,
# no deadlock), nothing patches replicas (a GitOps sync or a re-apply cannot scale serving to zero), and a plan runs
# only on the GPU model and TensorRT it was built with, so the cache is keyed by both.
#
# Store layout (one folder per model version, never rewritten):
#   $DFSERVE_STORE/<DFSERVE_MODEL_VERSION>/model.env          what the version is (model, revision, precision, args)
#   $DFSERVE_STORE/<DFSERVE_MODEL_VERSION>/<gpu>-trt<version>/ a finished `dfserve build` (build_report.json)
# A build goes to a private temporary folder and is renamed into place whole, so a pod never copies a half-written
# build; when two pods build the same key at once, the first rename wins and the other discards its copy.
# The version name is the pin: reusing it for another model is refused (model.env must match).
set -eu

store="${DFSERVE_STORE:-/store}"
out="${DFSERVE_SERVE_DIR:-/models}"
version="${DFSERVE_MODEL_VERSION:?DFSERVE_MODEL_VERSION names the model version to serve}"
precision="${DFSERVE_PRECISION:-fp16}"
build_timeout="${DFSERVE_BUILD_TIMEOUT_S:-3600}"

case "$version" in
  *[!A-Za-z0-9._-]* | "" | .*) echo "error: model version '$version' must be letters, digits, '.', '_' or '-'" >&2; exit 2 ;;
esac

gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1 | tr -cs 'A-Za-z0-9._-' '-' | sed 's/-*$//')"
trt="$(python3 -c 'import tensorrt; print(tensorrt.__version__)')"
[ -n "$gpu" ] || { echo "error: nvidia-smi named no GPU: this container needs the pod's GPU" >&2; exit 1; }

manifest="MODEL_ID=${DFSERVE_MODEL:-}
MODEL_REVISION=${DFSERVE_REVISION:-}
PRECISION=$precision
BUILD_ARGS=${DFSERVE_BUILD_ARGS:-}"
mkdir -p "$store/$version"
if [ ! -f "$store/$version/model.env" ]; then
  printf '%s\n' "$manifest" > "$store/$version/model.env.$$" && mv "$store/$version/model.env.$$" "$store/$version/model.env"
fi
if [ "$(cat "$store/$version/model.env")" != "$manifest" ]; then
  echo "error: model version $version in $store was built from another model; give this one a new version name:" >&2
  diff "$store/$version/model.env" - <<MANIFEST >&2 || true
$manifest
MANIFEST
  exit 1
fi

build="$store/$version/$gpu-trt$trt"
if [ -f "$build/build_report.json" ]; then
  echo "engine-cache: $build is built, reusing it"
else
  tmp="$store/.tmp/$version.$gpu-trt$trt.${HOSTNAME:-pod}.$$"
  rm -rf "$tmp"
  mkdir -p "$store/.tmp"
  echo "engine-cache: building $version for $gpu, TensorRT $trt (at most $build_timeout s)"
  # shellcheck disable=SC2086  # BUILD_ARGS is a list of flags
  timeout "$build_timeout" dfserve build ${DFSERVE_MODEL:+--model "$DFSERVE_MODEL"} \
    ${DFSERVE_REVISION:+--revision "$DFSERVE_REVISION"} --engine tensorrt --precision "$precision" \
    --out "$tmp" ${DFSERVE_BUILD_ARGS:-}
  if mv -T "$tmp" "$build" 2>/dev/null; then
    echo "engine-cache: published $build"
  else
    echo "engine-cache: another pod published $build first; using it"
    rm -rf "$tmp"
  fi
fi
[ -f "$build/build_report.json" ] || { echo "error: $build has no build_report.json" >&2; exit 1; }

find "$out" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
cp -R "$build/." "$out/"
echo "engine-cache: serving $version ($gpu, TensorRT $trt) from $out"
