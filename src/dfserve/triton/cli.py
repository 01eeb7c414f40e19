"""`dfserve serve`: run tritonserver on a built model repository until Ctrl-C or SIGTERM.

Run-time tuning flags (instance counts, queue delay) never edit the given repository: they are applied to a
private overlay of it (see `dfserve.repository.overlay.overlay_repository`) that lives as long as the server.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import tempfile
import types
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from dfserve.commandline import constrained, non_negative_int, port, positive_float
from dfserve.engine.records import find_engine_records
from dfserve.errors import ServerError, ServerExitedError
from dfserve.repository.overlay import overlay_repository
from dfserve.repository.staging import build_holder, snapshot_parent
from dfserve.spec.model import SPEC_FILENAME, Batching, ModelSpec
from dfserve.spec.names import (
    ADMIN_KEY_ENV,
    ADMIN_KEY_HEADER,
    DEFAULT_REPOSITORY,
    GRPC_RESTRICTED_HEADER_PREFIX,
    ORT_THREADS_ENV,
    TRITONSERVER_ENV,
)
from dfserve.terminal import console as make_console
from dfserve.triton.args import split_tritonserver_args
from dfserve.triton.distribution import (
    TritonDistribution,
    check_backends,
    check_port_free,
    find_tritonserver,
    free_port,
)
from dfserve.triton.hardening import RESTRICTED_APIS, request_limit
from dfserve.triton.hostcheck import advise_repository
from dfserve.triton.process import TritonServer
from dfserve.triton.proxy import NginxProxy, ProxySettings, find_nginx
from dfserve.triton.sizing import instances_arg
from dfserve.triton.state import clean_leftovers
from dfserve.triton.supervisor import RESTARTS, WINDOW_S, RestartBudget, Supervisor

if TYPE_CHECKING:
    from dfserve.triton.guard import HttpGuard
    from dfserve.triton.proxy import NginxProxy

SNAPSHOT_ROOT = Path(tempfile.gettempdir())

console = make_console(highlight=False)
err_console = make_console(stderr=True, highlight=False)


class _StopRequested(BaseException):
    """Raised from the SIGINT/SIGTERM handler so that a start in progress is abandoned and cleaned up."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run Triton Inference Server on a built model repository",
        description=(
            "Start tritonserver on a model repository built by `dfserve build`, print its endpoints, and keep it "
            "running until Ctrl-C or SIGTERM (the server is stopped with the command; it never outlives it). "
            "Endpoints bind to 127.0.0.1 unless --host says otherwise."
        ),
    )
    p.add_argument(
        "--repository",
        type=Path,
        default=Path(DEFAULT_REPOSITORY),
        metavar="DIR",
        help="model repository to serve (default: ./%(default)s, where `dfserve build` writes)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address HTTP, gRPC and metrics bind to (default 127.0.0.1; 0.0.0.0 exposes the server to the network)",
    )
    p.add_argument(
        "--http-port", type=port, metavar="PORT", default=8000, help="HTTP/REST port (default 8000; 0 picks a free one)"
    )
    p.add_argument(
        "--grpc-port", type=port, metavar="PORT", default=8001, help="gRPC port (default 8001; 0 picks a free one)"
    )
    p.add_argument(
        "--metrics-port",
        type=port,
        metavar="PORT",
        default=8002,
        help="Prometheus /metrics port (default 8002; 0 picks a free one)",
    )
    p.add_argument(
        "--tritonserver",
        metavar="PATH",
        help=f"tritonserver binary (default: ${TRITONSERVER_ENV}, else `tritonserver` on PATH, else nvidia-pytriton's)",
    )
    p.add_argument(
        "--admin-key-file",
        type=Path,
        metavar="FILE",
        help=(
            f"file (mode 0600, owned by you) holding the value of the `{ADMIN_KEY_HEADER}` header that unlocks the "
            f"restricted APIs ({', '.join(a for a in RESTRICTED_APIS if a != 'shared-memory')}; and shared-memory "
            "with --allow-shared-memory, which the SDK's shared-memory mode needs). The key is never taken from "
            f"the command line nor printed (default: ${ADMIN_KEY_ENV}, else a random key written to a new 0600 file "
            "whose path is printed)"
        ),
    )
    p.add_argument(
        "--allow-shared-memory",
        action="store_true",
        help=(
            "open Triton's system shared-memory API to holders of the admin key (the SDK's shared_memory=True "
            "needs it). Off by default: with it, a key holder can make the server map any /dev/shm region its "
            "user may open"
        ),
    )
    p.add_argument(
        "--proxy",
        action="store_true",
        help=(
            "put nginx in front (public HTTP, gRPC and metrics ports go to nginx, tritonserver binds loopback "
            "ports): request bodies over the repository's limit are refused before Triton reads them (Triton 2.51 "
            "has no option for that) and the restricted APIs are rate-limited per client address. Needs nginx "
            "(apt-get install nginx-light; $DFSERVE_NGINX names another binary)"
        ),
    )
    p.add_argument(
        "--tls-cert",
        type=Path,
        metavar="PEM",
        help="with --proxy: the proxy's certificate (chain); HTTP and gRPC then speak TLS only (https://, grpcs://) "
        "(default: none, plain HTTP and gRPC)",
    )
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="with --proxy: the key of --tls-cert (default: none)")
    p.add_argument(
        "--log-verbose", type=non_negative_int, default=0, metavar="N", help="Triton's verbose log level (0 = off)"
    )
    p.add_argument(
        "--engine-instances",
        type=constrained(Batching, "engine_instances"),
        metavar="N",
        help="run N instances of the engine model (the spec's models.engine) for this run (default: the "
        "repository's count)",
    )
    p.add_argument(
        "--preprocess-instances",
        type=instances_arg,
        metavar="N|auto",
        help="run N instances of the preprocess model for this run (each decodes images in its own process); "
        "auto: one per CPU this process may use (affinity and cgroup quota), capped (dfserve.triton.sizing) "
        "(default: the repository's count)",
    )
    p.add_argument(
        "--max-queue-delay-us",
        type=constrained(Batching, "max_queue_delay_us"),
        metavar="US",
        help=(
            "dynamic batching: how long (microseconds) a request may wait for others to fill a batch, for every "
            "model that batches dynamically; higher favours throughput, lower favours latency (default: the "
            "repository's delay)"
        ),
    )
    p.add_argument(
        "--start-timeout",
        type=positive_float,
        default=180.0,
        metavar="S",
        help="seconds to wait for all models to load",
    )
    p.add_argument(
        "--max-restarts",
        type=int,
        default=RESTARTS,
        metavar="N",
        help=(
            f"restart tritonserver after a crash or a dead backend stub at most N times within {WINDOW_S:.0f}s "
            "(with a growing wait), then exit with the reason (default %(default)s; 0 exits at the first crash)"
        ),
    )
    p.add_argument(
        "tritonserver_args",
        nargs="*",
        metavar="-- TRITONSERVER_ARG",
        help=(
            "after `--`: tritonserver's own arguments, passed through (the container entry point hands over the "
            "ones compose and Kubernetes give). --model-repository and --http/--grpc/--metrics-port set the options "
            "above; the launcher's fixed settings are accepted with their values only; a restricted-API key or a "
            "bind address is refused"
        ),
    )
    p.set_defaults(func=run_serve)


def unlocked_apis_line(allow_shared_memory: bool) -> str:
    """What the admin key opens, as `TritonServer` configures it: shared memory only with --allow-shared-memory
    (without it the shared-memory API sits behind a second, random key that nobody is given)."""
    if allow_shared_memory:
        return f"unlocks {', '.join(RESTRICTED_APIS)}"
    others = ", ".join(a for a in RESTRICTED_APIS if a != "shared-memory")
    return f"unlocks {others}; shared-memory stays closed without --allow-shared-memory"


def _instance_overrides(repository: Path, args: argparse.Namespace) -> dict[str, int]:
    if args.engine_instances is None and args.preprocess_instances is None:
        return {}

    try:
        spec = ModelSpec.load(repository)
    except FileNotFoundError as exc:
        raise ServerError(
            f"--engine-instances/--preprocess-instances need {repository / SPEC_FILENAME} (written by dfserve build) "
            "to know the model names"
        ) from exc
    except ValueError as exc:
        raise ServerError(f"{repository / SPEC_FILENAME} is not a valid model spec: {exc}") from exc
    counts: dict[str, int] = {}
    if args.engine_instances is not None:
        counts[spec.models.engine] = args.engine_instances
    if args.preprocess_instances is not None:
        counts[spec.models.preprocess] = args.preprocess_instances
    return counts


def _check_engines(repository: Path) -> None:
    """Refuse, in one line, TensorRT plans built for another GPU or TensorRT version (they would otherwise fail
    inside the backend with an obscure deserialisation error)."""
    try:
        from dfserve.engine.tensorrt import check_host
    except ImportError:  # an install without the build extra cannot have built a plan either
        return
    if find_engine_records(repository):
        check_host(repository)


def read_key_file(path: Path) -> str:
    """The key in `path`, refused when other users could read or replace it (like ssh does for its keys)."""
    try:
        info = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise ServerError(f"cannot read --admin-key-file {path}: {exc.strerror or exc}") from exc
    if info.st_mode & 0o077:
        raise ServerError(
            f"--admin-key-file {path} is readable or writable by others (mode {info.st_mode & 0o777:04o}); "
            f"run `chmod 600 {path}`"
        )
    if info.st_uid != os.geteuid():
        raise ServerError(f"--admin-key-file {path} belongs to another user (uid {info.st_uid})")
    key = text.strip()
    if not key:
        raise ServerError(f"--admin-key-file {path} is empty")
    return key


def write_generated_key(key: str) -> Path:
    """A new 0600 file holding `key`, in the user's runtime directory when there is one (it is private)."""
    folder = os.environ.get("XDG_RUNTIME_DIR") or None
    fd, name = tempfile.mkstemp(prefix="dfserve-admin-key-", dir=folder)  # mkstemp creates it 0600
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return Path(name)


def admin_key(args: argparse.Namespace) -> str | None:
    """The key given by --admin-key-file or the environment; None means generate one."""
    if args.admin_key_file is not None:
        return read_key_file(Path(args.admin_key_file).expanduser())
    return os.environ.get(ADMIN_KEY_ENV) or None


def _apply_tritonserver_args(args: argparse.Namespace) -> list[str]:
    """Fold the pass-through arguments' launcher settings into `args`; the remaining ones, for tritonserver."""
    if args.tritonserver_args and not args.tritonserver_args[0].startswith("-"):
        raise ServerError(
            f"unexpected argument {args.tritonserver_args[0]!r}: the repository is --repository DIR; "
            "tritonserver's own arguments go after `--`"
        )
    owned, extra = split_tritonserver_args(args.tritonserver_args)
    for name, value in owned.items():
        if name == "repository":
            args.repository = Path(value)
        else:
            try:
                setattr(args, name, int(value))
            except ValueError:
                raise ServerError(f"--{name.replace('_', '-')}={value} is not a port number") from None
    return extra


def run_serve(args: argparse.Namespace) -> int:
    from dfserve.triton.guard import HttpGuard  # NumPy: not for `dfserve --help`

    extra_args = _apply_tritonserver_args(args)
    _warn_exposure(args.host, args.proxy)
    if (args.tls_cert or args.tls_key) and not (args.proxy and args.tls_cert and args.tls_key):
        raise ServerError("--tls-cert and --tls-key go together, with --proxy (nginx terminates TLS)")
    for given in (args.tls_cert, args.tls_key):
        if given is not None and not Path(given).is_file():
            raise ServerError(f"{given} is not a file")
    if args.proxy:
        find_nginx()  # before anything starts: one line naming how to install it
    repository = Path(args.repository).expanduser().resolve()
    if not repository.is_dir():
        raise ServerError(f"model repository {repository} does not exist or is not a directory")
    host = advise_repository(repository)
    if host.warning:  # before the checks that may refuse: the user sees it whichever way this run ends
        err_console.print(f"[bold yellow]warning[/]: {host.warning}", soft_wrap=True)
    # the backends first: a TensorRT repository on nvidia-pytriton's server cannot run, whatever its plan is
    check_backends(repository, TritonDistribution.from_binary(find_tritonserver(args.tritonserver)))
    _check_engines(repository)
    for item in clean_leftovers():
        console.print(f"removed what a killed dfserve serve left: {item}")
    key = admin_key(args)
    holder = build_holder(repository)
    if holder is not None:
        raise ServerError(f"model repository {repository} is being written by a dfserve build (pid {holder}); wait")
    # Triton loads a private snapshot: a build into `repository` changes nothing served until the next start, not
    # even at a restart after a crash (`dfserve.repository.staging`)
    overlay = Path(tempfile.mkdtemp(prefix="dfserve-served-", dir=snapshot_parent(repository, SNAPSHOT_ROOT)))
    served = overlay / "repository"
    counts = _instance_overrides(repository, args)
    if args.preprocess_instances is None:
        counts = {**host.instance_counts, **counts}
    if host.engine_threads and not os.environ.get(ORT_THREADS_ENV):
        os.environ[ORT_THREADS_ENV] = str(host.engine_threads)  # the python backend reads it (tritonserver's env)
    for note in host.notes:
        console.print(f"for this host's CPU: {note}")
    try:
        changes = overlay_repository(
            repository, served, instance_counts=counts, max_queue_delay_us=args.max_queue_delay_us
        )
    except BaseException:
        shutil.rmtree(overlay, ignore_errors=True)
        raise
    for change in changes:
        console.print(f"override for this run: {change}")
    public = {"http": args.http_port, "grpc": args.grpc_port, "metrics": args.metrics_port}
    if args.proxy:  # the public ports are nginx's; tritonserver takes free loopback ones
        for what, port in public.items():
            if port:
                check_port_free(args.host, port, what)
        public = {what: port or free_port(args.host) for what, port in public.items()}
    elif args.http_port:
        check_port_free(args.host, args.http_port, "http")
    # Triton's HTTP binds a private loopback port behind dfserve's HTTP front (`dfserve.triton.guard`), which
    # refuses the bodies that crash Triton 2.51 before it parses them
    guard = HttpGuard(
        "127.0.0.1" if args.proxy else args.host,
        0 if args.proxy else args.http_port,
        ("127.0.0.1", 0),
        max_body_bytes=request_limit(served),
    )
    server = TritonServer(
        served,
        host="127.0.0.1" if args.proxy else args.host,
        http_host="127.0.0.1",
        http_port=0,
        grpc_port=0 if args.proxy else args.grpc_port,
        metrics_port=0 if args.proxy else args.metrics_port,
        tritonserver=args.tritonserver,
        restricted_api_key=key,
        allow_shared_memory=args.allow_shared_memory,
        max_request_bytes=request_limit(served),
        log_verbose=args.log_verbose,
        extra_args=extra_args,
    )
    proxy: NginxProxy | None = None
    key_file = write_generated_key(server.restricted_api_key) if server.key_generated else None

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        # One stop at a time: later signals are ignored while the server shuts down (stop() kills it itself
        # if it hangs), so a second Ctrl-C cannot leave an orphan.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _StopRequested(signal.Signals(signum).name)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with console.status(f"starting tritonserver on {repository} ..."):
            server.start(timeout=args.start_timeout)
            guard.upstream = ("127.0.0.1", server.http_port)
            try:
                guard.start()
            except OSError as exc:
                raise ServerError(
                    f"cannot listen on {args.host}:{args.http_port} (HTTP): {exc.strerror or exc}"
                ) from exc
            if args.proxy:
                proxy = _start_proxy(server, guard, args.host, public, args.tls_cert, args.tls_key)
        _print_ready(server, guard, repository, key_file, proxy)
        Supervisor(
            server,
            lambda text: console.print(text, soft_wrap=True),
            start_timeout=args.start_timeout,
            proxy=proxy,
            budget=RestartBudget(max(0, args.max_restarts)),
        ).run()  # returns only by raising: the server could not be kept up
        raise ServerExitedError(server.exit_reason())
    except _StopRequested as stop:
        console.print(f"{stop}: stopping tritonserver ...")
        if proxy is not None:
            proxy.stop()
        code = server.stop()
        console.print(f"tritonserver stopped (exit code {code})")
        return 0
    finally:
        if proxy is not None:
            proxy.stop()
        guard.stop()
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(overlay, ignore_errors=True)
        if key_file is not None:
            key_file.unlink(missing_ok=True)


def _start_proxy(
    server: TritonServer,
    guard: HttpGuard,
    host: str,
    public: dict[str, int],
    tls_cert: Path | None,
    tls_key: Path | None,
) -> NginxProxy:

    def listen(what: str) -> str:
        return f"[{host}]:{public[what]}" if ":" in host else f"{host or '0.0.0.0'}:{public[what]}"

    settings = ProxySettings(
        http_listen=listen("http"),
        grpc_listen=listen("grpc"),
        metrics_listen=listen("metrics"),
        http_upstream=f"127.0.0.1:{guard.port}",  # nginx -> the HTTP front -> tritonserver
        grpc_upstream=server.grpc_url,
        metrics_upstream=server.metrics_url,
        max_body_bytes=server.max_request_bytes or request_limit(server.repository),
        workers="1",
        tls_cert=Path(tls_cert).resolve() if tls_cert else None,
        tls_key=Path(tls_key).resolve() if tls_key else None,
    )
    return NginxProxy(settings).start()


def _endpoint(scheme: str, bound: str, dial: str, local: bool, path: str = "") -> str:
    return f"{scheme}://{bound}{path}" if local or bound == dial else f"{scheme}://{bound}{path} (dial {dial})"


def _dial_address(bound: str) -> str:
    host, _, port = bound.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("", "0.0.0.0") else f"[::1]:{port}" if host == "[::]" else bound


def _warn_exposure(host: str, proxied: bool = False) -> None:
    if host in ("127.0.0.1", "::1", "localhost") or host.startswith("127."):
        return
    unbounded = "" if proxied else " gRPC messages are unbounded without --proxy (Triton 2.51 has no option for it)."
    err_console.print(
        f"warning: --host {host} exposes HTTP, gRPC and metrics beyond this machine. Inference, health and "
        f"metrics need no key and traffic is not encrypted: put an authenticating TLS proxy in front (see deploy/)."
        f"{unbounded}"
    )


def _print_ready(
    server: TritonServer, guard: HttpGuard, repository: Path, key_file: Path | None, proxy: NginxProxy | None = None
) -> None:
    table = Table(title=f"tritonserver ready (pid {server.pid})", show_header=False)
    table.add_row("repository", str(repository))
    if server.repository != repository:
        table.add_row("served overlay", str(server.repository))
    local = server.is_loopback_only
    grpc_scheme = "grpcs" if "--grpc-use-ssl=true" in server.extra_args else "grpc"
    http_scheme = "http"
    bound = {kind: server.bind_address(kind) for kind in ("http", "grpc", "metrics")}
    dial = {"http": server.http_url, "grpc": server.grpc_url, "metrics": server.metrics_url}
    bound["http"] = (
        f"[{guard.listen_host}]:{guard.port}"
        if ":" in guard.listen_host
        else f"{guard.listen_host or '0.0.0.0'}:{guard.port}"
    )
    dial["http"] = _dial_address(bound["http"])
    if proxy is not None:
        s = proxy.settings
        bound = {"http": s.http_listen, "grpc": s.grpc_listen, "metrics": s.metrics_listen or ""}
        dial = {kind: _dial_address(address) for kind, address in bound.items()}
        local = all(a.startswith(("127.", "[::1]", "localhost")) for a in bound.values())
        table.add_row("proxy", f"nginx (pid {proxy.pid}): bodies over {s.max_body_bytes} bytes refused")
        if s.tls_cert is not None:
            http_scheme, grpc_scheme = "https", "grpcs"
    table.add_row("HTTP", _endpoint(http_scheme, bound["http"], dial["http"], local))
    table.add_row(
        "HTTP front",
        f"bodies over {guard.max_body_bytes} bytes and JSON nested over {guard.max_depth} deep refused before Triton",
    )
    # pasted into Client(...) as is, the gRPC address speaks gRPC
    table.add_row("gRPC", _endpoint(grpc_scheme, bound["grpc"], dial["grpc"], local))
    metrics = _endpoint("http", bound["metrics"], dial["metrics"], local, "/metrics")
    table.add_row("metrics", f"{metrics} (no authentication: whoever reaches it reads it)")
    try:
        index = server.model_index()
        models = ", ".join(f"{m.get('name')} v{m.get('version', '?')} {m.get('state', '?')}" for m in index)
    except ServerError as exc:
        models = f"(could not list: {exc})"
    table.add_row("models", models or "(none)")
    console.print(table)
    where = f"generated, in {key_file} (mode 0600, removed at exit)" if key_file else "as given"
    console.print(
        f"admin key: {where}  (HTTP header {ADMIN_KEY_HEADER}, gRPC metadata "
        f"{GRPC_RESTRICTED_HEADER_PREFIX}{ADMIN_KEY_HEADER}; {unlocked_apis_line(server.allow_shared_memory)})",
        soft_wrap=True,
    )
    console.print("Ctrl-C or SIGTERM stops the server.")
