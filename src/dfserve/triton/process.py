"""Starting and supervising a real ``tritonserver`` process.

Two kinds of Triton installation are supported:

- the binary that ``nvidia-pytriton`` bundles (``pip install dfserve[server]``). It ships the Python backend
  without its stub: the stub is built per Python version and must be the one for the interpreter that runs
  the models, so a private workspace is prepared per server (the backend files linked, the matching stub
  copied next to them) and passed as ``--backend-directory``. Its shared libraries live outside the binary's
  folder, so ``LD_LIBRARY_PATH`` is set; the running interpreter's ``LIBDIR`` goes first because the stub
  must load *this* interpreter's libpython, not whichever one the system linker finds first.
- an installed Triton (NVIDIA's containers: ``/opt/tritonserver/bin/tritonserver``), used as it is.

The Python backend stub does not hand ``PYTHONPATH`` to model code, so the launcher exports the running
interpreter's import path as ``DFSERVE_PYTHONPATH``; dfserve's generated ``model.py`` files put it on
``sys.path`` before importing anything.

Safe defaults: HTTP, gRPC and metrics bind to 127.0.0.1; the model repository is loaded once
(``--model-control-mode=none``); APIs that change what the server does or read its memory (model
repository, shared memory, logging, trace) need a key header, generated per run unless given. The server
dies with its parent (``PR_SET_PDEATHSIG``), so a killed launcher leaves no orphan.

The admin key and the command line. Triton 2.51 takes the restricted-API key only as an option value
(``--http-restricted-api=<apis>:<header>=<key>``); it has no option file and no environment variable for it.
Every local user can read a process's arguments (``/proc/PID/cmdline``, ``ps -eo args``), so the launcher
keeps Triton's own check (it answers 403 / PERMISSION_DENIED, which clients do not retry) but erases the key
from the child's argument area once Triton has parsed its options: it writes over the key's bytes through
``/proc/PID/mem`` (allowed to the parent of a same-user child under the default Yama ptrace scope), which is
the very memory the kernel shows as ``cmdline``. Triton copies option values into its own strings while
parsing, before it starts any thread, so the launcher waits for the second thread (or the first log line)
before erasing; `start` verifies the key is gone and refuses to go on if it is not. What stays is a window
of a few milliseconds between ``exec`` and the erase; the alternatives were worse (a wrapper binary or
LD_PRELOAD shim to build here, or dropping Triton's check for a proxy that every deployment would need).
The key itself comes from the environment or a 0600 file, never from the launcher's own command line, and is
never printed (see `dfserve.triton.cli`); weak keys are refused (`check_admin_key`). A wrong or missing key
gets 403 over HTTP; over gRPC Triton 2.51 hard-codes UNAVAILABLE with "This protocol is restricted" (its
``CommonCallData::Execute``), which no option changes, so dfserve's SDK maps that answer to a final
``AccessDeniedError`` (tested in tests/triton/test_server.py) and generic clients must be told in the docs.

Supervision (restarts after a crash or a dead stub, the restart budget) is `dfserve.triton.supervisor`'s; the state
file that lets the next launcher clean up after a SIGKILLed one is `dfserve.triton.state`'s; the HTTP front that
refuses what would crash Triton is `dfserve.triton.guard`'s; the CLI part lives in ``dfserve.triton.cli``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import types
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from dfserve.errors import IncompatibleSpecError, ServerError, ServerStartError
from dfserve.repository.staging import build_holder
from dfserve.spec.model import ModelSpec
from dfserve.spec.names import (
    ADMIN_KEY_ENV,
    ADMIN_KEY_HEADER,
    BUILD_MARKER_FILENAME,
    CONFIG_FILENAME,
    PYTHONPATH_ENV,
    SPEC_FILENAME,
)
from dfserve.triton.distribution import (
    TritonDistribution,
    check_backends,
    check_port_free,
    find_tritonserver,
    free_port,
    interpreter_pythonpath,
)
from dfserve.triton.hardening import (
    DEFAULT_MAX_REQUEST_BYTES,
    RESTRICTED_APIS,
    SHM_OFF_HEADER,
    _parent,
    check_admin_key,
    hide_key,
)
from dfserve.triton.logs import _tail, exit_headline, explain_log
from dfserve.triton.state import _alive, remove_region, stub_shm_regions, write_state

LOG = logging.getLogger(__name__)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Ask Linux to send SIGTERM to tritonserver when the launching thread dies (even by SIGKILL), so no
    server outlives `dfserve serve`. SIGTERM (not SIGKILL) lets Triton stop its Python-backend stubs.

    Also sets the umask to 077, so that files the server creates are private; the stubs' /dev/shm regions
    ignore it (see `TritonServer.protect_regions`)."""
    os.umask(0o077)
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class TritonServer:
    """One tritonserver process serving a model repository.

    Port 0 picks a free port at `start`. ``host`` is the bind address of HTTP, gRPC and metrics; the
    ``*_url`` properties give what a client on this host dials ("127.0.0.1:PORT" when bound to 0.0.0.0).

    `max_request_bytes` is passed as ``--http-max-input-size`` when the binary knows that option (Triton
    2.55 and later). The bundled 2.51 does not: it receives a body of any size and copies it into the backend
    before the preprocess model's per-file check; there the bound is the nginx proxy in front
    (`dfserve.triton.proxy`, ``dfserve serve --proxy``, compose's `proxy`, the Kubernetes sidecar).

    System shared memory (the caller names a /dev/shm region and the server maps, reads and writes it) is off
    unless `allow_shared_memory`: with it, whoever holds the key can make the server read or overwrite any
    region the server's user can open, including other programs' 0600 regions when it runs as root.

    Because the child dies with the *thread* that started it (``PR_SET_PDEATHSIG``), call `start` from a
    thread that outlives the server (normally the main thread).
    """

    def __init__(
        self,
        repository: str | Path,
        *,
        host: str = "127.0.0.1",
        http_host: str | None = None,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        tritonserver: str | Path | None = None,
        restricted_api_key: str | None = None,
        allow_shared_memory: bool = False,
        max_request_bytes: int | None = DEFAULT_MAX_REQUEST_BYTES,
        log_verbose: int = 0,
        exit_timeout_s: int = 5,
        extra_args: Sequence[str] = (),
    ) -> None:
        for name, port in (("http_port", http_port), ("grpc_port", grpc_port), ("metrics_port", metrics_port)):
            if not 0 <= port <= 65535:
                raise ServerError(f"{name} must be 0 (pick a free port) or 1..65535, got {port}")
        if max_request_bytes is not None and max_request_bytes < 1:
            raise ServerError(f"max_request_bytes must be positive, got {max_request_bytes}")
        if restricted_api_key is not None:
            check_admin_key(restricted_api_key)
        self._repository = Path(repository).expanduser().resolve()
        self.host = host
        self.http_host = host if http_host is None else http_host
        self._ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self._tritonserver = tritonserver
        self.restricted_api_key = restricted_api_key or secrets.token_urlsafe(24)
        self.key_generated = restricted_api_key is None
        self.allow_shared_memory = allow_shared_memory
        self._shm_off_key = secrets.token_urlsafe(24)
        self.max_request_bytes = max_request_bytes
        self.log_verbose = log_verbose
        self.exit_timeout_s = exit_timeout_s
        self.extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        self._workspace: Path | None = None
        self._log_path: Path | None = None
        self._final_log: str | None = None
        self.command: list[str] = []
        self._stubs: set[int] = set()
        self._regions: set[str] = set()
        self._state_path: Path | None = None

    # ----------------------------------------------------------------- addresses
    @property
    def repository(self) -> Path:
        return self._repository

    def _host(self, kind: str) -> str:
        """The bind address of endpoint `kind`: `http_host` for HTTP (a private one behind dfserve's HTTP front,
        `dfserve.triton.guard`), `host` for the others."""
        return self.http_host if kind == "http" else self.host

    def _url(self, kind: str) -> str:
        port = self._ports[kind]
        if port == 0:
            raise ServerError(f"the {kind} port is picked at start(); start the server first")
        host = self._host(kind)
        return f"{'127.0.0.1' if host in ('', '0.0.0.0') else ('[::1]' if host == '::' else host)}:{port}"

    def bind_address(self, kind: str) -> str:
        """Where the `kind` endpoint listens (host:port as bound, e.g. 0.0.0.0:8000), unlike the ``*_url``
        properties, which give what a client on this host dials."""
        host = self._host(kind) or "0.0.0.0"
        return f"[{host}]:{self._ports[kind]}" if ":" in host else f"{host}:{self._ports[kind]}"

    @property
    def is_loopback_only(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")

    @property
    def http_url(self) -> str:
        """The HTTP endpoint as host:port, the form tritonclient.http expects."""
        return self._url("http")

    @property
    def grpc_url(self) -> str:
        return self._url("grpc")

    @property
    def metrics_url(self) -> str:
        """The Prometheus endpoint as host:port (path /metrics)."""
        return self._url("metrics")

    @property
    def http_port(self) -> int:
        return self._ports["http"]

    @property
    def grpc_port(self) -> int:
        return self._ports["grpc"]

    @property
    def metrics_port(self) -> int:
        return self._ports["metrics"]

    @property
    def admin_headers(self) -> dict[str, str]:
        """HTTP headers that unlock the restricted APIs (model repository, shared memory, ...)."""
        return {ADMIN_KEY_HEADER: self.restricted_api_key}

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        """The server's combined stdout/stderr while it runs; removed with the workspace at `stop`."""
        return self._log_path

    def log_text(self) -> str:
        """Everything the server has logged so far (kept in memory after `stop`)."""
        if self._log_path is not None and self._log_path.is_file():
            return self._log_path.read_text(errors="replace")
        return self._final_log or ""

    # ----------------------------------------------------------------- life cycle
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 180.0) -> TritonServer:
        """Launch tritonserver and return once ``/v2/health/ready`` answers 200 (all models loaded).

        Raises ServerStartError with the server's own reason when it exits or is not ready by `timeout`.
        """
        if self._process is not None:
            raise ServerError(
                f"this TritonServer was already started (pid {self._process.pid}); create a new one to relaunch"
            )
        self._check_repository()
        dist = TritonDistribution.from_binary(find_tritonserver(self._tritonserver))
        check_backends(self._repository, dist)
        for kind, port in self._ports.items():
            if port == 0:
                self._ports[kind] = free_port(self._host(kind))
            else:
                check_port_free(self._host(kind), port, kind)
        self._workspace = Path(tempfile.mkdtemp(prefix="dfserve-triton-"))
        self._log_path = self._workspace / "tritonserver.log"
        backends = self._prepare_backends(dist)
        self.command = self._command(dist, backends)
        env = self._environment(dist)
        LOG.info("starting %s", " ".join(self.command).replace(self.restricted_api_key, "***"))
        log_file = self._log_path.open("wb")
        try:
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._workspace,
                start_new_session=True,  # a terminal's Ctrl-C reaches the launcher, which stops the server in order
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            log_file.close()
            self._cleanup()
            raise ServerStartError(f"cannot run {dist.binary}: {exc}") from exc
        finally:
            log_file.close()  # the child holds its own descriptor
        try:
            hide_key(self._process, dist.binary, (self.restricted_api_key, self._shm_off_key), self._log_path)
            self._wait_ready(timeout)
            self._record_stubs()
        except BaseException:
            self.stop()
            raise
        LOG.info("tritonserver ready (pid %s): http %s, grpc %s", self.pid, self.http_url, self.grpc_url)
        return self

    def stubs(self) -> set[int]:
        """The backend stub processes recorded when the server became ready."""
        return set(self._stubs)

    def _record_stubs(self) -> None:
        assert self._process is not None
        pid = self._process.pid
        self._stubs = {
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _parent(int(p.name)) == pid and _alive(int(p.name))
        }
        self._regions |= stub_shm_regions(pid)
        self.protect_regions()
        self._state_path = write_state(str(pid), [pid, *self._stubs], self._regions)

    def protect_regions(self) -> None:
        """Make the stubs' /dev/shm regions 0600. The Python backend creates them through Boost.Interprocess,
        which sets 0644 explicitly (the umask does not apply), so request payloads and results would be
        readable by every local user; the owner (the server and its stubs) keeps full access."""
        for name in self._regions:
            with contextlib.suppress(OSError):
                os.chmod(f"/dev/shm/{name}", 0o600)

    def dead_stubs(self) -> list[int]:
        """Recorded stubs that have died (gone, or a zombie tritonserver never reaps)."""
        return sorted(pid for pid in self._stubs if not _alive(pid) or _parent(pid) != self.pid)

    def restart(self, timeout: float = 180.0) -> TritonServer:
        """Stop the whole server (stubs included) and start it again on the same ports with the same key."""
        self.stop(timeout=5.0)
        self._process = None
        self._stubs = set()
        return self.start(timeout)

    def _check_repository(self) -> None:
        repo = self._repository
        if not repo.exists():
            raise ServerStartError(f"model repository {repo} does not exist")
        if not repo.is_dir():
            raise ServerStartError(f"model repository {repo} is not a directory")
        if not any(p.is_dir() and (p / CONFIG_FILENAME).is_file() for p in repo.iterdir()):
            raise ServerStartError(f"model repository {repo} holds no model (no <model>/config.pbtxt inside)")
        holder = build_holder(repo)
        if holder is not None:
            raise ServerStartError(
                f"model repository {repo} is being written by a dfserve build (pid {holder}); wait for it to finish"
            )
        if (repo / BUILD_MARKER_FILENAME).exists():  # builds are staged: what the dead one left is not served
            LOG.warning(
                "a dfserve build into %s died (its %s is left); serving what is there", repo, BUILD_MARKER_FILENAME
            )
        if (repo / SPEC_FILENAME).is_file():
            try:
                ModelSpec.load(repo).require_same_dfserve(f"model repository {repo}")
            except IncompatibleSpecError as exc:
                raise ServerStartError(str(exc)) from exc

    def _prepare_backends(self, dist: TritonDistribution) -> Path | None:
        """pytriton's binary: a backends folder whose Python backend has the stub of this interpreter."""
        if not dist.is_pytriton:
            return None
        assert self._workspace is not None and dist.backends_dir is not None and dist.stubs_dir is not None
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = dist.stubs_dir / version / "triton_python_backend_stub"
        if not stub.is_file():
            have = sorted(p.name for p in dist.stubs_dir.iterdir() if p.is_dir())
            raise ServerStartError(
                f"nvidia-pytriton has no Python backend stub for Python {version} (it has {', '.join(have)})"
            )
        backends = self._workspace / "backends"
        for backend in dist.backends_dir.iterdir():
            if not backend.is_dir():
                continue
            target = backends / backend.name
            target.mkdir(parents=True)
            for item in backend.iterdir():
                if item.name != "__pycache__":
                    (target / item.name).symlink_to(item.resolve())
        # Copied, not linked: the backend chmods its stub, which must not touch the installed package.
        shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
        return backends

    def _command(self, dist: TritonDistribution, backends: Path | None) -> list[str]:
        apis = [a for a in RESTRICTED_APIS if self.allow_shared_memory or a != "shared-memory"]
        restricted = f"{','.join(apis)}:{ADMIN_KEY_HEADER}={self.restricted_api_key}"
        cmd = [
            str(dist.binary),
            f"--model-repository={self._repository}",
            "--model-control-mode=none",
            "--exit-on-error=true",
            "--strict-readiness=true",
            f"--http-address={self.http_host}",
            f"--http-port={self._ports['http']}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self._ports['grpc']}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self._ports['metrics']}",
            f"--http-restricted-api={restricted}",
            f"--grpc-restricted-protocol={restricted}",
            *(
                []
                if self.allow_shared_memory
                else [  # a key nobody is told: the shared-memory APIs are closed to every caller
                    f"--http-restricted-api=shared-memory:{SHM_OFF_HEADER}={self._shm_off_key}",
                    f"--grpc-restricted-protocol=shared-memory:{SHM_OFF_HEADER}={self._shm_off_key}",
                ]
            ),
            f"--log-verbose={self.log_verbose}",
            # Triton 2.51 waits on SIGINT for idle HTTP keep-alive connections (clients keep them on purpose)
            f"--exit-timeout-secs={self.exit_timeout_s}",
        ]
        if backends is not None:
            cmd.append(f"--backend-directory={backends}")
        if self.max_request_bytes is not None and _supports_option(dist.binary, "--http-max-input-size", self):
            cmd.append(f"--http-max-input-size={self.max_request_bytes}")
        if not any(arg.startswith(_POOL_OPTION) for arg in self.extra_args):
            # Triton keeps up to 8 gRPC requests for reuse (default), each holding the capacity of the largest
            # message it carried: refused 100 MB messages left hundreds of MB. Without the pool, memory goes back
            # at once, for about 0.05 ms more per request (docs/reliability.md).
            cmd.append(f"{_POOL_OPTION}=0")
        cmd.extend(self.extra_args)
        return cmd

    def _environment(self, dist: TritonDistribution) -> dict[str, str]:
        env = dict(os.environ)
        libdirs = [str(d) for d in dist.lib_dirs]
        if dist.is_pytriton:
            libdir = sysconfig.get_config_var("LIBDIR")
            if libdir:
                libdirs.insert(0, str(libdir))
        if env.get("LD_LIBRARY_PATH"):
            libdirs.append(env["LD_LIBRARY_PATH"])
        if libdirs:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(libdirs)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
        env[PYTHONPATH_ENV] = interpreter_pythonpath()
        env.pop(ADMIN_KEY_ENV, None)  # the server has the key from its options; its stubs need none
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        url = f"http://{self.http_url}/v2/health/ready"
        while True:
            code = self._process.poll()
            if code is not None:
                raise ServerStartError(self._failure(f"tritonserver exited with code {code} while starting"))
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ServerStartError(self._failure(f"tritonserver was not ready after {timeout:.0f}s"))
            time.sleep(0.2)

    def _failure(self, headline: str) -> str:
        text = self.log_text()
        reason = explain_log(text) or _tail(text) or "(the server logged nothing)"
        return f"{headline} (repository {self._repository}). Server log:\n{reason}"

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGINT (Triton's graceful shutdown), then SIGKILL after `timeout`; then whatever is left of its
        process group (stubs Triton did not stop, e.g. after it was killed) and its stubs' /dev/shm regions.
        Idempotent; returns the exit code."""
        proc = self._process
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                self._regions |= stub_shm_regions(proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    LOG.warning("tritonserver (pid %s) ignored SIGINT for %.0fs; killing it", proc.pid, timeout)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: stubs included, even orphaned ones
            proc.wait(timeout)
            code = proc.returncode
        for name in self._regions:  # left behind when a stub is killed instead of finishing its own shutdown
            remove_region(name)
        self._regions = set()
        if self._state_path is not None:
            self._state_path.unlink(missing_ok=True)
            self._state_path = None
        self._cleanup()
        return code

    def _cleanup(self) -> None:
        if self._workspace is not None:
            self._final_log = self.log_text()
            shutil.rmtree(self._workspace, ignore_errors=True)
            self._workspace = None
            self._log_path = None

    def wait(self, timeout: float | None = None) -> int:
        """Block until the server exits (or `timeout` passes: subprocess.TimeoutExpired); its exit code."""
        if self._process is None:
            raise ServerError("the server was never started")
        return self._process.wait(timeout)

    def exit_reason(self) -> str:
        """Why a server that was running stopped: the signal that ended it (a crash is SIGSEGV or SIGABRT, whatever
        the log says last), else its log's error lines."""
        code = self._process.returncode if self._process is not None else None
        if code is not None and code < 0:
            return f"{exit_headline(self.pid, code)}. Last lines of its log:\n{_tail(self.log_text(), 8)}"
        return self._failure(f"tritonserver exited with code {code}")

    def __enter__(self) -> TritonServer:
        if self._process is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: types.TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"TritonServer({str(self._repository)!r}, http={self._ports['http']}, pid={self.pid}, {state})"

    # ----------------------------------------------------------------- queries
    def get_json(self, path: str, *, admin: bool = False, method: str = "GET", timeout: float = 10.0) -> object:
        """A small JSON call to the HTTP endpoint (e.g. ``/v2/repository/index`` with admin=True, POST)."""
        headers = dict(self.admin_headers) if admin else {}
        data = b"{}" if method == "POST" else None
        req = urllib.request.Request(f"http://{self.http_url}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise ServerError(f"{method} {path} answered {exc.code}: {body}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ServerError(f"{method} {path} failed: {exc}") from exc

    def model_index(self) -> list[dict[str, str]]:
        """Triton's repository index (name, version, state, reason) through the restricted API."""
        index = self.get_json("/v2/repository/index", admin=True, method="POST")
        return list(index) if isinstance(index, list) else []


_OPTION_CACHE: dict[tuple[str, str], bool] = {}

_POOL_OPTION = "--grpc-infer-allocation-pool-size"


def _supports_option(binary: Path, option: str, server: TritonServer) -> bool:
    """Whether `tritonserver --help` lists `option` (options differ between Triton releases)."""
    key = (str(binary), option)
    if key not in _OPTION_CACHE:
        assert server._workspace is not None
        env = server._environment(TritonDistribution.from_binary(binary))
        try:
            out = subprocess.run(
                [str(binary), "--help"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=30,
                check=False,
            ).stdout.decode(errors="replace")
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        _OPTION_CACHE[key] = option in out
        if not _OPTION_CACHE[key]:
            LOG.debug("%s has no %s; request size is bounded by the models' own limits", binary.name, option)
    return _OPTION_CACHE[key]


@contextlib.contextmanager
def serving(repository: str | Path, **kwargs: object) -> Iterator[TritonServer]:
    """`with serving(repo, http_port=0) as server:` — a started server, stopped on exit."""
    server = TritonServer(repository, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()
