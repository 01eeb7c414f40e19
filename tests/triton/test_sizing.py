"""`preprocess` sized from the CPUs the container may use (issue 29): cgroup v2 and v1 quotas read from files laid
out as the kernel does, the affinity mask of this very process, and `dfserve serve --preprocess-instances auto`."""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dfserve.triton import sizing


def _v2(root: Path, cpu_max: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def test_cgroup_v2_quota_in_a_container_namespace(tmp_path: Path) -> None:
    none = tmp_path / "proc-cgroup"
    none.write_text("0::/\n")
    assert sizing.cgroup_cpu_limit(_v2(tmp_path / "a", "400000 100000"), none) == 4.0
    assert sizing.cgroup_cpu_limit(_v2(tmp_path / "b", "150000 100000"), none) == 1.5
    assert sizing.cgroup_cpu_limit(_v2(tmp_path / "c", "max 100000"), none) is None


def test_cgroup_v2_quota_of_the_process_own_cgroup_outside_a_namespace(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _v2(root / "kubepods.slice" / "pod1" / "triton", "250000 100000")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/kubepods.slice/pod1/triton\n")
    assert sizing.cgroup_cpu_limit(root, proc) == 2.5


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    folder = tmp_path / "cpu,cpuacct"
    folder.mkdir()
    (folder / "cpu.cfs_quota_us").write_text("300000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    missing = tmp_path / "nothing"
    assert sizing.cgroup_cpu_limit(tmp_path, missing) == 3.0
    (folder / "cpu.cfs_quota_us").write_text("-1\n")  # no limit
    assert sizing.cgroup_cpu_limit(tmp_path, missing) is None
    assert sizing.cgroup_cpu_limit(tmp_path / "empty", missing) is None


def test_available_cpus_is_the_smaller_of_affinity_and_quota_rounded_up(tmp_path: Path) -> None:
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/\n")
    affinity = len(os.sched_getaffinity(0))
    assert sizing.available_cpus(_v2(tmp_path / "a", "150000 100000"), proc) == min(affinity, 2)
    assert sizing.available_cpus(_v2(tmp_path / "b", "max 100000"), proc) == affinity
    assert sizing.available_cpus(_v2(tmp_path / "c", "10000 100000"), proc) == 1  # a tenth of a CPU: still one


def test_affinity_of_a_real_process_is_read() -> None:
    """A child pinned to one CPU with sched_setaffinity (what a cpuset does) sizes for one."""
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
    code += "from dfserve.triton import sizing; print(sizing.affinity_cpus(), sizing.preprocess_instances(cap=64))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    affinity, instances = map(int, out.stdout.split())
    assert affinity == 1
    assert instances <= 1


def test_preprocess_instances_are_capped_and_shm_follows() -> None:
    assert sizing.preprocess_instances(224) == sizing.MAX_PREPROCESS_INSTANCES  # the 224-core build host of issue 29
    assert sizing.preprocess_instances(4) == 4
    assert sizing.preprocess_instances(0) == 1
    with pytest.raises(ValueError, match="cap"):
        sizing.preprocess_instances(4, cap=0)
    assert sizing.shm_bytes(32) > sizing.shm_bytes(4) > sizing.SHM_BASE_BYTES
    assert math.isclose(sizing.shm_bytes(32) / 2**20, 64 + 33 * 16)


def test_serve_accepts_auto_and_counts(tmp_path: Path) -> None:
    assert sizing.instances_arg("3") == 3
    assert sizing.instances_arg("auto") == sizing.preprocess_instances()
    for bad in ("0", "-2", "many"):
        with pytest.raises(argparse.ArgumentTypeError):
            sizing.instances_arg(bad)
    from dfserve.cli import build_parser

    args = build_parser().parse_args(["serve", "--repository", str(tmp_path), "--preprocess-instances", "auto"])
    assert args.preprocess_instances == sizing.preprocess_instances()


def test_module_prints_the_decision() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dfserve.triton.sizing", "--cap", "1"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "preprocess_instances=1 " in out.stdout and f"shm_bytes={sizing.shm_bytes(1)}" in out.stdout
