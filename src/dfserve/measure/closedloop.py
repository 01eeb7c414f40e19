"""The one closed loop every measurement runs: threads calling the SDK (or an engine) one request after another
(each sends its next request when its previous one returns), every outcome kept. The soak runs it for hours and
reads it window by window; the bench and the tune run it for a few seconds at a time (`run_for`); the short step
ramp here finds the knee to run the soak at.

Every request is accounted for: it ends in a result or in an explicit error of the SDK (its timeout bounds
each call, retries included); one that is still running `timeout + HUNG_GRACE_S` after it was sent is
counted as hung, and so is one that returned that late.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dfserve.client import DfserveClientError
from dfserve.errors import MeasureError, SoakError
from dfserve.measure.knee import StepFigures, find_knee, steps_past_knee
from dfserve.measure.stats import percentile

HUNG_GRACE_S = 5.0
"""How long past its timeout a request may take before it counts as hung (thread scheduling on a busy host)."""
RAMP_LEVELS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
RAMP_PATIENCE = 2
"""Steps past the knee before the ramp stops."""
RAMP_MIN_REQUESTS = 40
RAMP_MAX_STRETCH = 6.0


@dataclass(frozen=True)
class Outcome:
    """One finished request: when it ended, how long it took, and its error class (None: a result)."""

    done_at: float
    latency_s: float
    error: str | None = None
    message: str = ""


class ClosedLoop:
    """`target` threads, each calling `call(item)` on the items in turn until told to stop; every outcome is kept.
    `name(item)` labels an item in error messages."""

    def __init__(
        self,
        call: Callable[[Any], object],
        items: Sequence[Any],
        timeout_s: float,
        name: Callable[[Any], str] = lambda item: str(getattr(item, "name", type(item).__name__)),
    ) -> None:
        if not items:
            raise MeasureError("no items to send")
        self._call = call
        self._items = list(items)
        self._name = name
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._next = itertools.count()
        self._outcomes: list[Outcome] = []
        self._in_flight: dict[int, float] = {}
        self._threads: list[threading.Thread] = []
        self._target = 0
        self.sent = 0

    @property
    def target(self) -> int:
        return self._target

    def set_target(self, users: int) -> None:
        """Run `users` threads (threads above it stop after their current request)."""
        self._target = users
        self._threads = [t for t in self._threads if t.is_alive()]
        running = {int(t.name.rsplit("-", 1)[1]) for t in self._threads}
        for index in range(users):
            if index not in running:
                thread = threading.Thread(target=self._run, args=(index,), name=f"dfserve-soak-{index}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def _run(self, index: int) -> None:

        while index < self._target:
            with self._lock:
                token = next(self._next)
                item = self._items[token % len(self._items)]
                self.sent += 1
                started = time.monotonic()
                self._in_flight[token] = started
            error, message = None, ""
            try:
                self._call(item)
            except DfserveClientError as exc:
                error, message = type(exc).__name__, f"{self._name(item)}: {exc}"
            except Exception as exc:  # not the SDK's contract, but still this request's answer: count it
                error, message = f"unexpected {type(exc).__name__}", f"{self._name(item)}: {exc}"
            done = time.monotonic()
            if error is None and done - started > self._timeout_s + HUNG_GRACE_S:
                error, message = "PastTimeout", f"{self._name(item)}: answered after {done - started:.1f}s"
            with self._lock:
                del self._in_flight[token]
                self._outcomes.append(Outcome(done, done - started, error, message[:300]))

    def take(self) -> list[Outcome]:
        """The outcomes finished since the last call."""
        with self._lock:
            out, self._outcomes = self._outcomes, []
        return out

    def overdue(self, now: float) -> int:
        """Requests in flight for longer than their timeout plus the grace: hung so far."""
        with self._lock:
            return sum(1 for t in self._in_flight.values() if now - t > self._timeout_s + HUNG_GRACE_S)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def drain(self) -> int:
        """Stop every thread and wait for its request (at most timeout + grace); how many are still hung."""
        self._target = 0
        deadline = time.monotonic() + self._timeout_s + HUNG_GRACE_S
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]
        return self.in_flight()


def step_figures(outcomes: Sequence[Outcome], users: int, duration_s: float) -> StepFigures:
    latencies = sorted(o.latency_s * 1000 for o in outcomes if o.error is None)
    return StepFigures(
        users=users,
        duration_s=round(duration_s, 3),
        requests=len(outcomes),
        failures=sum(1 for o in outcomes if o.error is not None),
        rps=len(latencies) / duration_s if duration_s > 0 else 0.0,
        p50_ms=percentile(latencies, 0.5) or 0.0,
        p90_ms=percentile(latencies, 0.9) or 0.0,
        p99_ms=percentile(latencies, 0.99) or 0.0,
    )


def find_concurrency(
    loop: ClosedLoop,
    step_s: float,
    max_users: int,
    on_step: Callable[[StepFigures], None] | None = None,
    settle_s: float = 2.0,
    patience: int = RAMP_PATIENCE,
    min_requests: int = RAMP_MIN_REQUESTS,
) -> tuple[int, list[StepFigures], dict[str, Any] | None, dict[str, Any]]:
    """A short step ramp through `RAMP_LEVELS` up to `max_users`; stops `patience` steps past the knee (as
    Locust's step ramp does: one noisy step does not end it) or at a failure.

    A step lasts `step_s` and until `min_requests` requests have finished (at most `RAMP_MAX_STRETCH` times
    `step_s`): on a slow model a fixed few seconds would hold too few requests to compare throughputs.
    Returns the knee's concurrency (the last level when throughput was still growing), the steps, the knee, and
    the ramp's own accounting (every request it sent, settling and draining included)."""
    steps: list[StepFigures] = []
    seen: list[Outcome] = []
    sent_before = loop.sent
    for users in [u for u in RAMP_LEVELS if u <= max_users] or [max_users]:
        loop.set_target(users)
        time.sleep(settle_s)
        seen += loop.take()
        started = time.monotonic()
        measured: list[Outcome] = []
        while True:
            time.sleep(min(step_s, 1.0))
            measured += loop.take()
            elapsed = time.monotonic() - started
            if elapsed >= step_s and (len(measured) >= min_requests or elapsed >= step_s * RAMP_MAX_STRETCH):
                break
        seen += measured
        step = step_figures(measured, users, time.monotonic() - started)
        steps.append(step)
        if on_step is not None:
            on_step(step)
        if step.failures or steps_past_knee(steps) >= patience:
            break
    hung = loop.drain()
    seen += loop.take()
    errors = Counter(o.error for o in seen if o.error is not None)
    if hung:
        errors["Hung"] += hung
    first_errors = [o.message for o in seen if o.error is not None][:5]
    accounting = {
        "sent": loop.sent - sent_before,
        "ok": sum(1 for o in seen if o.error is None),
        "failed": sum(errors.values()),
        "errors": dict(errors),
        "first_errors": first_errors,
    }
    knee = find_knee(steps)
    if knee is None:
        raise SoakError(
            "the ramp found no throughput at all: every request failed; first errors: " + "; ".join(first_errors)
        )
    return knee.users, steps, knee.as_dict(), accounting


@dataclass(frozen=True)
class LoopRun:
    """What `run_for` measured: requests answered, wall and client CPU seconds, each answered request's latency
    (seconds), and the failed requests."""

    requests: int
    seconds: float
    cpu_s: float
    latencies_s: list[float]
    failures: list[Outcome]


def run_for(
    call: Callable[[Any], object], items: Sequence[Any], concurrency: int, seconds: float, *, timeout_s: float = 600.0
) -> LoopRun:
    """`concurrency` callers in a closed loop for `seconds`; each caller's last request is waited for, so every
    request sent is counted and the elapsed time covers them."""
    loop = ClosedLoop(call, items, timeout_s)
    cpu, start = time.process_time(), time.perf_counter()
    loop.set_target(concurrency)
    time.sleep(seconds)
    loop.drain()
    elapsed = time.perf_counter() - start
    outcomes = loop.take()
    ok = [o.latency_s for o in outcomes if o.error is None]
    return LoopRun(len(ok), elapsed, time.process_time() - cpu, ok, [o for o in outcomes if o.error is not None])
