"""Writing a model repository safely: one build at a time, staged beside what is served, and a private snapshot
for the server.

- One build per folder. `BuildLock` takes an exclusive ``flock`` on ``<out>/.dfserve-build.lock`` (inside the
  folder, not beside it: in Kubernetes the repository is a volume's root, whose parent is not writable). A second
  build into the same folder is refused at once, naming the pid that holds it; the kernel releases the lock when
  its holder dies, so a killed build never blocks the next one.
- Staged. The build writes the whole repository into ``<out>/.dfserve-staging-<pid>`` (the same filesystem, so
  moving it is a rename) and only then moves each entry into place, swapping the old one out in one atomic
  ``renameat2(RENAME_EXCHANGE)`` where Linux has it. A build that fails while writing (a full disk) leaves the old
  repository as it was; a staging folder left by a killed build is removed by the next one, which holds the lock
  and so knows no one else is writing it.
- Pinned. `dfserve serve` gives Triton a private snapshot (`snapshot`: hard links where the filesystem allows,
  copies otherwise, dot-entries such as a staging folder left out), so a build into the served folder changes
  nothing the server loads until it is started again: not even the restart after a dead stub or a crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import shutil
from pathlib import Path
from types import TracebackType

from dfserve.errors import OutputError

LOCK_FILENAME = ".dfserve-build.lock"
STAGING_PREFIX = ".dfserve-staging-"


class BuildLock:
    """``with BuildLock(out):`` — this process is the only build writing `out`, or OutputError names the one that is."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self._fd: int | None = None

    def __enter__(self) -> BuildLock:
        self.out.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.out / LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OutputError(
                f"another dfserve build (pid {holder}) is writing {self.out}; wait for it to finish or choose "
                "another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; the file stays (removing it would race a waiting build)
            self._fd = None


def build_holder(out: Path) -> int | None:
    """The pid of the build writing `out` now, or None when no build holds its lock."""
    try:
        fd = os.open(Path(out) / LOCK_FILENAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)
    return None


def remove_leftovers(out: Path) -> list[Path]:
    """Staging folders that killed builds left in `out` (call with the lock held); what was removed."""
    removed = []
    for path in Path(out).glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def new_staging(out: Path) -> Path:
    path = Path(out) / f"{STAGING_PREFIX}{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(result == 0)


def commit(staging: Path, out: Path, order: list[str]) -> None:
    """Move the staged entries named in `order` into `out` in that order (the report last: its presence says the
    build is complete), each replacing the old one in one step; then remove the staging folder."""
    for name in order:
        new, old = staging / name, Path(out) / name
        if not new.exists():
            continue
        if old.exists() and _exchange(new, old):  # `new` now holds the old entry
            if new.is_dir() and not new.is_symlink():
                shutil.rmtree(new)
            else:
                new.unlink()
            continue
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        os.replace(new, old)
    shutil.rmtree(staging, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def snapshot(repository: Path, destination: Path, *, skip: frozenset[str] = frozenset()) -> None:
    """A private copy of `repository` in `destination` (created): hard links to its files where the filesystem
    allows (builds replace files, never rewrite them, so a link keeps the old content), copies otherwise.
    Dot-entries (locks, staging folders) and the names in `skip` are left out; symlinks are followed."""
    destination.mkdir(parents=True)
    for entry in sorted(Path(repository).iterdir()):
        if entry.name.startswith(".") or entry.name in skip:
            continue
        target = destination / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, copy_function=_link_or_copy, symlinks=False)
        elif entry.is_file():
            _link_or_copy(str(entry), str(target))


def snapshot_parent(repository: Path, fallback: Path) -> Path:
    """Where a snapshot of `repository` can be hard links: `fallback` (a temp folder) when it is on the same
    filesystem, else the repository's parent when writable; else `fallback` (then files are copied)."""
    with contextlib.suppress(OSError):
        if os.stat(fallback).st_dev == os.stat(repository).st_dev:
            return fallback
        parent = Path(repository).resolve().parent
        if os.access(parent, os.W_OK):
            return parent
    return fallback
