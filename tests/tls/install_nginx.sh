#!/bin/sh
# Installs Debian's nginx for the TLS tests (a real reverse proxy terminating HTTPS in front of tritonserver).
# Idempotent and quick when nginx is already there; needs root and apt (as in CI). Prints the binary's path.
set -eu
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends nginx-light >/dev/null 2>&1 || {
        apt-get update >/dev/null && apt-get install -y --no-install-recommends nginx-light >/dev/null
    }
fi
command -v nginx 2>/dev/null || echo /usr/sbin/nginx
