"""Keeping `dfserve serve`'s tritonserver up: restarts after a crash or a dead stub, within a budget.

A server that crashed. One request must not take the service down for good: Triton 2.51 dies of SIGSEGV on
some bodies (`dfserve.triton.guard` refuses the one known, a deeply nested JSON body, but a crash of a
C++ server cannot be ruled out). The launcher therefore treats any exit it did not ask for as a crash: it
prints the reason (the signal's name, `dfserve.triton.logs.exit_headline`, not whatever the log said last)
and starts the server again on the same ports with the same key, after a backoff (0 s, then 1, 2, 4 ... up
to `MAX_BACKOFF_S`). A `RestartBudget` bounds it: more than `RESTARTS` restarts within `WINDOW_S` means the
crash is not a one-off (a model that cannot load, a host out of memory), and the launcher exits with the last
reason instead of looping. Meanwhile readiness is false: Triton's own ports refuse connections and the HTTP
front answers 503.

A server that heals or says it is sick. Triton 2.51 does not notice a dead Python-backend stub: the model and
the server keep answering ready while every request to that model fails with 500 "Stub process ... is not
healthy", and with ``--model-control-mode=none`` nothing can reload it. The launcher therefore records the
stubs (children of tritonserver) once the server is ready; `TritonServer.dead_stubs` finds one that is gone or
a zombie, and `TritonServer.restart` takes the whole server down (its process group, so no stub survives) and
starts it again on the same ports with the same key. Restarting the whole server was chosen over switching to
explicit model control and reloading one model: explicit mode opens model loading with uploaded files (code
execution through the Python backend) to whoever holds the key, and an ensemble's members cannot be reloaded
alone. While it restarts, connections are refused (a retryable error for every client; readiness probes fail).
Regions in /dev/shm are recorded at start too, because a dead stub's command line (where its region is named)
can no longer be read, and are removed at every stop. A state file per server (`dfserve.triton.state`) names
the process group and regions, so that the next launcher cleans up what a SIGKILLed one left.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from dfserve.errors import ServerError, ServerExitedError

if TYPE_CHECKING:  # `dfserve --help` imports this module (the defaults), so NumPy (the guard's) stays out
    from dfserve.triton.guard import HttpGuard
    from dfserve.triton.process import TritonServer
    from dfserve.triton.proxy import NginxProxy

LOG = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.5
"""How often the launcher checks tritonserver and its backend stubs; a dead stub is acted on within this."""

STOP_GRACE_S = 1.0
"""How long a server being restarted may finish requests in flight before it is killed."""

RESTARTS = 5
WINDOW_S = 600.0
MAX_BACKOFF_S = 30.0


class RestartBudget:
    """At most `restarts` restarts within any `window_s` seconds; `backoff` grows with the recent ones."""

    def __init__(self, restarts: int = RESTARTS, window_s: float = WINDOW_S) -> None:
        self.restarts = restarts
        self.window_s = window_s
        self._times: deque[float] = deque()

    def _recent(self, now: float) -> int:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        return len(self._times)

    def take(self) -> bool:
        """Spend one restart; False when the budget is used up."""
        now = time.monotonic()
        if self._recent(now) >= self.restarts:
            return False
        self._times.append(now)
        return True

    def backoff(self) -> float:
        """Seconds to wait before the restart just taken: 0 for the first in the window, then 1, 2, 4 ..."""
        recent = self._recent(time.monotonic())
        return 0.0 if recent <= 1 else min(MAX_BACKOFF_S, 2.0 ** (recent - 2))


class Supervisor:
    """Watches `server` (and the proxy or HTTP front before it) until one of them fails for good."""

    def __init__(
        self,
        server: TritonServer,
        say: Callable[[str], None],
        *,
        start_timeout: float,
        proxy: NginxProxy | None = None,
        guard: HttpGuard | None = None,
        budget: RestartBudget | None = None,
    ) -> None:
        self.server = server
        self.say = say
        self.start_timeout = start_timeout
        self.proxy = proxy
        self.guard = guard
        self.budget = budget or RestartBudget()

    def run(self) -> None:
        """Watch forever; raises ServerExitedError when the server cannot be kept up (budget spent)."""
        while True:
            try:
                self.server.wait(timeout=WATCH_INTERVAL_S)
            except subprocess.TimeoutExpired:
                if self.proxy is not None and not self.proxy.is_running():
                    raise ServerExitedError(f"nginx (the proxy) exited: {self.proxy.log_text().strip()}") from None
                dead = self.server.dead_stubs()
                if dead:
                    # Triton 2.51 would keep answering ready while the model fails every request: restart it all
                    self._restart(f"backend stub process(es) {dead} died")
                continue
            self._restart(self.server.exit_reason())

    def _restart(self, reason: str) -> None:
        while True:
            if not self.budget.take():
                raise ServerExitedError(
                    f"{reason}\ngiving up: {self.budget.restarts} restarts within {self.budget.window_s:.0f}s"
                )
            wait = self.budget.backoff()
            self.say(f"{reason}\nrestarting tritonserver" + (f" in {wait:.0f}s" if wait else "") + " ...")
            # what is left of it: stubs, regions, state file. A short grace: requests to a dead stub fail anyway,
            # and Triton 2.51 waits its whole --exit-timeout-secs for them
            self.server.stop(timeout=STOP_GRACE_S)
            time.sleep(wait)
            started = time.monotonic()
            try:
                self.server.restart(timeout=self.start_timeout)
            except ServerError as exc:
                reason = f"tritonserver did not start again: {exc}"
                continue
            self.say(f"tritonserver restarted in {time.monotonic() - started:.1f}s (pid {self.server.pid})")
            return
