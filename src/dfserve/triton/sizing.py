"""How many `preprocess` instances a serving container runs, decided where it runs, when it starts.

A build writes `preprocess` instances from the build host's cores (`GpuServing.for_gpu`); a build Job on a
224-core node would write 224 Python-backend stubs (each with its own /dev/shm region) into a pod allowed 4 CPUs
and a 1 GiB /dev/shm. So the serving container re-decides the count from the CPUs it may actually use:

- the CPU affinity mask (`os.sched_getaffinity`: cpusets, `docker run --cpuset-cpus`, Kubernetes' static CPU
  manager), and
- the CFS quota of its cgroup (`cpu.max` in cgroup v2, `cpu.cfs_quota_us` / `cpu.cfs_period_us` in v1: Kubernetes'
  CPU limit, `docker run --cpus`), rounded up,

whichever is smaller, capped at `MAX_PREPROCESS_INSTANCES`; `shm_bytes` says how much /dev/shm that many stubs need,
and the compose file and the Kubernetes manifests size /dev/shm for the cap (tests/deploy check it).

`dfserve serve --preprocess-instances auto` (the container entry point passes it) applies this at start-up.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")

MAX_PREPROCESS_INSTANCES = 32
"""Above this, more decoding processes add /dev/shm and memory faster than throughput: one instance decodes about 70
images/s, so 32 feed ~2,200 images/s, more than one GPU's engine serves at FP16 for ViT-base."""

SHM_PER_INSTANCE_BYTES = 16 * 1024 * 1024
"""/dev/shm one Python-backend stub holds: its control region and the default tensor pool (~15 MB each, measured on
the GPU host, issue 29), rounded up."""

SHM_BASE_BYTES = 64 * 1024 * 1024
"""Headroom for the tensors of requests in flight between `preprocess` and the engine."""


def _cgroup_v2_dir(root: Path, proc_self_cgroup: Path) -> Path | None:
    """The process's own cgroup v2 folder: the namespace root in a container, else the path /proc names."""
    if (root / "cpu.max").is_file():
        return root
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, _, path = line.partition("::")
        if hierarchy == "0" and (root / path.lstrip("/") / "cpu.max").is_file():
            return root / path.lstrip("/")
    return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 3.5), or None when there is none or none is readable."""
    v2 = _cgroup_v2_dir(root, proc_self_cgroup)
    if v2 is not None:
        quota, _, period = (v2 / "cpu.max").read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or "100000")
    for controller in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
        folder = root / controller
        try:
            quota_us = int((folder / "cpu.cfs_quota_us").read_text())
            period_us = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def affinity_cpus() -> int:
    """CPUs the scheduler may run this process on (all of them where affinity is not supported)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def available_cpus(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """Whole CPUs this container may use: the affinity mask, bounded by the cgroup quota rounded up, at least 1."""
    cpus = affinity_cpus()
    limit = cgroup_cpu_limit(root, proc_self_cgroup)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def preprocess_instances(cpus: int | None = None, cap: int = MAX_PREPROCESS_INSTANCES) -> int:
    """One decoding instance per usable CPU, at most `cap`."""
    if cap < 1:
        raise ValueError(f"the cap on preprocess instances must be at least 1, got {cap}")
    return max(1, min(available_cpus() if cpus is None else cpus, cap))


def shm_bytes(instances: int) -> int:
    """/dev/shm that `instances` preprocess stubs (and the engine's stub, if Python) need."""
    if instances < 1:
        raise ValueError(f"instances must be at least 1, got {instances}")
    return SHM_BASE_BYTES + (instances + 1) * SHM_PER_INSTANCE_BYTES


def instances_arg(text: str) -> int:
    """argparse type of `--preprocess-instances`: a positive count, or `auto` (`preprocess_instances()`)."""
    if text == "auto":
        return preprocess_instances()
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or 'auto', got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"instance count must be at least 1, got {count}")
    return count


def main(argv: list[str] | None = None) -> int:
    """`python -m dfserve.triton.sizing`: the count and the /dev/shm it needs, for scripts and operators."""
    parser = argparse.ArgumentParser(prog="python -m dfserve.triton.sizing", description=main.__doc__)
    parser.add_argument("--cap", type=int, default=MAX_PREPROCESS_INSTANCES)
    args = parser.parse_args(argv)
    count = preprocess_instances(cap=args.cap)
    print(f"cpus={available_cpus()} preprocess_instances={count} shm_bytes={shm_bytes(count)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
