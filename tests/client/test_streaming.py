"""Streaming bulk calls, per-call overrides and the async client's event loop, against the real server:
`classify_iter` holds memory flat over a 10,000-item generator, the async client's loop never stalls while a
12 MP image is encoded, and an `AsyncClient` follows a new event loop."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dfserve.client import AsyncClient, Client, ClientConfigError, InvalidInputError, Prediction

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def url_of(server: Any, protocol: str) -> str:
    return server.http_url if protocol == "http" else f"grpc://{server.grpc_url}"


def tiny_arrays(n: int) -> Iterator[np.ndarray]:
    """`n` distinct 24x24 images, made one at a time as they are asked for (never all in memory)."""
    for i in range(n):
        yield np.full((24, 24, 3), i % 251, dtype=np.uint8)


def test_classify_iter_holds_memory_flat_over_10000_items(triton_server: Any) -> None:
    """Python-heap growth from item 2,000 to item 10,000 stays under 2 MB: the input is consumed lazily and
    results are not kept. (Holding 10,000 results alone would take several MB.)"""
    seen: set[int] = set()
    marks: dict[int, int] = {}
    failures = 0
    with Client(url_of(triton_server, "grpc")) as client:
        tracemalloc.start()
        try:
            for count, (index, result) in enumerate(client.classify_iter(tiny_arrays(10_000), concurrency=8), 1):
                seen.add(index)
                failures += not isinstance(result, Prediction)
                if count in (2_000, 10_000):
                    gc.collect()
                    marks[count] = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    growth = marks[10_000] - marks[2_000]
    print(
        f"classify_iter over 10,000 generated items: heap at 2,000 {marks[2_000] / 1e6:.2f} MB, "
        f"at 10,000 {marks[10_000] / 1e6:.2f} MB, growth {growth / 1e6:+.2f} MB"
    )
    assert seen == set(range(10_000)) and failures == 0
    # the set of seen indices grows by ~0.3 MB over 8,000 ints; anything per-item kept would be far more
    assert growth < 2_000_000


def test_classify_iter_yields_as_items_finish_and_many_keeps_order(
    triton_server: Any, sample_images: dict[str, Path]
) -> None:
    paths = list(sample_images.values())
    items: list[Any] = [*paths, b"not an image", Image.new("RGB", (0, 0)), np.zeros((0, 0, 3), np.uint8)]
    with Client(triton_server.http_url) as client:
        streamed = dict(client.classify_iter(iter(items), concurrency=3))
        ordered = client.classify_many(items, concurrency=3, timeout=20, max_retries=0)
    assert sorted(streamed) == list(range(len(items)))
    for i, result in enumerate(ordered):
        if i < len(paths):
            assert isinstance(result, Prediction) and result.path == str(paths[i])
            assert result.scores == pytest.approx(streamed[i].scores, abs=1e-5)  # type: ignore[union-attr]
        else:
            assert isinstance(result, InvalidInputError) and isinstance(streamed[i], InvalidInputError)


def test_stopping_a_stream_early_stops_its_workers(triton_server: Any) -> None:
    import threading

    with Client(triton_server.http_url) as client:
        stream = client.classify_iter(tiny_arrays(1_000_000), concurrency=4)
        first = [next(stream) for _ in range(5)]
        stream.close()
    assert len(first) == 5
    deadline = time.monotonic() + 10
    while any(t.name.startswith("dfserve-classify-") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name.startswith("dfserve-classify-") for t in threading.enumerate())


def test_per_call_overrides_are_checked(triton_server: Any) -> None:
    with Client(triton_server.http_url) as client:
        with pytest.raises(ClientConfigError, match="timeout"):
            client.classify(b"x", timeout=0)
        with pytest.raises(ClientConfigError, match="max_retries"):
            client.classify(b"x", max_retries=-1)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
async def test_async_classify_iter_over_an_async_generator(triton_server: Any, protocol: str) -> None:
    async def source(n: int) -> AsyncIterator[np.ndarray]:
        for array in tiny_arrays(n):
            yield array

    async with AsyncClient(url_of(triton_server, protocol)) as client:
        got = {index: result async for index, result in client.classify_iter(source(40), concurrency=6)}
        ordered = await client.classify_many(list(tiny_arrays(10)), concurrency=4)
    assert sorted(got) == list(range(40)) and all(isinstance(r, Prediction) for r in got.values())
    assert [r.scores for r in ordered] == [got[i].scores for i in range(10)]  # type: ignore[union-attr]


def big_photo() -> Image.Image:
    """A 12 MP (4000x3000) image with smooth content, so that its PNG stays under the server's file limit."""
    y, x = np.mgrid[0:3000, 0:4000]
    rgb = np.stack([(x // 16) % 256, (y // 12) % 256, ((x + y) // 28) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
async def test_async_file_mode_never_stalls_the_loop(triton_server: Any, protocol: str) -> None:
    """A ticker task sleeping 5 ms records the largest gap between its wake-ups while a 12 MP PIL image and 20
    small arrays are classified in file mode: the encoding runs off the loop, so no gap reaches 50 ms."""
    image = big_photo()
    arrays = list(tiny_arrays(20))
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with AsyncClient(url_of(triton_server, protocol), mode="file") as client:
        await client.model_spec()
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        big = await client.classify(image)
        small = await client.classify_many(arrays, concurrency=8)
        stop.set()
        await tick
    worst = max(gaps)
    print(f"{protocol}: largest event-loop stall while classifying a 12 MP PIL image: {worst * 1000:.1f} ms")
    assert isinstance(big, Prediction) and all(isinstance(r, Prediction) for r in small)
    assert worst < 0.050


def test_async_client_follows_a_new_event_loop(triton_server: Any, sample_images: dict[str, Path]) -> None:
    """The documented rule: an AsyncClient rebinds to a new loop once its first loop has closed."""
    photo = next(iter(sample_images.values()))
    client = AsyncClient(triton_server.http_url)
    first = asyncio.run(client.classify(photo))
    second = asyncio.run(client.classify(photo))  # a second asyncio.run: a new loop
    asyncio.run(client.aclose())
    assert first.scores == pytest.approx(second.scores, abs=1e-5)
