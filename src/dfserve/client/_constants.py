"""Every default and literal type of the SDK in one place, importable without numpy, Pillow or tritonclient
(the CLI builds its --help from these)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from dfserve.spec.endpoints import DEFAULT_PORTS, PROTOCOLS
from dfserve.spec.endpoints import Protocol as ProtocolName
from dfserve.spec.names import MODES, Mode

__all__ = ["DEFAULT_PORTS", "MODES", "PROTOCOLS", "Mode", "ProtocolName"]

ProgressCallback: TypeAlias = Callable[[int, int], None]
"""Called as ``progress(done, total)`` after each item of `classify_many` finishes, success or not."""


# Every default in one place (openai-python's `_constants.py`).
DEFAULT_URL = "localhost:8000"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES: int | None = 2
"""openai-python's default: a transient failure (connection refused, 503, 429, a restarting stub) is retried
twice, 0.5 s then 1 s later (less jitter), so a server that is not there fails in about 1.5 s. None retries until
the call's timeout runs out (to ride out a server restart)."""
DEFAULT_CONCURRENCY = 8
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 60.0
"""A server's ``Retry-After`` is honoured up to this many seconds (openai-python's bound); beyond it, or when the
value cannot be read, the SDK's own backoff applies."""
