"""A bounded set of connections for the synchronous client: `size` threads, each owning one tritonclient.

tritonclient's HTTP client is bound to the gevent hub of the thread that made it ("Cannot switch to a different
thread" from any other), so connections cannot be handed between the caller's threads. Instead the calls travel
to the connections: a caller's thread puts the call on a queue and waits for its result, and one of `size`
long-lived threads runs it on the tritonclient it owns. However many threads a service starts and ends, at most
`size` connections (HTTP keep-alive sockets or gRPC channels) exist, and they are reused by every later call,
`classify_many` included. `close()` has each thread close its own tritonclient (from the thread it belongs to).
A call that fails with an exception marked ``discard_connection`` (a timed-out HTTP call, whose socket may hold
half a response) costs its thread its tritonclient: the next call there makes a new one.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

T = TypeVar("T")

_STOP = None


class ConnectionPool:
    """`size` connection threads, started on first use; each makes its tritonclient on its first call."""

    def __init__(self, size: int, factory: Callable[[], Any], name: str = "dfserve-conn") -> None:
        self.size = size
        self._factory = factory
        self._name = name
        self._tasks: queue.SimpleQueue[tuple[Callable[[Any], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._closed = False

    def run(self, fn: Callable[[Any], T], timeout: float | None = None) -> T:
        """`fn(tritonclient)` on one of the pool's connections; its result, or its exception re-raised here.

        With a `timeout`, a call still waiting for a free connection after that many seconds is withdrawn and
        raises TimeoutError (a call that has started is bounded by `fn` itself)."""
        own = getattr(self._local, "client", None)
        if own is not None:  # already on a connection thread (a call made from inside a call)
            return fn(own)
        self._start()
        future: Future[T] = Future()
        self._tasks.put((fn, future))
        if timeout is None:
            return future.result()
        try:
            return future.result(timeout=max(timeout, 0.0))
        except FutureTimeout:
            if future.cancel():
                raise TimeoutError(f"no free connection within {timeout:g} s") from None
            return future.result()  # it started just now: it bounds itself

    def _start(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("connection pool is closed")
            if self._threads:
                return
            for i in range(self.size):
                thread = threading.Thread(target=self._serve, name=f"{self._name}-{i}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _serve(self) -> None:
        client: Any = None
        try:
            while (task := self._tasks.get()) is not _STOP:
                fn, future = task
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    if client is None:
                        client = self._local.client = self._factory()
                    future.set_result(fn(client))
                except BaseException as exc:  # handed to the caller's thread, which raises it
                    if getattr(exc, "discard_connection", False) and client is not None:
                        with contextlib.suppress(Exception):
                            client.close()
                        client = self._local.client = None
                    future.set_exception(exc)
        finally:
            if client is not None:
                with contextlib.suppress(Exception):  # a connection that cannot close cleanly is gone anyway
                    client.close()

    def close(self) -> None:
        """Close every connection (each from its own thread) and end the threads. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._tasks.put(_STOP)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=30)
