"""The synchronous client: `tritonclient.http` or `tritonclient.grpc` behind the shared core.

tritonclient's clients are not thread-safe (the HTTP one is bound to the gevent hub of the thread that made
it), so the calls go to the connections: a `ConnectionPool` of `pool_size` threads, each owning one
tritonclient, runs them. However many threads use one `Client`, at most `pool_size` connections exist, reused
by every call; a thread that ends holds none. `classify_iter` and `classify_many` prepare inputs (read, encode,
preprocess) in their own worker threads and borrow the pool only for the network calls.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from dfserve.client._batch import build_batch_request, chunks, max_batch, parse_batch_result
from dfserve.client._constants import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    Mode,
    ProgressCallback,
    ProtocolName,
)
from dfserve.client._core import BaseClient, grpc_channel_args, prepare, triton_module
from dfserve.client._errors import CallTimeout
from dfserve.client._exceptions import DfserveClientError, ModelNotReadyError
from dfserve.client._pool import ConnectionPool
from dfserve.client._retry import UNSET, RetryPolicy, Unset, log_retry
from dfserve.client._shm import ShmPool, ShmSlot
from dfserve.client._transport import new_request_id, within
from dfserve.client._types import Health, Prediction, Result
from dfserve.preprocessing import ImageInput
from dfserve.spec.model import ModelSpec, ResizeMode

T = TypeVar("T")


class Client(BaseClient):
    """Classify images with a dfserve server, over HTTP or gRPC.

    >>> with Client("localhost:8000") as client:          # doctest: +SKIP
    ...     client.classify("photo.jpg").label

    `url` is ``host:port``, optionally with a ``http://`` or ``grpc://`` scheme; `protocol` picks one explicitly
    (port 8001 means gRPC when neither says). `timeout` bounds each call, retries included, over both protocols
    (a call may override it); `max_retries` (2, as in openai-python) retries connection failures, UNAVAILABLE,
    429/503 and a restarting backend with exponential backoff, or after the server's ``Retry-After``; None
    retries until the timeout. `mode="file"` sends the encoded
    file to the ensemble; `mode="pixels"` preprocesses here and sends pixels to the engine, optionally
    through system shared memory (`shared_memory=True`, same host only; registering regions is a restricted
    API, so pass the server's `admin_key`, sent as the header each protocol expects). `headers` go with every
    request (e.g. for a proxy). `model` is the entry model whose config carries the spec; every other name,
    the labels, the input size and the preprocessing come from that spec.

    One instance may be shared by any number of threads: its calls use at most `pool_size` connections
    (default: `classify_many`'s default concurrency), reused across calls and threads; give a larger pool
    when running `classify_many` with a larger `concurrency`, or the extra workers wait for a connection.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        protocol: ProtocolName | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
        mode: Mode = "file",
        model: str | None = None,
        headers: Mapping[str, str] | None = None,
        shared_memory: bool = False,
        resize_mode: ResizeMode | None = None,
        admin_key: str | None = None,
        tls: bool | None = None,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        pool_size: int = DEFAULT_CONCURRENCY,
    ) -> None:
        super().__init__(
            url,
            protocol,
            timeout=timeout,
            max_retries=max_retries,
            mode=mode,
            model=model,
            headers=headers,
            shared_memory=shared_memory,
            resize_mode=resize_mode,
            admin_key=admin_key,
            tls=tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
        )
        self._connections = ConnectionPool(self._check_concurrency(pool_size, "pool_size"), self._new_triton)
        self._lock = threading.Lock()
        self._pool: ShmPool | None = None

    # ------------------------------------------------------------------------------------------ plumbing

    def _new_triton(self) -> Any:
        tc = triton_module(self.protocol)
        if self.protocol == "http":
            from dfserve.client._http import HttpClient

            return HttpClient(
                self._settings.address,
                connection_timeout=self.timeout,
                network_timeout=self.timeout,
                **self._tls_kwargs(aio=False),
            )
        return tc.InferenceServerClient(
            self._settings.address, channel_args=grpc_channel_args(), **self._tls_kwargs(aio=False)
        )

    def _run(self, fn: Callable[[Any], T], timeout: float | None = None) -> T:
        """`fn(tritonclient)` once, on one of the pool's connections, within `timeout` seconds when given."""
        self._check_open()
        if timeout is None:
            return self._connections.run(fn)
        if timeout <= 0:
            raise CallTimeout("the call's time ran out")
        if self.protocol == "http":  # gRPC's own deadline (client_timeout) bounds gRPC calls
            fn = within(timeout, fn)
        return self._connections.run(fn, timeout=timeout)

    def _call(
        self,
        fn: Callable[[Any, dict[str, Any]], T],
        model: str | None = None,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        policy: RetryPolicy | None = None,
        request_id: str | None = None,
        admin: bool = False,
    ) -> T:
        """Run `fn(tritonclient, call_kwargs)` under the retry policy until `deadline` (now + `timeout` unless
        given; `timeout` is the call's whole budget, named in a timeout's message); raise our error naming the
        cause. Each attempt gets the time left, as gRPC's deadline or around the HTTP call."""
        limit = timeout or self.timeout
        deadline = deadline if deadline is not None else time.monotonic() + limit
        policy = policy or self._retry
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            try:
                kwargs = self._admin_kwargs(left) if admin else self._call_kwargs(left)
                return self._run(functools.partial(_apply, fn, kwargs), left)
            except Exception as exc:
                error = self._error(exc, model, timeout=limit, request_id=request_id)
                transient = isinstance(error, ModelNotReadyError) and not self._server_ready(deadline)
                wait = policy.next_delay(error, attempt, deadline - time.monotonic(), transient=transient)
                if wait is None:
                    raise error from exc
                log_retry(error, attempt, wait)
            time.sleep(wait)
            attempt += 1

    def _server_ready(self, deadline: float) -> bool:
        """Whether the server says it is ready; False when it cannot be asked (stopping, starting, gone) before
        `deadline`."""
        left = deadline - time.monotonic()
        kwargs = self._call_kwargs(left)
        try:
            return bool(self._run(lambda triton: triton.is_server_ready(**kwargs), left))
        except Exception:
            return False

    # ------------------------------------------------------------------------------------------ model

    def model_spec(
        self,
        *,
        refresh: bool = False,
        timeout: float | None = None,
        max_retries: int | Unset | None = UNSET,
    ) -> ModelSpec:
        """The served model's `ModelSpec`, read from the entry model's config (cached after the first call).
        `timeout` and `max_retries` override the client's for this call."""
        limit, policy = self._overrides(timeout, max_retries)
        return self._model_spec(time.monotonic() + limit, limit, policy, refresh=refresh)

    def _model_spec(self, deadline: float, limit: float, policy: RetryPolicy, *, refresh: bool = False) -> ModelSpec:
        if self._spec is not None and not refresh:
            return self._spec
        extra = {"as_json": True} if self.protocol == "grpc" else {}
        config = self._call(
            lambda triton, kwargs: triton.get_model_config(self.model, **kwargs, **extra),
            self.model,
            timeout=limit,
            deadline=deadline,
            policy=policy,
        )
        return self._spec_from(config)

    def health(self) -> Health:
        """Liveness and readiness of the server and the entry model. Never raises for an unreachable server."""
        kwargs = self._call_kwargs()

        def ask(triton: Any) -> tuple[bool, bool, bool]:
            return (
                bool(triton.is_server_live(**kwargs)),
                bool(triton.is_server_ready(**kwargs)),
                bool(triton.is_model_ready(self.model, **kwargs)),
            )

        try:
            live, ready, model_ready = self._run(ask, self.timeout)
        except Exception as exc:
            return Health(url=self.url, live=False, ready=False, model_ready=False, error=str(self._error(exc)))
        error = None if model_ready else f"model {self.model!r} is not ready"
        return Health(url=self.url, live=live, ready=ready, model_ready=model_ready, error=error)

    def is_ready(self) -> bool:
        """True when the server answers and the entry model is ready for inference."""
        health = self.health()
        return health.ready and health.model_ready

    # ------------------------------------------------------------------------------------------ inference

    def classify(
        self, image: ImageInput, *, timeout: float | None = None, max_retries: int | Unset | None = UNSET
    ) -> Prediction:
        """Classify one image: a path, bytes, a binary file object, a PIL image or an HxWx3 uint8 array.

        `timeout` and `max_retries` override the client's for this call only; the timeout bounds the whole call
        (reading the spec on first use, retries included), over both protocols."""
        limit, policy = self._overrides(timeout, max_retries)
        deadline = time.monotonic() + limit
        return self._classify_with(self._model_spec(deadline, limit, policy), image, limit, policy, deadline)

    def _classify_with(
        self, spec: ModelSpec, image: ImageInput, timeout: float, policy: RetryPolicy, deadline: float | None = None
    ) -> Prediction:
        slot = self._take_slot(spec) if self._settings.shared_memory else None
        try:
            request_id = new_request_id()
            request = self._request_for(image, spec, slot, request_id)
            result = self._call(
                self._infer_fn(request),
                request.model_name,
                timeout=timeout,
                deadline=deadline,
                policy=policy,
                request_id=request_id,
            )
            return self._parse(result, request, spec)
        finally:
            if slot is not None and self._pool is not None:
                self._pool.give(slot)

    def classify_batch(
        self,
        images: Iterable[ImageInput],
        *,
        timeout: float | None = None,
        max_retries: int | Unset | None = UNSET,
    ) -> list[Prediction]:
        """Classify N images in one request (the model's batch dimension), in input order.

        Above the served model's max batch size (from its spec) the images go in several requests, one after
        the other. Every input is read and checked before anything is sent: a bad one raises its
        `InvalidInputError` naming it, and nothing is classified. A batch travels inline, never through shared
        memory. `timeout` bounds the whole call; for many files with errors kept per item, see `classify_many`.
        """
        limit, policy = self._overrides(timeout, max_retries)
        deadline = time.monotonic() + limit
        items = list(images)
        if not items:
            return []
        spec = self._model_spec(deadline, limit, policy)
        payloads = [prepare(item, self.mode, spec, self._settings.resize_mode) for item in items]
        predictions: list[Prediction] = []
        for chunk in chunks(payloads, max_batch(spec, self.mode)):
            request_id = new_request_id()
            request = build_batch_request(chunk, spec, self.protocol, entry_model=self.model, request_id=request_id)
            result = self._call(
                self._infer_fn(request),
                request.model_name,
                timeout=limit,
                deadline=deadline,
                policy=policy,
                request_id=request_id,
            )
            predictions.extend(parse_batch_result(result, request, spec, self.protocol, chunk))
        return predictions

    def classify_iter(
        self,
        images: Iterable[ImageInput],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float | None = None,
        max_retries: int | Unset | None = UNSET,
    ) -> Generator[tuple[int, Result], None, None]:
        """Classify a stream of images, yielding ``(input index, result)`` as each finishes (not in order).

        `images` is consumed lazily: at most `concurrency` items are being classified and at most `concurrency`
        finished results wait for the caller, so memory stays bounded on an endless generator. A failed item
        yields its `DfserveClientError` in place. Stopping early (``break``, closing the generator) stops the
        workers after their current item. If the server cannot be reached at all, the first ``next()`` raises.
        """
        self._check_concurrency(concurrency)
        limit, policy = self._overrides(timeout, max_retries)
        spec = self._model_spec(time.monotonic() + limit, limit, policy)
        source = enumerate(images)
        source_lock = threading.Lock()
        out: queue.Queue[tuple[int, Result] | _WorkerEnd] = queue.Queue(maxsize=concurrency)
        stop = threading.Event()

        def put(entry: tuple[int, Result] | _WorkerEnd) -> None:
            while not stop.is_set():
                try:
                    out.put(entry, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def worker() -> None:
            error: BaseException | None = None
            try:
                while not stop.is_set():
                    with source_lock:
                        entry = next(source, None)
                    if entry is None:
                        return
                    index, item = entry
                    try:
                        outcome: Result = self._classify_with(spec, item, limit, policy)
                    except DfserveClientError as exc:
                        outcome = exc
                    put((index, outcome))
            except BaseException as exc:  # a bug, or the caller's iterable raised: hand it to the caller's thread
                error = exc
            finally:
                put(_WorkerEnd(error))

        threads = [
            threading.Thread(target=worker, name=f"dfserve-classify-{i}", daemon=True) for i in range(concurrency)
        ]
        for thread in threads:
            thread.start()
        running = len(threads)
        try:
            while running:
                entry = out.get()
                if isinstance(entry, _WorkerEnd):
                    running -= 1
                    if entry.error is not None:
                        raise entry.error
                    continue
                yield entry
        finally:
            stop.set()
            for thread in threads:
                thread.join()

    def classify_many(
        self,
        images: Iterable[ImageInput],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        raise_on_error: bool = False,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
        max_retries: int | Unset | None = UNSET,
    ) -> list[Result]:
        """Classify many images with at most `concurrency` requests in flight: `classify_iter`, in input order.

        An item that fails holds its `DfserveClientError` in place of a `Prediction`, so one bad file does not
        sink the batch; with ``raise_on_error=True`` the first failure stops the batch and is raised instead.
        `progress(done, total)` is called after each item, from the calling thread. If the server cannot be
        reached at all, this raises at once. For an input too large to hold, use `classify_iter`.
        """
        self._check_concurrency(concurrency)
        items = list(images)
        total = len(items)
        if total == 0:
            return []
        results: list[Result | None] = [None] * total
        stream = self.classify_iter(
            items, concurrency=min(concurrency, total), timeout=timeout, max_retries=max_retries
        )
        with contextlib.closing(stream):
            for done, (index, outcome) in enumerate(stream, start=1):
                if raise_on_error and isinstance(outcome, DfserveClientError):
                    raise outcome
                results[index] = outcome
                if progress is not None:
                    progress(done, total)
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------------------------------ shared memory

    def _take_slot(self, spec: ModelSpec) -> ShmSlot:
        with self._lock:
            if self._pool is None:
                self._pool = ShmPool(*self._shm_sizes(spec))
            pool = self._pool
        slot = pool.take()
        if not slot.registered:
            try:
                self._call(
                    lambda triton, kwargs: triton.register_system_shared_memory(
                        slot.name, slot.key, slot.byte_size, **kwargs
                    ),
                    admin=True,
                )
            except DfserveClientError:
                pool.discard(slot)
                raise
            slot.registered = True
        return slot

    def shared_memory_regions(self) -> list[str]:
        """Names of the regions this client created and registered (for inspection and tests)."""
        return [s.name for s in self._pool.slots] if self._pool is not None else []

    def _release_shared_memory(self) -> None:
        if self._pool is None:
            return
        kwargs = self._admin_kwargs()
        try:
            for slot in self._pool.slots:
                if slot.registered:
                    try:
                        self._connections.run(functools.partial(_unregister, name=slot.name, kwargs=kwargs))
                    except Exception:  # the server may be gone; the local region still goes
                        continue
        finally:
            self._pool.destroy()
            self._pool = None

    # ------------------------------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Unregister and destroy shared-memory regions, close every connection. Idempotent."""
        if self._closed:
            return
        try:
            self._release_shared_memory()
        finally:
            self._closed = True
            self._connections.close()

    def __enter__(self) -> Client:
        self._check_open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _unregister(triton: Any, *, name: str, kwargs: dict[str, Any]) -> None:
    triton.unregister_system_shared_memory(name, **kwargs)


@dataclass(frozen=True)
class _WorkerEnd:
    """A `classify_iter` worker finished; `error` is what stopped it, if anything did."""

    error: BaseException | None = None


def _apply(fn: Callable[[Any, dict[str, Any]], T], kwargs: dict[str, Any], triton: Any) -> T:
    return fn(triton, kwargs)
