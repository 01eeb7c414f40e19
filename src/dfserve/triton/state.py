"""What a launcher leaves behind for the next one: a state file per server naming its process group and its
shared-memory regions, so that a SIGKILLed launcher's server and regions are cleaned up at the next start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
from pathlib import Path

STATE_DIR = Path(tempfile.gettempdir()) / "dfserve-state"
"""One JSON file per running server: launcher pid, server pid (= its process group), stub regions."""


def _process_group(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _group_members(pgid: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _process_group(int(p.name)) == pgid]


def clean_leftovers(state_dir: Path = STATE_DIR) -> list[str]:
    """Kill the process groups and remove the /dev/shm regions that dead launchers left; what was cleaned.
    The groups are tritonserver's (with its stubs) and the reverse proxy's (`dfserve.triton.proxy`, nginx).

    A group is killed only while its leader or members still run the recorded tritonserver or stub binaries,
    so a reused pid is never hit."""
    cleaned: list[str] = []
    if not state_dir.is_dir():
        return cleaned
    for path in state_dir.glob("*.json"):
        try:
            state = json.loads(path.read_text())
            launcher, pgid, regions = int(state["launcher"]), int(state["pgid"]), list(state["regions"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if _alive(launcher) and _group_members(pgid):
            continue  # a running launcher's server (this process's own included) is not a leftover
        for member in _group_members(pgid):
            try:
                cmd = Path(f"/proc/{member}/cmdline").read_bytes()
            except OSError:
                continue
            if b"tritonserver" in cmd or b"triton_python_backend_stub" in cmd or cmd.startswith(b"nginx: "):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(member, signal.SIGKILL)
                cleaned.append(f"process {member}")
        for name in regions:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/dev/shm/{name}")
                cleaned.append(f"/dev/shm/{name}")
        path.unlink(missing_ok=True)
    return cleaned


def stub_shm_regions(pid: int) -> set[str]:
    """System shared-memory regions of the Python-backend stubs of server `pid` (named on their command lines)."""
    found: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) != pid:
                continue
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        found |= {a.decode() for a in args if a.startswith(b"triton_python_backend_shm_region_")}
    return found
