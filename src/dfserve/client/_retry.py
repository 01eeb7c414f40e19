"""When the SDK tries a call again: openai-python's defaults (two retries, exponential backoff with jitter, a
server's Retry-After honoured), bounded by the call's own timeout, and logged at INFO.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from dfserve.client._constants import (
    DEFAULT_MAX_RETRIES,
    INITIAL_RETRY_DELAY,
    MAX_RETRY_AFTER,
    MAX_RETRY_DELAY,
)
from dfserve.client._exceptions import (
    DfserveClientError,
)

MAX_JITTER = 0.25
"""Each backoff is shortened by up to this share at random, so clients that failed together do not retry together."""


class Unset:
    """The type of `UNSET`: a per-call argument not given (None already means "retry until the timeout")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


@dataclass(frozen=True)
class RetryPolicy:
    """Which errors are retried, and after how long.

    Only transient errors are retried (`DfserveClientError.retryable`: connection failures, UNAVAILABLE, HTTP
    429/502/503, a Python-backend stub being restarted; and a model not found while the server says it is not
    ready, i.e. restarting), never a refused input or a timeout. As in openai-python: `max_retries` retries (2 by
    default), after the server's ``Retry-After`` where it sends one (up to `MAX_RETRY_AFTER` s), else after
    0.5 s, 1 s, 2 s ... up to 8 s, each shortened by up to 25% at random; never past the call's deadline.
    ``max_retries=None`` retries until that deadline: a call then rides out a restart that fits in its `timeout`.
    """

    max_retries: int | None = DEFAULT_MAX_RETRIES
    initial_delay: float = INITIAL_RETRY_DELAY
    max_delay: float = MAX_RETRY_DELAY
    jitter: float = MAX_JITTER

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        base = min(self.initial_delay * 2**attempt, self.max_delay)
        return base * (1 - self.jitter * rand())

    def next_delay(
        self,
        error: DfserveClientError,
        attempt: int,
        remaining: float,
        rand: Callable[[], float] = random.random,
        *,
        transient: bool = False,
    ) -> float | None:
        """Seconds to wait before retry number `attempt + 1`, or None to give up and raise `error`.

        `transient` retries an error that is final on a healthy server (the model not found) because the server
        said it is not ready: it is starting, stopping or reloading, and will answer again."""
        if not (error.retryable or transient):
            return None
        if self.max_retries is not None and attempt >= self.max_retries:
            return None
        asked = error.retry_after
        wait = asked if asked is not None and 0 < asked <= MAX_RETRY_AFTER else self.delay(attempt, rand)
        return wait if wait < remaining else None


LOG = logging.getLogger("dfserve.client")


def log_retry(error: DfserveClientError, attempt: int, wait: float) -> None:
    """Every retry is logged (logger `dfserve.client`, level INFO as openai-python's), so a service that asks
    sees a restart it rode out; the final error, if it comes, is raised, not logged."""
    LOG.info("retry %d in %.2f s after %s: %s", attempt + 1, wait, type(error).__name__, error)
