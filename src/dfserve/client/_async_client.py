"""The asyncio client: `tritonclient.http.aio` or `tritonclient.grpc.aio` behind the shared core.

One tritonclient serves every concurrent request (aiohttp and grpc.aio multiplex); it is made on first use,
inside the running event loop. Local preprocessing and file reads run in a worker thread so that they do not
stall the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
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
    InferRequest,
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


class AsyncClient(BaseClient):
    """The asyncio twin of `dfserve.Client`: same arguments, same methods, awaited; `aclose()` instead of
    `close()`.

    >>> async with AsyncClient("grpc://localhost:8001") as client:   # doctest: +SKIP
    ...     (await client.classify("photo.jpg")).label
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
        self._client: Any = None
        self._spec_lock: asyncio.Lock | None = None
        self._pool: ShmPool | None = None

    # ------------------------------------------------------------------------------------------ plumbing

    def _triton(self) -> Any:
        self._check_open()
        if self._client is None:
            tc = triton_module(self.protocol, aio=True)
            if self.protocol == "http":
                self._client = tc.InferenceServerClient(self._settings.address, conn_timeout=self.timeout)
            else:
                self._client = tc.InferenceServerClient(self._settings.address, channel_args=grpc_channel_args())
        return self._client

    async def _call(self, fn: Callable[[], Awaitable[T]], model: str | None = None) -> T:
        """Await one tritonclient call under the retry policy; raise our error naming the cause."""
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            try:
                return await fn()
            except Exception as exc:
                error = self._error(exc, model)
                transient = isinstance(error, ModelNotReadyError) and not await self._server_ready()
                wait = self._retry.next_delay(error, attempt, deadline - time.monotonic(), transient=transient)
                if wait is None:
                    raise error from exc
                log_retry(error, attempt, wait)
            await asyncio.sleep(wait)
            attempt += 1

    async def _server_ready(self) -> bool:
        """Whether the server says it is ready; False when it cannot be asked (stopping, starting, gone)."""
        try:
            return bool(await self._triton().is_server_ready())
        except Exception:
            return False

    # ------------------------------------------------------------------------------------------ model

    async def model_spec(self, *, refresh: bool = False) -> ModelSpec:
        """The served model's `ModelSpec`, read from the entry model's config (cached after the first call)."""
        if self._spec is not None and not refresh:
            return self._spec
        if self._spec_lock is None:
            self._spec_lock = asyncio.Lock()
        async with self._spec_lock:
            if self._spec is not None and not refresh:
                return self._spec
            triton = self._triton()
            kwargs = self._call_kwargs()
            if self.protocol == "grpc":
                kwargs["as_json"] = True
            config = await self._call(lambda: triton.get_model_config(self.model, **kwargs), self.model)
            return self._spec_from(config)

    async def health(self) -> Health:
        """Liveness and readiness of the server and the entry model. Never raises for an unreachable server."""
        triton = self._triton()
        kwargs = self._call_kwargs()
        try:
            live = bool(await triton.is_server_live(**kwargs))
            ready = bool(await triton.is_server_ready(**kwargs))
            model_ready = bool(await triton.is_model_ready(self.model, **kwargs))
        except Exception as exc:
            return Health(url=self.url, live=False, ready=False, model_ready=False, error=str(self._error(exc)))
        error = None if model_ready else f"model {self.model!r} is not ready"
        return Health(url=self.url, live=live, ready=ready, model_ready=model_ready, error=error)

    async def is_ready(self) -> bool:
        """True when the server answers and the entry model is ready for inference."""
        health = await self.health()
        return health.ready and health.model_ready

    # ------------------------------------------------------------------------------------------ inference

    async def classify(self, image: ImageInput) -> Prediction:
        """Classify one image: a path, bytes, a binary file object, a PIL image or an HxWx3 uint8 array."""
        return await self._classify_one(await self.model_spec(), image)

    async def _classify_one(self, spec: ModelSpec, image: ImageInput) -> Prediction:
        triton = self._triton()
        slot = await self._take_slot(triton, spec) if self._settings.shared_memory else None
        try:
            request: InferRequest
            if self.mode == "pixels" or isinstance(image, str | Path) or hasattr(image, "read"):
                request = await asyncio.to_thread(self._request_for, image, spec, slot)  # disk or CPU work
            else:
                request = self._request_for(image, spec, slot)
            kwargs = self._call_kwargs()
            result = await self._call(
                lambda: triton.infer(request.model_name, request.inputs, outputs=request.outputs, **kwargs),
                request.model_name,
            )
            return self._parse(result, request, spec)
        finally:
            if slot is not None and self._pool is not None:
                self._pool.give(slot)

    async def classify_many(
        self,
        images: Iterable[ImageInput],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        raise_on_error: bool = False,
        progress: ProgressCallback | None = None,
    ) -> list[Result]:
        """Classify many images with at most `concurrency` requests in flight.

        Results come back in input order. An item that fails holds its `DfserveClientError` in place of a
        `Prediction`; with ``raise_on_error=True`` the first failure cancels the batch and is raised.
        `progress(done, total)` is called after each item. If the server cannot be reached at all, this
        raises at once.
        """
        self._check_concurrency(concurrency)
        items = list(images)
        total = len(items)
        if total == 0:
            return []
        spec = await self.model_spec()
        results: list[Result | None] = [None] * total
        indices = itertools.count()
        done = 0

        async def worker() -> None:
            nonlocal done
            for index in indices:
                if index >= total:
                    return
                try:
                    outcome: Result = await self._classify_one(spec, items[index])
                except DfserveClientError as exc:
                    if raise_on_error:
                        raise
                    outcome = exc
                results[index] = outcome
                done += 1
                if progress is not None:
                    progress(done, total)

        tasks = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, total))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------------------------------ shared memory

    async def _take_slot(self, triton: Any, spec: ModelSpec) -> ShmSlot:
        if self._pool is None:
            self._pool = ShmPool(*self._shm_sizes(spec))
        pool = self._pool
        slot = pool.take()
        if not slot.registered:
            kwargs = self._admin_kwargs()
            try:
                await self._call(
                    lambda: triton.register_system_shared_memory(slot.name, slot.key, slot.byte_size, **kwargs)
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
