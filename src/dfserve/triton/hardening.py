"""The launcher's defences: restricted APIs behind a key, strong keys only, the key erased from the child's
command line once Triton has parsed it, and the request-size bound derived from the served spec.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from dfserve.errors import ServerError, ServerStartError
from dfserve.spec.model import ModelSpec
from dfserve.spec.names import (
    SPEC_FILENAME,
)

SHM_OFF_HEADER = "dfserve-shared-memory-is-off"
"""Header of the shared-memory APIs while they are off (`allow_shared_memory=False`): its value is random and
told to no one, so Triton refuses every registration, naming this header (and so the reason) in its answer."""


RESTRICTED_APIS: tuple[str, ...] = ("model-repository", "shared-memory", "logging", "trace")
"""Triton APIs behind the admin key: they load/unload models, map caller memory, or write files on the host.
Health, metadata, model-config, inference and statistics stay open."""


DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
"""The request-body bound for a repository whose spec is unknown (no dfserve.json, or a container that serves
whatever the build wrote); a dfserve repository's own bound is `request_limit`."""


def request_limit(repository: str | Path) -> int:
    """The largest request body worth receiving for `repository`: its spec's `ModelSpec.max_request_bytes`,
    else `DEFAULT_MAX_REQUEST_BYTES`."""
    spec_path = Path(repository) / SPEC_FILENAME
    if not spec_path.is_file():
        return DEFAULT_MAX_REQUEST_BYTES

    try:
        return ModelSpec.load(Path(repository)).max_request_bytes
    except (OSError, ValueError):
        return DEFAULT_MAX_REQUEST_BYTES


MIN_KEY_CHARS = 16


MIN_KEY_DISTINCT = 8


def check_admin_key(key: str) -> None:
    """Refuse keys an attacker could guess: short ones and ones with few distinct characters (``aaaa...``,
    ``12121212...``); and characters that Triton's ``<apis>:<header>=<value>`` syntax would misread."""
    if not re.fullmatch(r"[A-Za-z0-9._~+/-]+", key):
        raise ServerError("the admin key must be letters, digits and ._~+/- only (Triton misreads ':', '=' and ',')")
    if len(key) < MIN_KEY_CHARS:
        raise ServerError(
            f"the admin key is too short ({len(key)} characters; at least {MIN_KEY_CHARS}): a weak key lets any "
            "client map host memory and reload models; leave it unset to have a strong one generated"
        )
    if len(set(key)) < MIN_KEY_DISTINCT:
        raise ServerError(
            f"the admin key has too little entropy ({len(set(key))} distinct characters; at least "
            f"{MIN_KEY_DISTINCT}); leave it unset to have a strong one generated"
        )


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _thread_count(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def scrub_argument(pid: int, secret: str) -> int:
    """Overwrite every occurrence of `secret` in process `pid`'s argument area with '*'; the number erased.

    ``/proc/PID/stat`` fields 48 and 49 (arg_start, arg_end) say where the arguments lie in the process's
    memory; ``/proc/PID/cmdline`` is read from there, so writing the same bytes through ``/proc/PID/mem`` is
    what ``ps`` shows afterwards."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    arg_start, arg_end = int(fields[45]), int(fields[46])  # fields 48, 49 counted from pid = 1
    needle = secret.encode()
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
        mem.seek(arg_start)
        area = mem.read(arg_end - arg_start)
        count = 0
        start = area.find(needle)
        while start >= 0:
            mem.seek(arg_start + start)
            mem.write(b"*" * len(needle))
            count += 1
            start = area.find(needle, start + len(needle))
    return count


def hide_key(
    process: subprocess.Popen[bytes], binary: Path, secrets: Sequence[str], log_path: Path | None, timeout: float = 30.0
) -> None:
    """Erase `secrets` (the admin key first) from the server's command line once Triton has parsed its options
    (`dfserve.triton.process`'s docstring says why and when)."""
    pid = process.pid
    deadline = time.monotonic() + timeout
    target = str(binary.resolve())
    while True:
        if process.poll() is not None:
            return  # it failed to start; the readiness wait reports why
        try:
            execed = os.readlink(f"/proc/{pid}/exe") == target
        except OSError:
            execed = False
        log_started = log_path is not None and log_path.is_file() and log_path.stat().st_size
        if execed and (_thread_count(pid) > 1 or log_started):
            break
        if time.monotonic() > deadline:
            raise ServerStartError(f"tritonserver (pid {pid}) did not get past option parsing in {timeout:.0f}s")
        time.sleep(0.002)
    try:
        for secret in secrets:
            scrub_argument(pid, secret)
        left = secrets[0].encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError as exc:
        if process.poll() is not None:
            return
        raise ServerStartError(
            f"cannot erase the admin key from tritonserver's command line ({exc}); the key would be readable "
            "by every local user (ps). Is ptrace restricted (kernel.yama.ptrace_scope > 1)?"
        ) from exc
    if left:
        raise ServerStartError("the admin key is still on tritonserver's command line after erasing it")
