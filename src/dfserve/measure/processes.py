"""The processes of a running tritonserver, sampled one way for every measurement: the resident set and CPU time
of the server and of each of its children (one Python-backend stub per model instance), and the /dev/shm regions
they have mapped. The soak samples the whole picture (`sample_tree`), the bench and the tune the totals
(`process_tree_rss`, `process_tree_cpu`, `MemorySampler`).

Regions are found through ``/proc/PID/maps`` of every process in the tree rather than by name, so that the
stubs' own regions (``triton_python_backend_shm_region_*``) and any region a client registered with the
server are both counted, and a region left in /dev/shm by a process that is gone is not. Their size is what
tmpfs has allocated (``st_blocks``), not the sparse length they were created with. Mapped pages are also part
of the resident set of each process that touched them, so RSS and shared memory overlap; the soak reports
both and judges growth on the RSS total.

Reading another user's ``/proc/PID/maps`` needs the same user (or root): a process that cannot be read is
named in `unreadable` rather than counted as zero.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHM_DIR = "/dev/shm"


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    name: str
    """``tritonserver``, ``stub <model>`` for a Python-backend stub, else the process name."""
    rss_bytes: int


@dataclass(frozen=True)
class TreeMemory:
    """One sample of a server's memory; `alive` False when the server process is gone."""

    alive: bool
    processes: tuple[ProcessMemory, ...] = ()
    shm_regions: dict[str, int] = field(default_factory=dict)
    """/dev/shm name -> bytes allocated by tmpfs."""
    unreadable: tuple[int, ...] = ()

    @property
    def rss_bytes(self) -> int:
        return sum(p.rss_bytes for p in self.processes)

    @property
    def shm_bytes(self) -> int:
        return sum(self.shm_regions.values())

    @property
    def stubs(self) -> int:
        return sum(1 for p in self.processes if p.name.startswith("stub "))

    def as_dict(self) -> dict[str, Any]:
        return {
            "alive": self.alive,
            "rss_bytes": self.rss_bytes,
            "shm_bytes": self.shm_bytes,
            "processes": [p.__dict__ for p in self.processes],
            "shm_regions": dict(sorted(self.shm_regions.items())),
            "unreadable": list(self.unreadable),
        }


def process_label(cmdline: list[str], name: str) -> str:
    """A person's name for one process of the tree: a stub is named after its model (its first argument is
    ``<repository>/<model>/<version>/model.py``)."""
    if cmdline and cmdline[0].endswith("triton_python_backend_stub") and len(cmdline) > 1:
        model_file = Path(cmdline[1])
        return f"stub {model_file.parent.parent.name}" if model_file.name.endswith(".py") else "stub"
    return name


def mapped_shm(pid: int) -> set[str]:
    """Names of the /dev/shm files that process `pid` has mapped (raises OSError when it cannot be read)."""
    names = set()
    with open(f"/proc/{pid}/maps") as fh:
        for line in fh:
            parts = line.split(None, 5)
            if len(parts) == 6:
                path = parts[5].strip()
                if path.startswith(SHM_DIR + "/"):
                    names.add(path[len(SHM_DIR) + 1 :].removesuffix(" (deleted)"))
    return names


def shm_allocated(name: str) -> int | None:
    """Bytes tmpfs holds for /dev/shm/`name`; None when it is gone (unlinked while still mapped)."""
    try:
        return os.stat(os.path.join(SHM_DIR, name)).st_blocks * 512
    except OSError:
        return None


def tree(pid: int) -> list[Any]:
    """`pid` first, then its descendants, as psutil processes; empty when `pid` is gone. The one walk of a server's
    process tree: every figure here is taken over it."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def sample_tree(pid: int) -> TreeMemory:
    """The memory of `pid` and all its descendants now."""
    import psutil

    procs = tree(pid)
    if not procs or procs[0].status() == psutil.STATUS_ZOMBIE:
        return TreeMemory(alive=False)
    out: list[ProcessMemory] = []
    regions: set[str] = set()
    unreadable: list[int] = []
    for proc in procs:
        try:
            rss = proc.memory_info().rss
            label = process_label(proc.cmdline(), proc.name())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        except psutil.AccessDenied:
            unreadable.append(proc.pid)
            continue
        out.append(ProcessMemory(proc.pid, label, int(rss)))
        try:
            regions |= mapped_shm(proc.pid)
        except FileNotFoundError:
            continue
        except PermissionError:
            unreadable.append(proc.pid)
    sizes = {name: size for name in regions if (size := shm_allocated(name)) is not None}
    return TreeMemory(alive=True, processes=tuple(out), shm_regions=sizes, unreadable=tuple(unreadable))


def process_count(pid: int) -> int:
    """How many processes the tree of `pid` holds (tritonserver plus one stub per Python model instance)."""
    return len(tree(pid))


def _sum_over_tree(pid: int, figure: Callable[[Any], float]) -> float:
    """`figure(process)` summed over `pid` and its live descendants (processes that vanish meanwhile are skipped)."""
    import psutil

    total = 0.0
    for proc in tree(pid):
        try:
            total += figure(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` and its live descendants."""
    return _sum_over_tree(pid, lambda p: p.cpu_times().user + p.cpu_times().system)


def process_tree_rss(pid: int) -> int:
    """RSS in bytes of `pid` and all its descendants."""
    return int(_sum_over_tree(pid, lambda p: p.memory_info().rss))


@dataclass
class MemorySampler:
    """Samples the tree's RSS on a background thread; `peak` is the highest value seen."""

    pid: int
    interval_s: float = 0.2
    peak: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> MemorySampler:
        self.peak = process_tree_rss(self.pid)
        self._thread = threading.Thread(target=self._run, name="dfserve-rss", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, process_tree_rss(self.pid))
            self.samples += 1

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.peak = max(self.peak, process_tree_rss(self.pid))
