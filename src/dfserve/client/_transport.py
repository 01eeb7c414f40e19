"""What the SDK adds to tritonclient's transports, with no tritonclient import at module level: request ids,
reading ``Retry-After``, and the per-call deadline of the synchronous HTTP client.

tritonclient gives only gRPC a per-call timeout (``client_timeout``); its HTTP clients fix theirs when they are
built, and its ``timeout=`` on `infer` is a server-side queue timeout (microseconds) that a frozen server never
applies. So the SDK bounds each HTTP call itself: the async client with `asyncio.wait_for` (cancelling an aiohttp
request closes its connection), the sync client with a `gevent.Timeout` around the call in the connection's own
thread (geventhttpclient's sockets wait in gevent's hub, where the timer fires); the connection that timed out
is then discarded (`CallTimeout.discard_connection`), because it may hold half a response.

tritonclient's HTTP clients turn an error answer into an exception from its body alone, dropping the headers; the
subclasses in `dfserve.client._http` keep ``Retry-After`` on that exception (`retry_after`), where `map_error`
finds it.
"""

from __future__ import annotations

import email.utils
import math
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from dfserve.client._errors import CallTimeout

T = TypeVar("T")

RETRY_AFTER_STATUSES = (429, 503)
"""The answers whose ``Retry-After`` the SDK reads (the statuses RFC 9110 gives it meaning for, bar 3xx)."""


def new_request_id() -> str:
    """A request id Triton accepts (its request ``id``), echoes in its answer and logs; the SDK puts it in every
    error of that call and in the `Prediction`, so that a caller's log line can be found in the server's."""
    return uuid.uuid4().hex[:16]


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a ``Retry-After`` value: delay-seconds or an HTTP-date (RFC 9110 §10.2.3); None when absent
    or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def within(seconds: float, fn: Callable[[Any], T]) -> Callable[[Any], T]:
    """`fn(tritonclient)` bounded by `seconds`, for the synchronous HTTP client: run in the connection thread,
    where gevent's hub drives the socket, so a `gevent.Timeout` interrupts a read that never returns."""

    def bounded(triton: Any) -> T:
        import gevent

        timer = gevent.Timeout(max(seconds, 0.001))
        timer.start()
        try:
            return fn(triton)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            raise CallTimeout(f"no answer within {seconds:g} s") from None
        finally:
            timer.close()

    return bounded
