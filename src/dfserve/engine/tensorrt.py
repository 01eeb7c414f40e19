"""TensorRT at run time: importing it with a clear error, running a plan on a batch of pixels, and the host check
that the container entry point runs before Triton loads an engine (`python -m dfserve.engine.tensorrt check`).
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from dfserve.engine.gpus import _check, _cudart, local_gpus
from dfserve.engine.records import (
    NVINFER_DIRS,
    REBUILD_HINT,
    _version_key,
    check_engine_compatibility,
    decode_infer_lib_version,
    find_engine_records,
    installed_tensorrt_version,
    read_engine_record,
    record_path,
)
from dfserve.errors import BuildError, EngineBuildError, EngineCompatibilityError, EngineError, TensorRTUnavailableError
from dfserve.spec.model import ModelSpec

INSTALL_HINT = (
    "TensorRT is not installed: build engines on a GPU host, e.g. `docker compose run --rm build` "
    "(NVIDIA's TensorRT container of the same release as the Triton image), or pip install 'dfserve[gpu]' "
    "on a host with an NVIDIA driver"
)


def require_tensorrt() -> ModuleType:
    """Import `tensorrt`, or stop with one message saying where engines can be built."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError as exc:  # also OSError-like failures of a broken install surface as ImportError
        raise TensorRTUnavailableError(f"{INSTALL_HINT} ({exc})") from exc


def run_engine(plan_path: Path, pixels: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Scores [N, K] of a plan for uint8 pixels [N, 3, H, W], in chunks of the plan's max batch.

    Used by the build's FP16 parity gate; the server runs plans through Triton, not through this.
    """
    trt, cudart = require_tensorrt(), _cudart()
    record = read_engine_record(record_path(plan_path))
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise EngineCompatibilityError(f"TensorRT could not load {plan_path}; {REBUILD_HINT}")
    context = engine.create_execution_context()
    inp, out = spec.tensors.pixels, spec.tensors.scores
    in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(inp)))
    h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    stream = _check(cudart.cudaStreamCreate())
    results = []
    try:
        for start in range(0, len(pixels), record.max_batch):
            chunk = np.ascontiguousarray(pixels[start : start + record.max_batch], dtype=in_dtype)
            if not context.set_input_shape(inp, tuple(chunk.shape)):
                raise EngineBuildError(f"{plan_path} does not accept input shape {tuple(chunk.shape)}")
            out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(out)))
            host_out = np.empty(tuple(context.get_tensor_shape(out)), dtype=out_dtype)
            allocated: list[int] = []
            try:
                d_in = _check(cudart.cudaMalloc(chunk.nbytes))
                allocated.append(d_in)
                d_out = _check(cudart.cudaMalloc(host_out.nbytes))
                allocated.append(d_out)
                _check(cudart.cudaMemcpy(d_in, chunk.ctypes.data, chunk.nbytes, h2d))
                context.set_tensor_address(inp, d_in)
                context.set_tensor_address(out, d_out)
                if not context.execute_async_v3(int(stream)):  # TensorRT takes the stream as an integer handle
                    raise EngineBuildError(f"TensorRT failed to run {plan_path}")
                _check(cudart.cudaStreamSynchronize(stream))
                _check(cudart.cudaMemcpy(host_out.ctypes.data, d_out, host_out.nbytes, d2h))
            finally:
                for pointer in allocated:
                    cudart.cudaFree(pointer)
            results.append(host_out.astype(np.float32))
    finally:
        cudart.cudaStreamDestroy(stream)
    return np.concatenate(results)


def check_host(location: Path) -> None:
    """`check_engine_compatibility` against this host's TensorRT and GPUs (what `dfserve serve` should call)."""
    check_engine_compatibility(location, installed_tensorrt_version(), local_gpus())


def install_problems(
    module_version: str,
    system_version: str | None,
    loaded_libraries: Iterable[str],
    distributions: Iterable[str],
    system_dirs: Sequence[str] = NVINFER_DIRS,
) -> list[str]:
    """What makes this Python's TensorRT other than the container's: a different version from the container's
    libnvinfer, a libnvinfer loaded from elsewhere (pip's `tensorrt_libs` wheels bundle their own), or pip's
    TensorRT library wheels installed at all. Empty when TensorRT is the container's."""
    problems = []
    if system_version is None:
        problems.append(f"no libnvinfer in the container's library folders ({', '.join(system_dirs)})")
    elif _version_key(module_version) != _version_key(system_version):
        problems.append(f"Python's tensorrt is {module_version} but the container's libnvinfer is {system_version}")
    foreign = sorted({p for p in loaded_libraries if not p.startswith(tuple(system_dirs))})
    if foreign:
        problems.append(f"libnvinfer loaded from outside the container's folders: {', '.join(foreign)}")
    wheels = sorted({d for d in distributions if "tensorrt" in d.lower().replace("-", "_") and "libs" in d.lower()})
    if wheels:
        problems.append(f"pip installed TensorRT's own libraries ({', '.join(wheels)}): a second TensorRT")
    return problems


def _system_tensorrt_version(system_dirs: Sequence[str] = NVINFER_DIRS) -> str | None:
    for path in sorted(str(p) for d in system_dirs for p in Path(d).glob("libnvinfer.so.*[0-9]")):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        lib.getInferLibVersion.restype = ctypes.c_int32
        return decode_infer_lib_version(int(lib.getInferLibVersion()))
    return None


def check_install() -> list[str]:
    """`install_problems` of this process: the `tensorrt` module imported (which loads its libnvinfer), the
    libnvinfer files mapped into this process, the container's own, and pip's installed distributions."""
    trt = require_tensorrt()
    trt.Logger(trt.Logger.WARNING)  # make sure the library is loaded
    maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
    loaded = {line.split()[-1] for line in maps.splitlines() if "libnvinfer.so" in line and "/" in line}
    names = [d.metadata["Name"] or "" for d in importlib.metadata.distributions()]
    return install_problems(str(trt.__version__), _system_tensorrt_version(), loaded, names)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dfserve.engine.tensorrt check REPOSITORY``: run by the Triton container before tritonserver,
    so a plan from another GPU or TensorRT stops the container with one line instead of a backend failure.
    ``python -m dfserve.engine.tensorrt check-install``: run by build/Dockerfile after its installs, so an image
    whose pip brought a second TensorRT is never built."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dfserve.engine.tensorrt")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="refuse TensorRT plans this host cannot load").add_argument("location", type=Path)
    sub.add_parser("check-install", help="fail unless Python's TensorRT is the container's own")
    args = parser.parse_args(argv)
    if args.command == "check-install":
        try:
            problems = check_install()
        except BuildError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if not problems:
            print(f"TensorRT {installed_tensorrt_version()} is the container's own", file=sys.stderr)
        return 1 if problems else 0
    try:
        check_host(args.location)
    except (EngineError, BuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    plans = len(find_engine_records(args.location))
    print(f"engine check: {plans} TensorRT plan(s) under {args.location} match this host", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
