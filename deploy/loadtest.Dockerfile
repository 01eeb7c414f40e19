# syntax=docker/dockerfile:1
# Locust with dfserve's locustfile at /app/loadtest/locustfile.py (master and workers of the `loadtest` profile).
ARG PYTHON_VERSION
FROM python:${PYTHON_VERSION}-slim

WORKDIR /app
COPY . /app
RUN python3 -m pip install --no-cache-dir "/app[loadtest]"
EXPOSE 8089 5557
CMD ["locust", "-f", "/app/loadtest/locustfile.py", "--help"]
