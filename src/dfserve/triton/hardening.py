"""The launcher's defences: restricted APIs behind a key, strong keys only, the key erased from the child's
command line once Triton has parsed it, and the request-size bound derived from the served spec.
"""

from __future__ import annotations

import re
from pathlib import Path

from dfserve.errors import ServerError
from dfserve.spec.model import ModelSpec
from dfserve.spec.names import (
    SPEC_FILENAME,
)

SHM_OFF_HEADER = "dfserve-shared-memory-is-off"


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
