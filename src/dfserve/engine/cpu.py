"""The host's CPU as ONNX Runtime sees it: model, instruction sets that change its speed, and the cores this
process may use; and the one comparison between the CPU a repository was measured on and the one serving it.

Why this exists: a reduced-precision graph is only worth its drift where the CPU has the instructions that make it
fast. Dynamic INT8 served 1.88x FP32 on an AMD EPYC with AVX-512 VNNI and 1.01-1.04x on an AMD EPYC of family 23
(AVX2 and FMA only: no VNNI), the same graph and commands (docs/benchmarks.md, "CPU precision by host"). So the
build records the CPU it measured on (`ModelSpec.build_host`), and `dfserve serve` warns when the serving CPU lacks
what that measurement relied on (`compare_hosts`).

Read from /proc/cpuinfo (Linux: x86 `flags`, ARM `Features`), the process's CPU affinity and the cgroup CPU
quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us`), so that a container limited to 2 of 64 cores counts 2.
"""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from dfserve.spec.model import BuildHost, Precision

CPUINFO = Path("/proc/cpuinfo")
CGROUP_ROOT = Path("/sys/fs/cgroup")

KNOWN_ISA: tuple[str, ...] = (
    # x86 (Linux flag names)
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    # ARM (Linux `Features` names): asimd is NEON, asimddp its int8 dot product, i8mm the int8 matrix multiply
    "asimd",
    "asimddp",
    "asimdhp",
    "sve",
    "sve2",
    "i8mm",
    "bf16",
)
"""The instruction sets recorded: those ONNX Runtime's kernels (MLAS) pick between for FP32, INT8 and 16-bit
arithmetic. Others are left out so that a record compares what matters."""

ACCELERATES: dict[str, frozenset[str]] = {
    "int8": frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"}),
    "fp16": frozenset({"avx512_fp16", "asimdhp"}),
    "bf16": frozenset({"avx512_bf16", "amx_bf16", "bf16"}),
}
"""Per precision, the instructions that make it faster than FP32 on a CPU: integer dot products (VNNI, AMX-INT8,
ARM's SDOT and I8MM) for INT8. Without any of them, ONNX Runtime's INT8 MatMul widens to 16-bit multiplies and
gains nothing over FP32 FMA (measured: 1.01x on AVX2)."""

VNNI = frozenset({"avx512_vnni", "avx_vnni"})

ISA_NAMES: dict[str, str] = {
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "amx_int8": "AMX-INT8",
    "amx_bf16": "AMX-BF16",
    "avx512_bf16": "AVX-512 BF16",
    "avx512_fp16": "AVX-512 FP16",
    "asimddp": "NEON dot product",
    "asimdhp": "NEON FP16",
    "i8mm": "I8MM",
    "bf16": "BF16",
}


@dataclass(frozen=True)
class HostCpu:
    """One host's CPU, as far as ONNX Runtime's speed is concerned."""

    model: str
    arch: str
    isa: frozenset[str]
    cores: int
    """Cores this process may use: the affinity mask, capped by the cgroup's CPU quota."""
    cpus: int
    """Logical CPUs of the machine (`os.cpu_count()`)."""

    @property
    def quota_limited(self) -> bool:
        """True when this process may use fewer cores than the machine has: ONNX Runtime's default thread count
        follows the machine, not the quota, so it must be told."""
        return self.cores < self.cpus

    def accelerates(self, precision: str) -> frozenset[str]:
        """The instructions of this CPU that make `precision` faster than FP32 (empty: none)."""
        return self.isa & ACCELERATES.get(precision, frozenset())

    def record(self, measured: dict[str, float] | None = None) -> BuildHost:
        """The compact record the spec keeps (`ModelSpec.build_host`)."""
        return BuildHost(
            cpu_model=self.model, arch=self.arch, isa=tuple(sorted(self.isa)), cores=self.cores, measured=measured or {}
        )


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, known instruction sets) from /proc/cpuinfo's text; the first processor's entry decides."""
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if not model:  # ARM kernels give implementer and part numbers only
        fields = {k.strip().lower(): v.strip() for k, s, v in (ln.partition(":") for ln in text.splitlines()) if s}
        if "cpu implementer" in fields:
            model = f"ARM implementer {fields['cpu implementer']} part {fields.get('cpu part', '?')}"
    return model or "unknown CPU", frozenset(flags & set(KNOWN_ISA))


def quota_cores(root: Path = CGROUP_ROOT) -> int | None:
    """Cores the cgroup's CPU quota allows (rounded up), or None when there is no quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return max(1, math.ceil(quota_us / period_us)) if quota_us > 0 else None
    except (OSError, ValueError):
        return None


def allowed_cores(root: Path = CGROUP_ROOT) -> int:
    """Cores this process may run on: its affinity mask, capped by the cgroup quota."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = quota_cores(root)
    return max(1, min(affinity, quota) if quota else affinity)


def read_host(cpuinfo: Path = CPUINFO, cgroup_root: Path = CGROUP_ROOT) -> HostCpu:
    """This host's CPU. Where /proc/cpuinfo cannot be read (not Linux), the model is the platform's and no
    instruction set is known: every comparison then says so instead of guessing."""
    try:
        model, isa = parse_cpuinfo(cpuinfo.read_text(errors="replace"))
    except OSError:
        model, isa = platform.processor() or "unknown CPU", frozenset()
    return HostCpu(
        model=model, arch=platform.machine(), isa=isa, cores=allowed_cores(cgroup_root), cpus=os.cpu_count() or 1
    )


def describe_isa(isa: frozenset[str] | tuple[str, ...]) -> str:
    """`AVX-512 VNNI, AMX-INT8` for the instruction sets that matter to a precision; `none` for an empty set."""
    return ", ".join(ISA_NAMES.get(f, f) for f in sorted(isa)) or "none"


def compare_hosts(build: BuildHost | None, serving: HostCpu, precision: Precision) -> str | None:
    """One line when the serving CPU lacks what `precision` was measured with on the build host, else None.

    FP32 needs nothing special. For a reduced precision, the build host's accelerating instructions
    (`ACCELERATES`) that the serving CPU lacks are named with the speed measured there; a serving CPU with none of
    them is told that the precision may be no faster than FP32 here."""
    if build is None or precision == "fp32":
        return None
    measured = build.measured.get(f"{precision}_over_fp32")
    there = f", {precision.upper()} {measured:.2f}x FP32 there" if measured is not None else ""
    if build.arch and serving.arch and build.arch != serving.arch:
        return (
            f"this {serving.arch} CPU ({serving.model}) is not the {build.arch} CPU the {precision.upper()} build was "
            f"measured on ({build.cpu_model}{there}); its speed here is unmeasured: rebuild with --precision auto "
            "on this host, or measure with `dfserve bench int8`"
        )
    needed = frozenset(build.isa) & ACCELERATES.get(precision, frozenset())
    missing = needed - serving.isa
    if serving.isa & VNNI:  # the 512-bit and the 256-bit VNNI run the same dot products
        missing -= VNNI
    if not missing:
        return None
    has = serving.accelerates(precision)
    consequence = (
        f"it has {describe_isa(has)} instead, so the speed-up may differ"
        if has
        else f"without them {precision.upper()} may be no faster than FP32 here"
        + (" (measured 1.01x on AVX2)" if precision == "int8" else "")
    )
    return (
        f"this CPU ({serving.model}) lacks {describe_isa(missing)}, which the {precision.upper()} build was measured "
        f"with on {build.cpu_model} ({there.lstrip(', ') or 'speed not recorded'}); {consequence}: rebuild with "
        "--precision auto on this host"
    )
