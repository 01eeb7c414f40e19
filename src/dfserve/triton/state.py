"""What a launcher leaves behind for the next one: a state file per server naming its processes and its
shared-memory regions, so that a SIGKILLed launcher's server and regions are cleaned up at the next start.

The next launcher acts on what it reads, so what it reads must be its own and is checked before anything is
done (issue 22: a folder another user pre-created made the victim's launcher delete any file it could and kill
any of its processes):

- the folder (`STATE_DIR`, per user: ``$TMPDIR/dfserve-state-<uid>``) must be a real directory owned by this user
  with no access for others (0700); anything else is refused with the reason, and nothing in it is read;
- a region is removed only when its name is a Python-backend region name (`REGION_NAME`, a plain name under
  /dev/shm, no path) and the file there is a regular file owned by this user;
- a process is killed only when its recorded identity (start time from ``/proc/PID/stat``, executable from
  ``/proc/PID/exe``) still matches: a pid reused by another program is never hit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from dfserve.errors import ServerError

STATE_DIR = Path(tempfile.gettempdir()) / f"dfserve-state-{os.geteuid()}"
"""One JSON file per running server: launcher pid, server pid (= its process group), stub regions; one folder
per user, mode 0700, refused when another user owns it."""

REGION_NAME = re.compile(r"triton_python_backend_shm_region_[A-Za-z0-9_.-]+")
"""The names the Python backend gives its stubs' regions (a prefix and a UUID), the only names ever removed."""


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _process_group(pid: int) -> int | None:
    fields = _stat_fields(pid)
    try:
        return int(fields[2]) if fields else None
    except (ValueError, IndexError):
        return None


def identity(pid: int) -> dict[str, object] | None:
    """What tells process `pid` from a later one given the same pid: its start time (clock ticks after boot,
    field 22 of /proc/PID/stat) and its executable. None when it is gone."""
    fields = _stat_fields(pid)
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    if fields is None or len(fields) < 20:
        return None
    return {"pid": pid, "start": int(fields[19]), "exe": exe}


def _matches(record: object) -> int | None:
    """The pid of `record` when a live process still has exactly that identity; else None."""
    if not isinstance(record, dict):
        return None
    pid = record.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return None
    now = identity(pid)
    if now is None or not _alive(pid) or now != {"pid": pid, "start": record.get("start"), "exe": record.get("exe")}:
        return None
    return pid


def state_dir(create: bool = True) -> Path:
    """`STATE_DIR`, created 0700 when missing; refused (ServerError naming why) unless it is a real directory
    owned by this user that no one else may read or write."""
    if create:
        with contextlib.suppress(FileExistsError):
            STATE_DIR.mkdir(mode=0o700)
    try:
        info = STATE_DIR.lstat()
    except FileNotFoundError:
        return STATE_DIR
    if not stat.S_ISDIR(info.st_mode):
        raise ServerError(f"{STATE_DIR} (dfserve's state folder) is not a directory; remove it")
    if info.st_uid != os.geteuid():
        raise ServerError(
            f"{STATE_DIR} (dfserve's state folder) belongs to uid {info.st_uid}, not to you: someone else made "
            "it, so nothing in it is trusted; remove it (as its owner or root) and start again"
        )
    if info.st_mode & 0o077:
        raise ServerError(
            f"{STATE_DIR} (dfserve's state folder) has mode {info.st_mode & 0o777:04o}; others could plant files "
            f"in it, so nothing in it is trusted: `chmod 700 {STATE_DIR}` after checking what is in it"
        )
    return STATE_DIR


def write_state(name: str, processes: Iterable[int], regions: Iterable[str]) -> Path:
    """Record this launcher, the processes it started (their identities) and their regions in
    ``STATE_DIR/<name>.json`` (mode 0600, replaced atomically); the path."""
    folder = state_dir()
    state = {
        "launcher": identity(os.getpid()),
        "processes": [i for i in (identity(pid) for pid in processes) if i is not None],
        "regions": sorted(r for r in regions if REGION_NAME.fullmatch(r)),
    }
    path = folder / f"{name}.json"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle)
    os.replace(tmp, path)
    return path


def remove_region(name: str) -> bool:
    """Unlink /dev/shm/`name` when it is a Python-backend region name and a regular file of this user."""
    if not isinstance(name, str) or not REGION_NAME.fullmatch(name):
        return False
    path = f"/dev/shm/{name}"
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return False
        os.unlink(path)
    except OSError:
        return False
    return True


def clean_leftovers() -> list[str]:
    """Kill the processes and remove the /dev/shm regions that dead launchers left; what was cleaned.
    The processes are tritonserver's (with its stubs) and the reverse proxy's (`dfserve.triton.proxy`, nginx).
    Raises ServerError when the state folder is not private to this user (module docstring)."""
    cleaned: list[str] = []
    folder = state_dir(create=False)
    if not folder.is_dir():
        return cleaned
    for path in folder.glob("*.json"):
        try:
            state = json.loads(path.read_text())
            launcher, processes, regions = state["launcher"], list(state["processes"]), list(state["regions"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # unreadable, or an older format: nothing in it is acted on
            continue
        if _matches(launcher) is not None:
            continue  # a running launcher's server (this process's own included) is not a leftover
        for record in processes:
            pid = _matches(record)
            if pid is None:
                continue
            group = _process_group(pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if group == pid:  # a recorded group leader: its whole group (stubs started after the record too)
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            cleaned.append(f"process {pid}")
        for name in regions:
            if remove_region(name):
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
        found |= {a.decode() for a in args if REGION_NAME.fullmatch(a.decode(errors="replace"))}
    return found
