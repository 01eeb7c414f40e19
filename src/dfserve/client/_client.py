"""The synchronous client: `tritonclient.http` or `tritonclient.grpc` behind the shared core.

tritonclient's clients are not thread-safe (the HTTP one is bound to the gevent hub of the thread that made
it), so this client keeps one tritonclient per calling thread, and `classify_many` runs worker threads that
each own a tritonclient for the duration of the batch and close it themselves.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from dfserve.client._constants import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    ProgressCallback,
)
from dfserve.client._core import (
    BaseClient,
    grpc_channel_args,
    log_retry,
    triton_module,
)
from dfserve.client._exceptions import DfserveClientError, ModelNotReadyError
from dfserve.client._shm import ShmPool, ShmSlot
from dfserve.client._types import Health, Prediction, Result
from dfserve.config import ModelSpec
from dfserve.preprocessing import ImageInput

T = TypeVar("T")


class Client(BaseClient):
    """Classify images with a dfserve server, over HTTP or gRPC.

    >>> with Client("localhost:8000") as client:          # doctest: +SKIP
    ...     client.classify("photo.jpg").label

    `url` is ``host:port``, optionally with a ``http://`` or ``grpc://`` scheme; `protocol` picks one explicitly
    (port 8001 means gRPC when neither says). `timeout` bounds each call, retries included; `max_retries`
    retries connection failures and UNAVAILABLE with exponential backoff. `mode="file"` sends the encoded
    file to the ensemble; `mode="pixels"` preprocesses here and sends pixels to the engine, optionally
    through system shared memory (`shared_memory=True`, same host only; registering regions is a restricted
    API, so pass the server's `admin_key`, sent as the header each protocol expects). `headers` go with every
    request (e.g. for a proxy). `model` is the entry model whose config carries the spec; every other name,
    the labels, the input size and the preprocessing come from that spec.

    One instance may be shared by threads: each thread gets its own connection.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        protocol: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
        mode: str = "file",
        model: str | None = None,
        headers: Mapping[str, str] | None = None,
        shared_memory: bool = False,
        resize_mode: str | None = None,
        admin_key: str | None = None,
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
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._tritons: list[Any] = []
        self._pool: ShmPool | None = None

    # ------------------------------------------------------------------------------------------ plumbing

    def _new_triton(self) -> Any:
        tc = triton_module(self.protocol)
        if self.protocol == "http":
            return tc.InferenceServerClient(
                self._settings.address, connection_timeout=self.timeout, network_timeout=self.timeout
            )
        return tc.InferenceServerClient(self._settings.address, channel_args=grpc_channel_args())

    def _triton(self) -> Any:
        """This thread's tritonclient, made on first use."""
        self._check_open()
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._new_triton()
            self._local.client = client
            with self._lock:
                self._tritons.append(client)
        return client

    def _call(self, fn: Callable[[], T], model: str | None = None) -> T:
        """Run one tritonclient call under the retry policy; raise our error naming the cause."""
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                error = self._error(exc, model)
                transient = isinstance(error, ModelNotReadyError) and not self._server_ready()
                wait = self._retry.next_delay(error, attempt, deadline - time.monotonic(), transient=transient)
                if wait is None:
                    raise error from exc
                log_retry(error, attempt, wait)
            time.sleep(wait)
            attempt += 1

    def _server_ready(self) -> bool:
        """Whether the server says it is ready; False when it cannot be asked (stopping, starting, gone)."""
        try:
            return bool(self._triton().is_server_ready())
        except Exception:
            return False

    # ------------------------------------------------------------------------------------------ model

    def model_spec(self, *, refresh: bool = False) -> ModelSpec:
        """The served model's `ModelSpec`, read from the entry model's config (cached after the first call)."""
        if self._spec is not None and not refresh:
            return self._spec
        triton = self._triton()
        kwargs = self._call_kwargs()
        if self.protocol == "grpc":
            kwargs["as_json"] = True
        config = self._call(lambda: triton.get_model_config(self.model, **kwargs), self.model)
        return self._spec_from(config)

    def health(self) -> Health:
        """Liveness and readiness of the server and the entry model. Never raises for an unreachable server."""
        triton = self._triton()
        kwargs = self._call_kwargs()
        try:
            live = bool(triton.is_server_live(**kwargs))
            ready = bool(triton.is_server_ready(**kwargs))
            model_ready = bool(triton.is_model_ready(self.model, **kwargs))
        except Exception as exc:
            return Health(url=self.url, live=False, ready=False, model_ready=False, error=str(self._error(exc)))
        error = None if model_ready else f"model {self.model!r} is not ready"
        return Health(url=self.url, live=live, ready=ready, model_ready=model_ready, error=error)

    def is_ready(self) -> bool:
        """True when the server answers and the entry model is ready for inference."""
        health = self.health()
        return health.ready and health.model_ready

    # ------------------------------------------------------------------------------------------ inference

    def classify(self, image: ImageInput) -> Prediction:
        """Classify one image: a path, bytes, a binary file object, a PIL image or an HxWx3 uint8 array."""
        return self._classify_with(self._triton(), self.model_spec(), image)

    def _classify_with(self, triton: Any, spec: ModelSpec, image: ImageInput) -> Prediction:
        slot = self._take_slot(triton, spec) if self._settings.shared_memory else None
        try:
            request = self._request_for(image, spec, slot)
            kwargs = self._call_kwargs()
            result = self._call(
                lambda: triton.infer(request.model_name, request.inputs, outputs=request.outputs, **kwargs),
                request.model_name,
            )
            return self._parse(result, request, spec)
        finally:
            if slot is not None and self._pool is not None:
                self._pool.give(slot)

    def classify_many(
        self,
        images: Iterable[ImageInput],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        raise_on_error: bool = False,
        progress: ProgressCallback | None = None,
    ) -> list[Result]:
        """Classify many images with at most `concurrency` requests in flight.

        Results come back in input order. An item that fails holds its `DfserveClientError` in place of a
        `Prediction`, so one bad file does not sink the batch; with ``raise_on_error=True`` the first failure
        stops the batch and is raised instead. `progress(done, total)` is called after each item, from a
        worker thread, never concurrently. If the server cannot be reached at all, this raises at once.
        """
        self._check_concurrency(concurrency)
        items = list(images)
        total = len(items)
        if total == 0:
            return []
        spec = self.model_spec()
        results: list[Result | None] = [None] * total
        indices = itertools.count()
        lock = threading.Lock()
        stop = threading.Event()
        done = 0
        failures: list[BaseException] = []

        def worker() -> None:
            nonlocal done
            triton = self._new_triton()
            try:
                while not stop.is_set():
                    index = next(indices)
                    if index >= total:
                        return
                    try:
                        outcome: Result = self._classify_with(triton, spec, items[index])
                    except DfserveClientError as exc:
                        outcome = exc
                        if raise_on_error:
                            with lock:
                                failures.append(exc)
                            stop.set()
                    results[index] = outcome
                    with lock:
                        done += 1
                        if progress is not None:
                            progress(done, total)
            except BaseException as exc:  # a bug or a failing callback: hand it to the caller's thread
                with lock:
                    failures.insert(0, exc)
                stop.set()
            finally:
                _close_quietly(triton)

        threads = [
            threading.Thread(target=worker, name=f"dfserve-classify-{i}", daemon=True)
            for i in range(min(concurrency, total))
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:
            stop.set()
            raise
        if failures:
            raise failures[0]
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------------------------------ shared memory

    def _take_slot(self, triton: Any, spec: ModelSpec) -> ShmSlot:
        with self._lock:
            if self._pool is None:
                self._pool = ShmPool(*self._shm_sizes(spec))
            pool = self._pool
        slot = pool.take()
        if not slot.registered:
            kwargs = self._admin_kwargs()
            try:
                self._call(lambda: triton.register_system_shared_memory(slot.name, slot.key, slot.byte_size, **kwargs))
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
        triton = getattr(self._local, "client", None) or self._new_triton()
        kwargs = self._admin_kwargs()
        try:
            for slot in self._pool.slots:
                if slot.registered:
                    try:
                        triton.unregister_system_shared_memory(slot.name, **kwargs)
                    except Exception:  # the server may be gone; the local region still goes
                        continue
        finally:
            if triton is not getattr(self._local, "client", None):
                _close_quietly(triton)
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
            with self._lock:
                tritons, self._tritons = self._tritons, []
            for triton in tritons:
                _close_quietly(triton)

    def __enter__(self) -> Client:
        self._check_open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _close_quietly(triton: Any) -> None:
    with contextlib.suppress(Exception):  # a connection that cannot close cleanly is gone anyway
        triton.close()
