# syntax=docker/dockerfile:1
# The bench client: NVIDIA's Triton SDK image of the release in .env (perf_analyzer of the same Triton release as
# the server) plus dfserve's base install, which writes perf_analyzer's input data (real JPEGs for `detector`,
# their preprocessed pixels for `vit`) and reads its output (`python -m dfserve.bench.perf_analyzer`).
# Not built on the development machine (no Docker engine there).
ARG TRITON_RELEASE
FROM nvcr.io/nvidia/tritonserver:${TRITON_RELEASE}-py3-sdk

COPY . /tmp/dfserve-src
RUN python3 -m pip install --no-cache-dir "/tmp/dfserve-src" \
 && rm -rf /tmp/dfserve-src \
 && command -v perf_analyzer \
 && python3 -c "import dfserve.bench.perf_analyzer; print('dfserve bench ready')"

ENTRYPOINT ["python3", "-m", "dfserve.bench.perf_analyzer"]
