# syntax=docker/dockerfile:1
# `dfserve build --engine tensorrt` inside NVIDIA's TensorRT container of the release in .env: its TensorRT
# is the one the Triton container of the same release loads, so the engine it writes is servable there.
# Not built on the development machine (no Docker engine there).
ARG TRITON_RELEASE
FROM nvcr.io/nvidia/tensorrt:${TRITON_RELEASE}-py3

# The container's own TensorRT Python bindings (older releases ship them as a setup script).
RUN python3 -c "import tensorrt" 2>/dev/null || /opt/tensorrt/python/python_setup.sh; \
    python3 -c "import tensorrt; print('TensorRT', tensorrt.__version__)"

# The CPU build of torch: the export runs on the CPU; only TensorRT needs the GPU.
RUN python3 -m pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch

# dfserve[build,gpu], with the `tensorrt` requirement pinned to the container's own version so that pip never
# swaps in another TensorRT from PyPI (which would break the match with Triton).
COPY . /tmp/dfserve-src
RUN echo "tensorrt==$(python3 -c 'import tensorrt; print(tensorrt.__version__)')" > /tmp/constraints.txt \
 && python3 -m pip install --no-cache-dir -c /tmp/constraints.txt "/tmp/dfserve-src[build,gpu]" "cuda-python>=12,<13" \
 && rm -rf /tmp/dfserve-src \
 && python3 -c "import dfserve.build.tensorrt as t; print('dfserve build ready, TensorRT', t.installed_tensorrt_version())"

WORKDIR /work
CMD ["dfserve", "build", "--help"]
