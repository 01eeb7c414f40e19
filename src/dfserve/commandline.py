"""What every command's parser shares: argument types and the message for a missing extra. Kept at the bottom of
the package so that each area's `cli` module can use it without importing the `dfserve` command itself.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path


def missing_extra_message(command: str, package: str | None) -> str:
    """One line naming the extra to install; plain text (no console markup, which would eat `[build]`)."""
    extra = COMMAND_EXTRAS.get(command, "all")
    install = f"pip install 'dfserve[{extra}]'" if extra else "pip install dfserve"
    return f"error: `dfserve {command}` needs the package {package!r}, which is not installed; run: {install}"


def positive_ints(text: str) -> tuple[int, ...]:
    """argparse type for comma-separated positive integers, e.g. batch sizes or a concurrency sweep ("4,8,16")."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


# The extra that brings each command's third-party packages (`pip install 'dfserve[EXTRA]'`).
COMMAND_EXTRAS: dict[str, str] = {
    "build": "build",
    "serve": "server",
    "classify": "",
    "eval": "eval",
    "loadtest": "loadtest",
    "bench": "all",
    "soak": "loadtest",
    "demo": "all",
    "verify": "build",
}


def default_out_dir(base: Path | None = None, prefix: str = "loadtest") -> Path:
    """A new folder under `base` (default: the current directory) named after the command and the time."""
    root = base or Path.cwd()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = root / f"{prefix}-{stamp}"
    n = 1
    while candidate.exists():
        n += 1
        candidate = root / f"{prefix}-{stamp}-{n}"
    return candidate
