"""Which ``tritonserver`` runs, what it can serve, and where: the bundled binary or an installed Triton, the
backends a repository needs against those the installation has, and free or taken ports.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dfserve.errors import PortTakenError, ServerStartError, TritonNotFoundError
from dfserve.spec.names import (
    CONFIG_FILENAME,
    TRITONSERVER_ENV,
)

INSTALL_HINT = "install dfserve[server] (it brings nvidia-pytriton's tritonserver) or pass --tritonserver PATH"


@dataclass(frozen=True)
class TritonDistribution:
    """Where a tritonserver binary's parts are: what `TritonServer` needs to run it."""

    binary: Path
    stubs_dir: Path | None = None
    """pytriton layout: folder holding ``<major.minor>/triton_python_backend_stub``; None for an installed Triton."""
    backends_dir: Path | None = None
    lib_dirs: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def is_pytriton(self) -> bool:
        return self.stubs_dir is not None

    @classmethod
    def from_binary(cls, binary: Path) -> TritonDistribution:
        """Recognise pytriton's layout (``tritonserver/bin``, ``backends``, ``python_backend_stubs``) next to
        the binary; anything else is taken as an installed Triton that knows its own backends."""
        binary = Path(binary)
        root = binary.resolve().parent.parent
        stubs = root / "python_backend_stubs"
        if not stubs.is_dir():
            return cls(binary=binary)
        libs = root.parent.parent / "nvidia_pytriton.libs"  # a wheel install
        if not libs.is_dir():
            libs = root / "external_libs"  # an editable pytriton
        return cls(
            binary=binary,
            stubs_dir=stubs,
            backends_dir=root / "backends",
            lib_dirs=(libs,) if libs.is_dir() else (),
        )


PLATFORM_BACKENDS = {
    "tensorrt_plan": "tensorrt",
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow_graphdef": "tensorflow",
}
"""Triton's `platform` values and the backend that serves each (its model_config.proto documents the pairs)."""


_BACKEND_LINE = re.compile(r'^\s*(platform|backend)\s*:\s*"([^"]+)"', re.MULTILINE)


def required_backends(repository: Path) -> dict[str, str]:
    """{model: backend} from each model's config.pbtxt (`backend`, or the backend of its `platform`); ensembles
    need none. Read with a pattern, not protobuf: this module imports only the standard library."""
    needs: dict[str, str] = {}
    for config in sorted(Path(repository).glob(f"*/{CONFIG_FILENAME}")):
        for key, value in _BACKEND_LINE.findall(config.read_text(errors="replace")):
            backend = value if key == "backend" else PLATFORM_BACKENDS.get(value)
            if backend:
                needs[config.parent.name] = backend
    return needs


def available_backends(dist: TritonDistribution) -> set[str] | None:
    """The backends a Triton installation ships (folders of its backends directory); None when unknown."""
    folder = dist.backends_dir or dist.binary.resolve().parent.parent / "backends"
    if not folder.is_dir():
        return None
    return {p.name for p in folder.iterdir() if p.is_dir()}


def check_backends(repository: Path, dist: TritonDistribution) -> None:
    """Refuse, in one line and before starting anything, a repository that needs a backend this Triton lacks: above
    all a TensorRT repository on nvidia-pytriton's tritonserver, which has only the Python backend and would
    otherwise start, then fail to load `vit` with "unable to find backend library"."""
    have = available_backends(dist)
    if have is None:
        return
    missing = {model: backend for model, backend in required_backends(repository).items() if backend not in have}
    if missing:
        model, backend = next(iter(missing.items()))
        hint = (
            "serve it with NVIDIA's Triton container (`docker compose up -d triton`) or pass --tritonserver "
            "pointing to a Triton that has it"
        )
        if dist.is_pytriton:
            hint = f"nvidia-pytriton's tritonserver has only the Python backend; {hint}"
        raise ServerStartError(
            f"model {model!r} in {repository} needs Triton's {backend} backend, which {dist.binary} lacks "
            f"(it has: {', '.join(sorted(have)) or 'none'}): {hint}"
        )


def _bundled_tritonserver() -> Path | None:
    """pytriton's binary, located without importing pytriton (its import pulls numpy, zmq and more)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "tritonserver" / "bin" / "tritonserver"
        if candidate.is_file():
            return candidate
    return None


def find_tritonserver(explicit: str | Path | None = None) -> Path:
    """The tritonserver binary to run: `explicit`, else $DFSERVE_TRITONSERVER, else `tritonserver` on PATH
    (an installed Triton, as in NVIDIA's containers), else the one bundled with nvidia-pytriton.

    An installed Triton comes first because it carries the backends (ONNX Runtime, TensorRT) that the
    bundled, Python-backend-only binary lacks.
    """
    for origin, value in (("--tritonserver", explicit), (f"${TRITONSERVER_ENV}", os.environ.get(TRITONSERVER_ENV))):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise TritonNotFoundError(f"{origin} {path} is not a file; {INSTALL_HINT}")
            if not os.access(path, os.X_OK):
                raise TritonNotFoundError(f"{origin} {path} is not executable")
            return path
    on_path = shutil.which("tritonserver")
    if on_path:
        return Path(on_path)
    bundled = _bundled_tritonserver()
    if bundled is not None:
        return bundled
    raise TritonNotFoundError(f"no tritonserver found (not on PATH, nvidia-pytriton not installed); {INSTALL_HINT}")


def check_port_free(host: str, port: int, what: str) -> None:
    """Refuse a port another process listens on, in its own words, before Triton would report it among its
    start-up lines (2.51 prints it after unrelated CUDA and NVML warnings)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton does: TIME_WAIT is no conflict
        try:
            sock.bind((host or "0.0.0.0", port))
        except OSError as exc:
            raise PortTakenError(
                f"the {what} port {port} on {host or '0.0.0.0'} is taken ({exc.strerror}): another process (another "
                f"tritonserver?) listens there; stop it, or pick another port (0 picks a free one)"
            ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now. Another process may take it before tritonserver binds it; the start
    then fails with Triton's own "address in use" reason."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host if host not in ("", "0.0.0.0") else "127.0.0.1", 0))
        return int(sock.getsockname()[1])


def interpreter_pythonpath() -> str:
    """The running interpreter's import path (its directories), for `DFSERVE_PYTHONPATH`."""
    entries = [p for p in sys.path if p and Path(p).is_dir()]
    return os.pathsep.join(dict.fromkeys(str(Path(p).resolve()) for p in entries))
