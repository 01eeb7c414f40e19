"""nginx in front of tritonserver: a bound on every request body, and a slow lane for the admin APIs.

Why a proxy at all. Triton 2.51 (nvidia-pytriton's binary and NVIDIA's 24.10 container) has no
``--http-max-input-size`` and its gRPC server takes messages of any size, so a 200 MB body is received, copied
into the Python backend's shared memory and only then refused by the preprocess model's per-file check; that
memory is not given back. nginx refuses a body over `ProxySettings.max_body_bytes` before Triton sees a byte of
it: over HTTP from the Content-Length alone (413 with a JSON ``{"error": ...}`` naming the limit, as Triton
words its own errors), over gRPC while the stream arrives (a trailers-only answer with ``grpc-status`` 8,
RESOURCE_EXHAUSTED, the code gRPC itself uses for a message over its size limit; the SDK maps both to the
non-retried `RequestTooLargeError`).

The restricted APIs (model repository, shared memory, logging, trace; the matching gRPC methods) stay behind
Triton's own key check (403 / its gRPC answer); the proxy only rate-limits them per client address
(``limit_req``), so that wrong keys cannot be tried fast: over the burst HTTP gets 429 and gRPC UNAVAILABLE
("slow down", retried with backoff by clients). Inference, health, metadata and statistics are not limited.

One renderer for every deployment path: `render_config` writes the whole ``nginx.conf`` from typed settings.
The embedded server (`dfserve serve --proxy`, `NginxProxy`) renders it with a private runtime folder; docker
compose and Kubernetes use the committed ``deploy/nginx/nginx.conf``, which a test proves equal to
`render_config(CONTAINER_SETTINGS)`; ``python -m dfserve.triton.proxy > deploy/nginx/nginx.conf`` rewrites it.

Only the standard library is imported here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dfserve.errors import NginxNotFoundError, ProxyError, ServerStartError
from dfserve.triton.hardening import DEFAULT_MAX_REQUEST_BYTES
from dfserve.triton.process import _die_with_parent
from dfserve.triton.state import write_state

NGINX_ENV = "DFSERVE_NGINX"
NGINX_INSTALL_HINT = (
    "install nginx (Debian/Ubuntu: `apt-get install nginx-light`; this repository's tests/tls/install_nginx.sh does "
    f"that) or point ${NGINX_ENV} at its binary"
)

ADMIN_HTTP_PATHS = r"^/v2/(repository|systemsharedmemory|cudasharedmemory|logging|trace)(/|$)"
"""Triton's restricted HTTP APIs (server-wide paths)."""
ADMIN_HTTP_MODEL_PATHS = r"^/v2/models/[^/]+(/versions/[^/]+)?/trace(/|$)"
"""Per-model trace settings, the one restricted API under /v2/models."""
ADMIN_GRPC_METHODS = (
    r"^/inference\.GRPCInferenceService/(Repository|SystemSharedMemory|CudaSharedMemory|LogSettings|TraceSetting)"
)
"""The gRPC methods of the same APIs: RepositoryIndex, RepositoryModelLoad/Unload, SystemSharedMemory*,
CudaSharedMemory*, LogSettings, TraceSetting."""

GRPC_RESOURCE_EXHAUSTED = 8
GRPC_UNAVAILABLE = 14


@dataclass(frozen=True)
class ProxySettings:
    """What the proxy listens on, where it forwards, and its limits. Addresses are ``host:port``
    (``[v6]:port`` for IPv6); an upstream host may be a name (``triton:8000`` in compose and Kubernetes)."""

    http_listen: str
    grpc_listen: str
    http_upstream: str
    grpc_upstream: str
    max_body_bytes: int
    metrics_listen: str | None = None
    """Also proxy Triton's /metrics (the embedded server keeps Triton itself on loopback); None: not proxied."""
    metrics_upstream: str | None = None
    admin_rate_per_s: int = 5
    """Restricted-API requests per second and client address, after `admin_burst` at once."""
    admin_burst: int = 10
    workers: str = "auto"
    runtime_dir: Path | None = None
    """pid file and request-body temp files (the embedded server's private folder); None: nginx's built-in paths,
    as in the official image."""
    user: str | None = None
    """Worker user and group when nginx starts as root (None: nginx's default)."""
    tls_cert: Path | None = None
    """PEM certificate (chain) and key: the HTTP and gRPC listeners then speak TLS only (https://, grpcs://)."""
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ProxyError(f"max_body_bytes must be positive, got {self.max_body_bytes}")
        if self.admin_rate_per_s < 1 or self.admin_burst < 0:
            raise ProxyError("admin_rate_per_s must be >= 1 and admin_burst >= 0")
        if (self.metrics_listen is None) != (self.metrics_upstream is None):
            raise ProxyError("metrics_listen and metrics_upstream go together")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ProxyError("a TLS certificate needs its key, and a key its certificate")


CONTAINER_SETTINGS = ProxySettings(
    http_listen="8080",
    grpc_listen="8081",
    http_upstream="triton:8000",
    grpc_upstream="triton:8001",
    max_body_bytes=DEFAULT_MAX_REQUEST_BYTES,
    workers="4",  # not `auto`: a GPU node's hundred cores would start a hundred workers in the sidecar
)
"""The settings of ``deploy/nginx/nginx.conf`` (compose service `proxy`, the Kubernetes sidecar): the proxy
listens on 8080 (HTTP) and 8081 (gRPC) and forwards to the `triton` host (the compose service; in the pod a host
alias for 127.0.0.1). The body limit is `dfserve.triton.hardening.DEFAULT_MAX_REQUEST_BYTES`, the bound for a
repository of unknown spec: the container serves whatever the build wrote."""


def render_config(settings: ProxySettings) -> str:
    """The complete nginx.conf for `settings` (nginx 1.22 or later)."""
    s = settings
    limit = s.max_body_bytes
    too_large = f"request body larger than {limit} bytes, the limit on one request to this server"
    slow_down = "too many admin API requests from this address; slow down"  # no "restricted": see map_error
    lines = [
        "# Generated by dfserve.triton.proxy.render_config: do not edit by hand",
        "# (python -m dfserve.triton.proxy > deploy/nginx/nginx.conf rewrites it; a test checks they agree).",
        f"worker_processes {s.workers};",
        "error_log stderr warn;",
    ]
    if s.user is not None:
        lines.append(f"user {s.user};")
    if s.runtime_dir is not None:
        lines.append(f"pid {s.runtime_dir / 'nginx.pid'};")
    lines += ["events {", "    worker_connections 1024;", "}", "http {"]
    ssl = " ssl" if s.tls_cert is not None else ""
    tls = [] if s.tls_cert is None else [f"    ssl_certificate {s.tls_cert};", f"    ssl_certificate_key {s.tls_key};"]
    http = [
        "access_log off;",
        "server_tokens off;",
        "default_type application/octet-stream;",
        f"client_max_body_size {limit};",
        "client_body_buffer_size 1m;  # an ordinary image stays in memory, never in a temp file",
    ]
    if s.runtime_dir is not None:
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            http.append(f"{kind}_temp_path {s.runtime_dir / kind};")
    http += [
        f"limit_req_zone $binary_remote_addr zone=dfserve_admin:1m rate={s.admin_rate_per_s}r/s;",
        "limit_req_status 429;",
        "limit_req_log_level warn;",
        f"upstream triton_http {{ server {s.http_upstream}; keepalive 32; }}",
        f"upstream triton_grpc {{ server {s.grpc_upstream}; keepalive 32; }}",
        "",
        "server {",
        f"    listen {s.http_listen}{ssl};",
        *tls,
        "    error_page 413 @too_large;",
        "    error_page 429 @slow_down;",
        "    location / {",
        "        proxy_pass http://triton_http;",
        *_http_proxy_lines(),
        "    }",
        f"    location ~ {ADMIN_HTTP_PATHS} {{",
        f"        limit_req zone=dfserve_admin burst={s.admin_burst} nodelay;",
        "        proxy_pass http://triton_http;",
        *_http_proxy_lines(),
        "    }",
        f"    location ~ {ADMIN_HTTP_MODEL_PATHS} {{",
        f"        limit_req zone=dfserve_admin burst={s.admin_burst} nodelay;",
        "        proxy_pass http://triton_http;",
        *_http_proxy_lines(),
        "    }",
        "    location @too_large {",
        "        default_type application/json;",
        f"        return 413 '{json.dumps({'error': too_large})}';",
        "    }",
        "    location @slow_down {",
        "        default_type application/json;",
        f"        return 429 '{json.dumps({'error': slow_down})}';",
        "    }",
        "}",
        "",
        "server {",
        f"    listen {s.grpc_listen}{ssl} http2;",
        *tls,
        "    keepalive_requests 100000;  # nginx would close a client's HTTP/2 connection after 1000 calls",
        "    grpc_read_timeout 300s;",
        "    grpc_send_timeout 300s;",
        "    error_page 413 = @grpc_too_large;",
        "    error_page 429 = @grpc_slow_down;",
        "    location / {",
        "        grpc_pass grpc://triton_grpc;",
        "    }",
        f"    location ~ {ADMIN_GRPC_METHODS} {{",
        f"        limit_req zone=dfserve_admin burst={s.admin_burst} nodelay;",
        "        grpc_pass grpc://triton_grpc;",
        "    }",
        *_grpc_error_location("grpc_too_large", GRPC_RESOURCE_EXHAUSTED, too_large),
        *_grpc_error_location("grpc_slow_down", GRPC_UNAVAILABLE, slow_down),
        "}",
    ]
    if s.metrics_listen is not None:
        http += [
            "",
            "server {",
            f"    listen {s.metrics_listen};",
            "    client_max_body_size 1k;",
            "    location = /metrics {",
            f"        proxy_pass http://{s.metrics_upstream};",
            "    }",
            "}",
        ]
    lines += [f"    {line}" if line else "" for line in http]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _http_proxy_lines() -> list[str]:
    return [
        "        proxy_http_version 1.1;",
        '        proxy_set_header Connection "";',
        "        proxy_read_timeout 300s;",
    ]


def _grpc_error_location(name: str, status: int, message: str) -> list[str]:
    """A trailers-only gRPC answer (HTTP 200 with grpc-status), which gRPC clients read as that status."""
    return [
        f"    location @{name} {{",
        "        default_type application/grpc;",
        f"        add_header grpc-status {status} always;",
        f'        add_header grpc-message "{message}" always;',
        "        return 204;",
        "    }",
    ]


def find_nginx(explicit: str | Path | None = None) -> Path:
    """`explicit`, else $DFSERVE_NGINX, else `nginx` on PATH, else /usr/sbin/nginx (Debian's place, off a normal
    user's PATH)."""
    for value in (explicit, os.environ.get(NGINX_ENV)):
        if value:
            path = Path(value).expanduser()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise NginxNotFoundError(f"nginx {path} is not an executable file; {NGINX_INSTALL_HINT}")
            return path
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found:
        return Path(found)
    raise NginxNotFoundError(f"--proxy needs nginx, which is not installed: {NGINX_INSTALL_HINT}")


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def _dial(address: str) -> tuple[str, int]:
    host, port = _split(address)
    return ("127.0.0.1" if host == "0.0.0.0" else "::1" if host == "::" else host), port


class NginxProxy:
    """One nginx process with `render_config(settings)`, supervised like tritonserver: it dies with the thread
    that started it (``PR_SET_PDEATHSIG``), runs in its own process group, and is recorded in `STATE_DIR` so
    that `dfserve.triton.state.clean_leftovers` kills it after a SIGKILLed launcher."""

    def __init__(self, settings: ProxySettings, *, nginx: str | Path | None = None) -> None:
        self._binary = find_nginx(nginx)
        self._runtime = Path(tempfile.mkdtemp(prefix="dfserve-nginx-"))
        user = None
        if os.geteuid() == 0:  # workers drop to an unprivileged user that must write the body temp files
            import grp
            import pwd

            nobody = pwd.getpwnam("nobody")
            user = f"nobody {grp.getgrgid(nobody.pw_gid).gr_name}"  # Debian's group is nogroup, not nobody
            self._runtime.chmod(0o711)
        self.settings = ProxySettings(**{**settings.__dict__, "runtime_dir": self._runtime, "user": user})
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self._runtime / kind).mkdir(mode=0o700)
            if user is not None:
                os.chown(self._runtime / kind, nobody.pw_uid, nobody.pw_gid)
        self.config_path = self._runtime / "nginx.conf"
        self._log_path = self._runtime / "nginx.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._state_path: Path | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def log_text(self) -> str:
        return self._log_path.read_text(errors="replace") if self._log_path.is_file() else ""

    def start(self, timeout: float = 30.0) -> NginxProxy:
        self.config_path.write_text(render_config(self.settings))
        check = subprocess.run(
            [str(self._binary), "-t", "-q", "-p", str(self._runtime), "-c", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check.returncode != 0:
            raise ProxyError(f"nginx refused the generated configuration {self.config_path}: {check.stderr.strip()}")
        with open(self._log_path, "wb") as log:
            self._process = subprocess.Popen(
                [str(self._binary), "-p", str(self._runtime), "-c", str(self.config_path), "-g", "daemon off;"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                start_new_session=True,
            )
        self._state_path = write_state(f"nginx-{self._process.pid}", [self._process.pid], [])
        listens = [self.settings.http_listen, self.settings.grpc_listen]
        if self.settings.metrics_listen is not None:
            listens.append(self.settings.metrics_listen)
        deadline = time.monotonic() + timeout
        for address in listens:
            while True:
                if self._process.poll() is not None:
                    said = self.log_text().strip()
                    self.stop()
                    raise ServerStartError(f"nginx exited while starting: {said or '(no log)'}")
                try:
                    with socket.create_connection(_dial(address), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise ServerStartError(f"nginx did not listen on {address} within {timeout:.0f}s") from None
                    time.sleep(0.05)
        return self

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGQUIT (nginx's graceful stop: finishes requests in flight), SIGKILL to the group after `timeout`;
        removes the runtime folder. Idempotent."""
        proc, code = self._process, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGQUIT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
            code = proc.returncode
        if self._state_path is not None:
            self._state_path.unlink(missing_ok=True)
            self._state_path = None
        if self._runtime.is_dir():
            shutil.rmtree(self._runtime, ignore_errors=True)
        return code

    def __enter__(self) -> NginxProxy:
        if self._process is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Print the container configuration (``deploy/nginx/nginx.conf``)."""
    sys.stdout.write(render_config(CONTAINER_SETTINGS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
