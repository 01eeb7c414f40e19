"""The asyncio client: `tritonclient.http.aio` or `tritonclient.grpc.aio` behind the shared core.

One tritonclient serves every concurrent request (aiohttp and grpc.aio multiplex); it is made on first use,
inside the running event loop. Everything that is not network I/O (reading a file, PNG-encoding an array or a
PIL image, preprocessing pixels) runs in a worker thread (`asyncio.to_thread`), so it never stalls the loop.

The event-loop rule: an `AsyncClient` belongs to one event loop at a time, the one its first call ran in.
Used under a later loop after that one has closed (a second `asyncio.run`), it rebinds: it opens a new
connection in the new loop and abandons the old one (its loop is gone; nothing can close it there). Used
from a second loop while the first still runs (two threads, each with its own loop), it raises
`ClientConfigError` naming this rule: make one client per loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
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
from dfserve.client._core import BaseClient, InferRequest, grpc_channel_args, prepare, triton_module
from dfserve.client._errors import CallTimeout
from dfserve.client._exceptions import ClientConfigError, DfserveClientError, ModelNotReadyError
from dfserve.client._retry import UNSET, RetryPolicy, Unset, log_retry
from dfserve.client._shm import ShmPool, ShmSlot
from dfserve.client._transport import new_request_id
from dfserve.client._types import Health, Prediction, Result
from dfserve.preprocessing import ImageInput
from dfserve.spec.model import ModelSpec, ResizeMode

T = TypeVar("T")


class AsyncClient(BaseClient):
    """The asyncio twin of `dfserve.Client`: same arguments, same methods, awaited; `aclose()` instead of
    `close()`.

    >>> async with AsyncClient("grpc://localhost:8001") as client:   # doctest: +SKIP
    ...     (await client.classify("photo.jpg")).label
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
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._spec_lock: asyncio.Lock | None = None
        self._pool: ShmPool | None = None

    # ------------------------------------------------------------------------------------------ plumbing

    def _triton(self) -> Any:
        self._check_open()
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None and not self._loop.is_closed() and self._loop.is_running():
                raise ClientConfigError(
                    f"this AsyncClient for {self.url} is in use by another running event loop; an AsyncClient "
                    "belongs to one loop at a time (it rebinds only once that loop has closed): make one per loop"
                )
            # a new loop (e.g. a second asyncio.run): the old connection died with its loop
            self._client, self._spec_lock, self._loop = None, None, loop
        if self._client is None:
            tc = triton_module(self.protocol, aio=True)
            if self.protocol == "http":
                from dfserve.client._http import async_client_class

                self._client = async_client_class()(
                    self._settings.address, conn_timeout=self.timeout, **self._tls_kwargs(aio=True)
                )
            else:
                self._client = tc.InferenceServerClient(
                    self._settings.address, channel_args=grpc_channel_args(), **self._tls_kwargs(aio=True)
                )
        return self._client

    async def _call(
        self,
        fn: Callable[[Any, dict[str, Any]], Awaitable[T]],
        model: str | None = None,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        policy: RetryPolicy | None = None,
        request_id: str | None = None,
        admin: bool = False,
    ) -> T:
        """Await `fn(tritonclient, call_kwargs)` under the retry policy until `deadline` (now + `timeout` unless
        given); raise our error naming the cause. Each attempt gets the time left: `asyncio.wait_for` around it
        (tritonclient's HTTP client has no per-call timeout) and, over gRPC, the call's own deadline too."""
        limit = timeout or self.timeout
        deadline = deadline if deadline is not None else time.monotonic() + limit
        policy = policy or self._retry
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise CallTimeout("the call's time ran out")
                kwargs = self._admin_kwargs(left) if admin else self._call_kwargs(left)
                return await asyncio.wait_for(fn(self._triton(), kwargs), left)
            except Exception as exc:
                error = self._error(exc, model, timeout=limit, request_id=request_id)
                transient = isinstance(error, ModelNotReadyError) and not await self._server_ready(deadline)
                wait = policy.next_delay(error, attempt, deadline - time.monotonic(), transient=transient)
                if wait is None:
                    raise error from exc
                log_retry(error, attempt, wait)
            await asyncio.sleep(wait)
            attempt += 1

    async def _server_ready(self, deadline: float) -> bool:
        """Whether the server says it is ready; False when it cannot be asked (stopping, starting, gone) before
        `deadline`."""
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                return False
            return bool(await asyncio.wait_for(self._triton().is_server_ready(**self._call_kwargs(left)), left))
        except Exception:
            return False

    # ------------------------------------------------------------------------------------------ model

    async def model_spec(
        self,
        *,
        refresh: bool = False,
        timeout: float | None = None,
        max_retries: int | Unset | None = UNSET,
    ) -> ModelSpec:
        """The served model's `ModelSpec`, read from the entry model's config (cached after the first call).
        `timeout` and `max_retries` override the client's for this call."""
        limit, policy = self._overrides(timeout, max_retries)
        return await self._model_spec(time.monotonic() + limit, limit, policy, refresh=refresh)

    async def _model_spec(
        self, deadline: float, limit: float, policy: RetryPolicy, *, refresh: bool = False
    ) -> ModelSpec:
        if self._spec is not None and not refresh:
            return self._spec
        self._triton()  # binds the client to this loop (and its lock with it)
        if self._spec_lock is None:
            self._spec_lock = asyncio.Lock()
        async with self._spec_lock:
            if self._spec is not None and not refresh:
                return self._spec
            extra = {"as_json": True} if self.protocol == "grpc" else {}
            config = await self._call(
                lambda triton, kwargs: triton.get_model_config(self.model, **kwargs, **extra),
                self.model,
                timeout=limit,
                deadline=deadline,
                policy=policy,
            )
            return self._spec_from(config)

    async def health(self) -> Health:
        """Liveness and readiness of the server and the entry model. Never raises for an unreachable server."""
        triton = self._triton()
        kwargs = self._call_kwargs()

        async def ask() -> tuple[bool, bool, bool]:
            return (
                bool(await triton.is_server_live(**kwargs)),
                bool(await triton.is_server_ready(**kwargs)),
                bool(await triton.is_model_ready(self.model, **kwargs)),
            )

        try:
            live, ready, model_ready = await asyncio.wait_for(ask(), self.timeout)
        except Exception as exc:
            return Health(url=self.url, live=False, ready=False, model_ready=False, error=str(self._error(exc)))
        error = None if model_ready else f"model {self.model!r} is not ready"
        return Health(url=self.url, live=live, ready=ready, model_ready=model_ready, error=error)

    async def is_ready(self) -> bool:
        """True when the server answers and the entry model is ready for inference."""
        health = await self.health()
        return health.ready and health.model_ready

    # ------------------------------------------------------------------------------------------ inference

    async def classify(
        self, image: ImageInput, *, timeout: float | None = None, max_retries: int | Unset | None = UNSET
    ) -> Prediction:
        """Classify one image: a path, bytes, a binary file object, a PIL image or an HxWx3 uint8 array.

        `timeout` and `max_retries` override the client's for this call only; the timeout bounds the whole call
        (reading the spec on first use, retries included), over both protocols."""
        limit, policy = self._overrides(timeout, max_retries)
        deadline = time.monotonic() + limit
        spec = await self._model_spec(deadline, limit, policy)
        return await self._classify_one(spec, image, limit, policy, deadline)

    async def _classify_one(
        self,
        spec: ModelSpec,
        image: ImageInput,
        timeout: float,
        policy: RetryPolicy,
        deadline: float | None = None,
    ) -> Prediction:
        triton = self._triton()
        slot = await self._take_slot(triton, spec) if self._settings.shared_memory else None
        try:
            request_id = new_request_id()
            # disk and CPU work (reading, PNG encoding, preprocessing) in a worker thread, never on the loop
            request: InferRequest = await asyncio.to_thread(self._request_for, image, spec, slot, request_id)
            result = await self._call(
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

    async def classify_batch(
        self,
        images: Iterable[ImageInput],
        *,
        timeout: float | None = None,
        max_retries: int | Unset | None = UNSET,
    ) -> list[Prediction]:
        """Classify N images in one request (the model's batch dimension), in input order: `Client.classify_batch`,
        awaited. Above the model's max batch size the images go in several requests, one after the other."""
        limit, policy = self._overrides(timeout, max_retries)
        deadline = time.monotonic() + limit
        items = list(images)
        if not items:
            return []
        spec = await self._model_spec(deadline, limit, policy)
        mode, resize = self.mode, self._settings.resize_mode
        payloads = await asyncio.to_thread(lambda: [prepare(item, mode, spec, resize) for item in items])
        predictions: list[Prediction] = []
        for chunk in chunks(payloads, max_batch(spec, self.mode)):
            request_id = new_request_id()
            request = build_batch_request(chunk, spec, self.protocol, entry_model=self.model, request_id=request_id)
            result = await self._call(
                self._infer_fn(request),
                request.model_name,
                timeout=limit,
                deadline=deadline,
                policy=policy,
                request_id=request_id,
            )
            predictions.extend(parse_batch_result(result, request, spec, self.protocol, chunk))
        return predictions

    async def classify_iter(
        self,
        images: Iterable[ImageInput] | AsyncIterable[ImageInput],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float | None = None,
        max_retries: int | Unset | None = UNSET,
    ) -> AsyncIterator[tuple[int, Result]]:
        """Classify a stream of images (an iterable or an async iterable), yielding ``(input index, result)`` as
        each finishes (not in order).

        `images` is consumed lazily, at most `concurrency` items at a time, so memory stays bounded on an endless
        source. A failed item yields its `DfserveClientError` in place. Leaving the loop early cancels the
        requests in flight. If the server cannot be reached at all, the first iteration raises.
        """
        self._check_concurrency(concurrency)
        limit, policy = self._overrides(timeout, max_retries)
        spec = await self._model_spec(time.monotonic() + limit, limit, policy)
        counter = itertools.count()
        if isinstance(images, AsyncIterable):
            aiter_ = aiter(images)

            async def next_item() -> tuple[bool, ImageInput | None]:
                try:
                    return True, await anext(aiter_)
                except StopAsyncIteration:
                    return False, None
        else:
            iter_ = iter(images)

            async def next_item() -> tuple[bool, ImageInput | None]:
                try:
                    return True, next(iter_)
                except StopIteration:
                    return False, None

        async def one(index: int, item: ImageInput) -> tuple[int, Result]:
            try:
                return index, await self._classify_one(spec, item, limit, policy)
            except DfserveClientError as exc:
                return index, exc

        pending: set[asyncio.Task[tuple[int, Result]]] = set()
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < concurrency:
                    more, item = await next_item()
                    if not more:
                        exhausted = True
                        break
                    pending.add(asyncio.ensure_future(one(next(counter), item)))  # type: ignore[arg-type]
                if not pending:
                    return
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    yield task.result()
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def classify_many(
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

        An item that fails holds its `DfserveClientError` in place of a `Prediction`; with
        ``raise_on_error=True`` the first failure cancels the batch and is raised. `progress(done, total)` is
        called after each item. If the server cannot be reached at all, this raises at once.
        """
        self._check_concurrency(concurrency)
        items = list(images)
        total = len(items)
        if total == 0:
            return []
        results: list[Result | None] = [None] * total
        stream = self.classify_iter(items, concurrency=concurrency, timeout=timeout, max_retries=max_retries)
        try:
            done = 0
            async for index, outcome in stream:
                if raise_on_error and isinstance(outcome, DfserveClientError):
                    raise outcome
                results[index] = outcome
                done += 1
                if progress is not None:
                    progress(done, total)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------------------------------ shared memory

    async def _take_slot(self, triton: Any, spec: ModelSpec) -> ShmSlot:
        if self._pool is None:
            self._pool = ShmPool(*self._shm_sizes(spec))
        pool = self._pool
        slot = pool.take()
        if not slot.registered:
            try:
                await self._call(
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

    async def _release_shared_memory(self) -> None:
        if self._pool is None:
            return
        kwargs = self._admin_kwargs()
        try:
            if self._client is not None:
                for slot in self._pool.slots:
                    if slot.registered:
                        try:
                            await self._client.unregister_system_shared_memory(slot.name, **kwargs)
                        except Exception:  # the server may be gone; the local region still goes
                            continue
        finally:
            self._pool.destroy()
            self._pool = None

    # ------------------------------------------------------------------------------------------ lifecycle

    async def aclose(self) -> None:
        """Unregister and destroy shared-memory regions and close the connection. Idempotent."""
        if self._closed:
            return
        try:
            await self._release_shared_memory()
        finally:
            self._closed = True
            client, self._client = self._client, None
            if client is not None:
                with contextlib.suppress(Exception):  # a connection that cannot close cleanly is gone anyway
                    await client.close()

    async def __aenter__(self) -> AsyncClient:
        self._check_open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
