# syntax=docker/dockerfile:1
# NVIDIA's Triton with what dfserve's Python-backend `preprocess` model imports (dfserve, Pillow, NumPy,
# pydantic). The release comes from .env (TRITON_RELEASE) through compose, so that it always equals the
# TensorRT container's that built the engine. Not built on the development machine (no Docker engine there).
ARG TRITON_RELEASE
FROM nvcr.io/nvidia/tritonserver:${TRITON_RELEASE}-py3

# The SDK-level install (no torch, no onnxruntime: the engine runs in Triton's own backends). numpy<2 matches
# the NumPy ABI of the Python backend stub of these releases.
COPY . /tmp/dfserve-src
RUN python3 -m pip install --no-cache-dir "/tmp/dfserve-src" "numpy<2" \
 && rm -rf /tmp/dfserve-src \
 && python3 -c "import dfserve.preprocessing, dfserve.engine.tensorrt, PIL; print('dfserve ready')"

COPY deploy/triton/start-triton.sh /opt/dfserve/start-triton.sh
ENTRYPOINT ["/opt/dfserve/start-triton.sh"]
CMD ["--model-repository=/models", "--model-control-mode=none"]
