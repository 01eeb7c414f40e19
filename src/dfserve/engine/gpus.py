"""The GPUs of this host as TensorRT cares about them (name, compute capability, UUID), read through the CUDA
runtime where it is installed and through nvidia-smi otherwise.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from dfserve.errors import EngineBuildError, TensorRTUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str
    """"major.minor", e.g. "9.0"."""
    pci_bus_id: str = ""
    """"domain:bus:device.0" as nvidia-smi and CUDA print it; empty where the probe did not say."""
    uuid: str = ""
    """"GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"; empty where the probe did not say."""

    @property
    def sm(self) -> str:
        return "sm_" + self.compute_capability.replace(".", "")


def _text(value: Any) -> str:
    """cuda-python hands `char[]` fields over as bytes (NUL-padded); accept str as well."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    return str(value).strip()


def format_uuid(raw: bytes) -> str:
    """nvidia-smi's spelling of a GPU UUID: "GPU-" and the 16 bytes as 8-4-4-4-12 hex digits."""
    h = bytes(raw).hex()
    if len(h) != 32:
        raise ValueError(f"a GPU UUID has 16 bytes, got {len(raw)}")
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def cuda_gpus(cudart: Any | None = None) -> list[GpuInfo]:
    """The GPUs of the CUDA runtime, in its device order (the one Triton's `gpus` and instance groups use),
    limited by CUDA_VISIBLE_DEVICES: ``cudaGetDeviceCount`` and ``cudaGetDeviceProperties``.

    Preferred over nvidia-smi, which lists GPUs in PCI order whatever CUDA_DEVICE_ORDER says and whose older
    drivers lack the `compute_cap` query. Raises `TensorRTUnavailableError` without cuda-python and
    `EngineBuildError` when the runtime fails (no driver, no device)."""
    rt = cudart or _cudart()
    count = int(_check(rt.cudaGetDeviceCount()))
    gpus = []
    for device in range(count):
        props = _check(rt.cudaGetDeviceProperties(device))
        pci = f"{int(props.pciDomainID):08x}:{int(props.pciBusID):02x}:{int(props.pciDeviceID):02x}.0".upper()
        gpus.append(
            GpuInfo(
                name=_text(props.name),
                compute_capability=f"{int(props.major)}.{int(props.minor)}",
                pci_bus_id=pci,
                uuid=format_uuid(bytes(props.uuid.bytes)),
            )
        )
    return gpus


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Lines of ``nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader``."""
    gpus = []
    for line in text.strip().splitlines():
        name, sep, cc = line.rpartition(",")
        if not sep or not name.strip():
            raise ValueError(f"unexpected nvidia-smi line {line!r}")
        gpus.append(GpuInfo(name=name.strip(), compute_capability=cc.strip()))
    return gpus


def _nvidia_smi_gpus() -> list[GpuInfo]:
    """The fallback where cuda-python is missing (NVIDIA's Triton image installs dfserve without the `gpu` extra).
    Its order is PCI order, and drivers before 510 lack `compute_cap` (the call then fails and nothing is listed)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    cmd = [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible:
        cmd.append(f"--id={visible}")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
        return parse_nvidia_smi(out)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.warning("nvidia-smi could not list GPUs: %s", exc)
        return []


def local_gpus() -> list[GpuInfo]:
    """The GPUs this process may use, empty when there is none: from the CUDA runtime, else from nvidia-smi."""
    try:
        return cuda_gpus()
    except TensorRTUnavailableError:
        return _nvidia_smi_gpus()
    except EngineBuildError as exc:  # cuda-python present, but no driver or device
        log.warning("the CUDA runtime lists no GPU: %s", exc)
        return []


def _cudart() -> Any:
    """cuda-python's runtime bindings: ``cuda.bindings.runtime`` (the `gpu` extra pins cuda-python 12.6.2+, the CUDA
    of the pinned containers), else the older ``cuda.cudart`` spelling of the same module."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as exc:
            raise TensorRTUnavailableError(
                "the CUDA runtime bindings are missing: pip install 'dfserve[gpu]' (cuda-python)"
            ) from exc
    return runtime


def _check(result: Any) -> Any:
    err, *values = result
    if int(err) != 0:
        raise EngineBuildError(f"CUDA call failed: {getattr(err, 'name', err)}")
    return values[0] if values else None
