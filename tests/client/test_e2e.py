"""The SDK against the real server (the session's `triton_server`, and a private one for the outage test):
both protocols, sync and async, both modes, every input type, bulk classification, shared memory, and parity
with the Transformers pipeline on real photographs."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dfserve.client import (
    AccessDeniedError,
    AsyncClient,
    Client,
    DfserveClientError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    Prediction,
    ServerUnavailableError,
)
from dfserve.spec.model import ModelSpec

pytestmark = pytest.mark.slow

PROTOCOLS = ("http", "grpc")
MODES = ("file", "pixels")
TOL = 1e-5  # same pixels, same engine; only the dynamic batch a request lands in may differ


def url_of(server: Any, protocol: str) -> str:
    return server.http_url if protocol == "http" else f"grpc://{server.grpc_url}"


def every_input(path: Path) -> dict[str, Any]:
    """The same photograph as each input type `classify` accepts."""
    with Image.open(path) as img:
        img.load()
        pil = img.copy()
    return {
        "path": path,
        "str": str(path),
        "bytes": path.read_bytes(),
        "file": io.BytesIO(path.read_bytes()),
        "pil": pil,
        "numpy": np.asarray(pil.convert("RGB")),
    }


def bad_items(tmp: Path, good: Path) -> dict[str, Any]:
    truncated = tmp / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    text = tmp / "notes.jpg"
    text.write_text("this is not an image")
    return {"junk": b"junk bytes", "missing": tmp / "missing.jpg", "truncated": truncated, "text": text, "empty": b""}


@pytest.fixture(scope="module")
def reference(triton_server: Any, sample_images: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Scores of each photo, from a file-mode HTTP client."""
    with Client(triton_server.http_url) as client:
        return {name: client.classify(path).scores for name, path in sample_images.items()}


def max_delta(a: dict[str, float], b: dict[str, float]) -> float:
    assert list(a) == list(b)
    return max(abs(a[k] - b[k]) for k in a)


# ------------------------------------------------------------------------------------------------ classify


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("mode", MODES)
def test_sync_every_input_type(
    triton_server: Any, sample_images: dict[str, Path], reference: dict[str, dict[str, float]], protocol: str, mode: str
) -> None:
    photo = sample_images["chelsea"]
    with Client(url_of(triton_server, protocol), mode=mode) as client:
        for kind, item in every_input(photo).items():
            pred = client.classify(item)
            assert isinstance(pred, Prediction)
            assert max_delta(pred.scores, reference["chelsea"]) <= TOL, kind
            assert pred.path == (str(photo) if kind in ("path", "str") else None)
            assert pred.score == max(pred.scores.values()) and pred.label == max(pred.scores, key=pred.scores.get)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("mode", MODES)
async def test_async_every_input_type(
    triton_server: Any, sample_images: dict[str, Path], reference: dict[str, dict[str, float]], protocol: str, mode: str
) -> None:
    photo = sample_images["rocket"]
    async with AsyncClient(url_of(triton_server, protocol), mode=mode) as client:
        for kind, item in every_input(photo).items():
            pred = await client.classify(item)
            assert max_delta(pred.scores, reference["rocket"]) <= TOL, kind


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_prediction_names_the_model_that_answered(triton_server: Any, built_spec: ModelSpec, protocol: str) -> None:
    photo = np.asarray(Image.new("RGB", (50, 40), (10, 200, 30)))
    with (
        Client(url_of(triton_server, protocol), mode="file") as f,
        Client(url_of(triton_server, protocol), mode="pixels") as p,
    ):
        by_file, by_pixels = f.classify(photo), p.classify(photo)
        assert f.model_spec() == built_spec  # learnt from the server, not from the folder
    assert (by_file.model_name, by_pixels.model_name) == (built_spec.models.ensemble, built_spec.models.engine)
    assert by_file.model_version == by_pixels.model_version == "1"
    assert by_file.random_weights is by_pixels.random_weights is built_spec.random_weights
    assert list(by_file.scores) == list(built_spec.labels.names)
    assert sum(by_file.scores.values()) == pytest.approx(1.0, abs=1e-6)


def test_file_and_pixels_modes_agree_on_every_photo(
    triton_server: Any, sample_images: dict[str, Path], reference: dict[str, dict[str, float]]
) -> None:
    deltas = []
    for protocol in PROTOCOLS:
        with Client(url_of(triton_server, protocol), mode="pixels") as client:
            for name, path in sample_images.items():
                deltas.append(max_delta(client.classify(path).scores, reference[name]))
    print(f"file vs pixels mode: max |Δscore| = {max(deltas):.2e}")
    assert max(deltas) <= TOL


def test_parity_with_the_transformers_pipeline(
    triton_server: Any, sample_images: dict[str, Path], tiny_checkpoint: Path, built_spec: ModelSpec
) -> None:
    """What a user of `transformers.pipeline` gets for the same checkpoint and photographs, within 1e-4."""
    from transformers import pipeline

    # the processor the user's pipeline picks by itself (no backend asked for)
    clf = pipeline("image-classification", model=str(tiny_checkpoint), device="cpu")
    positive = built_spec.labels.positive
    assert positive is not None  # the tiny checkpoint has one logit: the pipeline's score is sigmoid = P(positive)
    expected = {name: clf(str(path), top_k=None)[0]["score"] for name, path in sample_images.items()}
    worst = 0.0
    for protocol in PROTOCOLS:
        for mode in MODES:
            with Client(url_of(triton_server, protocol), mode=mode) as client:
                for name, path in sample_images.items():
                    worst = max(worst, abs(client.classify(path).scores[positive] - expected[name]))
    print(
        f"SDK vs Transformers pipeline over {len(sample_images)} photos x 2 protocols x 2 modes: max |Δ| = {worst:.2e}"
    )
    assert worst <= 1e-4


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_client_shared_by_threads(
    triton_server: Any, sample_images: dict[str, Path], reference: dict[str, dict[str, float]], protocol: str
) -> None:
    results: dict[str, Prediction] = {}
    client = Client(url_of(triton_server, protocol))

    def work(name: str) -> None:
        results[name] = client.classify(sample_images[name])

    threads = [threading.Thread(target=work, args=(name,)) for name in sample_images]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()  # closes the connections the worker threads opened
    assert {n: max_delta(p.scores, reference[n]) <= TOL for n, p in results.items()} == dict.fromkeys(
        sample_images, True
    )


# ------------------------------------------------------------------------------------------------ classify_many


def _mixed(sample_images: dict[str, Path], tmp_path: Path) -> tuple[list[Any], list[str | None]]:
    """Photos interleaved with bad items; the expected label (None for a bad item) per position."""
    bad = bad_items(tmp_path, sample_images["astronaut"])
    items: list[Any] = []
    kinds: list[str | None] = []
    for (name, path), (bad_name, bad_item) in zip(sample_images.items(), list(bad.items())[:4], strict=True):
        items += [path, bad_item]
        kinds += [name, bad_name]
    items += [bad["empty"], *sample_images.values()]
    kinds += ["empty", *sample_images]
    return items, kinds


def _check_mixed(results: list[Any], kinds: list[str | None], reference: dict[str, dict[str, float]]) -> None:
    assert len(results) == len(kinds)
    messages = {"junk": "not an image", "missing": "no such file", "truncated": "truncated", "text": "not an image",
                "empty": "empty"}  # fmt: skip
    for result, kind in zip(results, kinds, strict=True):
        if kind in reference:
            assert isinstance(result, Prediction), (kind, result)
            assert max_delta(result.scores, reference[kind]) <= TOL
        else:
            assert isinstance(result, InvalidInputError), (kind, result)
            assert messages[kind] in str(result).lower(), (kind, str(result))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("mode", MODES)
def test_sync_classify_many_keeps_order_and_errors_in_place(
    triton_server: Any,
    sample_images: dict[str, Path],
    reference: dict[str, dict[str, float]],
    tmp_path: Path,
    protocol: str,
    mode: str,
) -> None:
    items, kinds = _mixed(sample_images, tmp_path)
    calls: list[tuple[int, int]] = []
    with Client(url_of(triton_server, protocol), mode=mode) as client:
        results = client.classify_many(items, concurrency=4, progress=lambda d, t: calls.append((d, t)))
        _check_mixed(results, kinds, reference)
        assert calls == [(i, len(items)) for i in range(1, len(items) + 1)]
        with pytest.raises(InvalidInputError):
            client.classify_many(items, concurrency=2, raise_on_error=True)
        assert client.classify_many([]) == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("mode", MODES)
async def test_async_classify_many_keeps_order_and_errors_in_place(
    triton_server: Any,
    sample_images: dict[str, Path],
    reference: dict[str, dict[str, float]],
    tmp_path: Path,
    protocol: str,
    mode: str,
) -> None:
    items, kinds = _mixed(sample_images, tmp_path)
    calls: list[tuple[int, int]] = []
    async with AsyncClient(url_of(triton_server, protocol), mode=mode) as client:
        results = await client.classify_many(items, concurrency=4, progress=lambda d, t: calls.append((d, t)))
        _check_mixed(results, kinds, reference)
        assert calls == [(i, len(items)) for i in range(1, len(items) + 1)]
        with pytest.raises(InvalidInputError):
            await client.classify_many(items, concurrency=2, raise_on_error=True)


def test_classify_many_bounds_concurrency(triton_server: Any, sample_images: dict[str, Path]) -> None:
    """Never more than `concurrency` requests in flight: counted around the real calls."""
    in_flight = peak = 0
    lock = threading.Lock()
    with Client(triton_server.http_url) as client:
        original = client._classify_with

        def counting(*args: Any) -> Prediction:
            nonlocal in_flight, peak
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            try:
                return original(*args)
            finally:
                with lock:
                    in_flight -= 1

        client._classify_with = counting  # type: ignore[method-assign]
        results = client.classify_many(list(sample_images.values()) * 6, concurrency=3)
    assert all(isinstance(r, Prediction) for r in results)
    assert 1 <= peak <= 3


# ------------------------------------------------------------------------------------------------ health, errors


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_health_and_unknown_models(triton_server: Any, protocol: str) -> None:
    with Client(url_of(triton_server, protocol)) as client:
        health = client.health()
        assert (health.live, health.ready, health.model_ready) == (True, True, True) and client.is_ready()
    with Client(url_of(triton_server, protocol), model="no_such_model", max_retries=0) as client:
        assert client.health().model_ready is False and not client.is_ready()
        with pytest.raises(ModelNotFoundError, match="no_such_model") as info:
            client.classify(b"anything")
        assert isinstance(info.value, ModelNotReadyError)  # what earlier versions raised: still caught
        assert info.value.status_code == 404 and info.value.model == "no_such_model"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_predictions_and_errors_carry_the_request_id(
    triton_server: Any, sample_images: dict[str, Path], protocol: str
) -> None:
    """The id the SDK sends is Triton's request id: echoed on the prediction, named in a refused input's error."""
    with Client(url_of(triton_server, protocol)) as client:
        first, second = (client.classify(sample_images["coffee"]) for _ in range(2))
        assert first.request_id and second.request_id and first.request_id != second.request_id
        with pytest.raises(InvalidInputError) as info:
            client.classify(b"\xff\xd8\xff not a jpeg")
    error = info.value
    assert error.status_code == 400 and error.request_id and error.request_id in str(error)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_async_health(triton_server: Any, protocol: str) -> None:
    async with AsyncClient(url_of(triton_server, protocol)) as client:
        assert await client.is_ready()
        assert (await client.model_spec()).labels.names


# ------------------------------------------------------------------------------------------------ shared memory


def _server_regions(server: Any) -> set[str]:
    status = server.get_json("/v2/systemsharedmemory/status", admin=True)
    return {entry["name"] for entry in status}  # type: ignore[union-attr]


def _local_regions(names: list[str]) -> list[str]:
    return [n for n in names if os.path.exists(f"/dev/shm/{n}")]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shared_memory_round_trip(
    triton_server: Any, sample_images: dict[str, Path], reference: dict[str, dict[str, float]], protocol: str
) -> None:
    key = triton_server.restricted_api_key
    with Client(url_of(triton_server, protocol), mode="pixels", shared_memory=True, admin_key=key) as client:
        for name, path in sample_images.items():
            assert max_delta(client.classify(path).scores, reference[name]) <= TOL
        results = client.classify_many(list(sample_images.values()) * 3, concurrency=3)
        assert [r.scores for r in results] == [r.scores for r in results[:4]] * 3  # type: ignore[union-attr]
        names = client.shared_memory_regions()
        assert 1 <= len(names) <= 3  # one region per request in flight, reused
        assert set(names) <= _server_regions(triton_server)
        assert _local_regions(names) == names
    assert not set(names) & _server_regions(triton_server)  # unregistered on close
    assert _local_regions(names) == []  # and destroyed


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_async_shared_memory_round_trip(
    triton_server: Any, sample_images: dict[str, Path], reference: dict[str, dict[str, float]], protocol: str
) -> None:
    key = triton_server.restricted_api_key
    async with AsyncClient(url_of(triton_server, protocol), mode="pixels", shared_memory=True, admin_key=key) as c:
        results = await c.classify_many(list(sample_images.values()), concurrency=2)
        assert [max_delta(r.scores, reference[n]) for r, n in zip(results, sample_images, strict=True)] == [  # type: ignore[union-attr]
            pytest.approx(0, abs=TOL)
        ] * 4
        names = c.shared_memory_regions()
        assert names and set(names) <= _server_regions(triton_server)
    assert not set(names) & _server_regions(triton_server) and _local_regions(names) == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shared_memory_without_the_key_is_refused_and_leaves_nothing(
    triton_server: Any, sample_images: dict[str, Path], protocol: str
) -> None:
    with Client(url_of(triton_server, protocol), mode="pixels", shared_memory=True, admin_key="wrong-key-123") as c:
        with pytest.raises(AccessDeniedError, match="dfserve-admin-key"):
            c.classify(sample_images["coffee"])
        assert c.shared_memory_regions() == []
    assert not any(n.startswith(f"dfserve_{os.getpid()}_") for n in os.listdir("/dev/shm"))


# ------------------------------------------------------------------------------------------------ outage


@pytest.fixture
def own_server(built_repo: Path) -> Iterator[dict[str, Any]]:
    """A private server (the shared one is never stopped), restartable on the same ports."""
    from dfserve.triton.distribution import free_port
    from dfserve.triton.process import TritonServer

    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    state: dict[str, Any] = {"ports": ports}

    def start() -> None:
        state["server"] = TritonServer(built_repo, **ports).start(timeout=240)

    state["restart"] = start
    start()
    try:
        yield state
    finally:
        state["server"].stop()


def test_outage_gives_server_unavailable_within_the_timeout_then_recovers(
    own_server: dict[str, Any], sample_images: dict[str, Path]
) -> None:
    server = own_server["server"]
    photo = sample_images["astronaut"]
    timeout = 3.0
    clients = [Client(url_of(server, p), mode=m, timeout=timeout) for p in PROTOCOLS for m in MODES]
    try:
        before = [c.classify(photo).scores for c in clients]
        server.stop()
        for client in clients:
            start = time.monotonic()
            with pytest.raises(ServerUnavailableError) as info:
                client.classify(photo)
            elapsed = time.monotonic() - start
            assert elapsed <= timeout, f"{client}: {elapsed:.2f}s"
            assert client._settings.address in str(info.value)
            assert not client.is_ready()
            results = client.classify_many([photo, photo], concurrency=2)
            assert all(isinstance(r, ServerUnavailableError) for r in results)
        own_server["restart"]()
        after = [c.classify(photo).scores for c in clients]  # the same clients, no reconnect by the caller
        assert all(max_delta(a, b) <= TOL for a, b in zip(before, after, strict=True))
    finally:
        for client in clients:
            client.close()


async def test_async_outage_and_recovery(own_server: dict[str, Any], sample_images: dict[str, Path]) -> None:
    photo = sample_images["coffee"]
    server = own_server["server"]
    clients = [AsyncClient(url_of(server, p), timeout=3.0) for p in PROTOCOLS]
    try:
        for client in clients:
            await client.classify(photo)
        server.stop()
        for client in clients:
            start = time.monotonic()
            with pytest.raises(ServerUnavailableError):
                await client.classify(photo)
            assert time.monotonic() - start <= 3.0
            assert (await client.health()).live is False
        own_server["restart"]()
        for client in clients:
            assert (await client.classify(photo)).label
    finally:
        for client in clients:
            await client.aclose()


def test_a_server_that_is_down_from_the_start(sample_images: dict[str, Path]) -> None:
    from dfserve.triton.distribution import free_port

    for protocol in PROTOCOLS:
        with Client(f"{protocol}://127.0.0.1:{free_port()}", timeout=2.0) as client:
            start = time.monotonic()
            with pytest.raises(ServerUnavailableError, match="server unavailable"):
                client.classify(sample_images["coffee"])
            assert time.monotonic() - start <= 2.0
            assert isinstance(client.health().error, str)


def test_closed_client_refuses_calls(triton_server: Any) -> None:
    client = Client(triton_server.http_url)
    client.close()
    client.close()  # idempotent
    with pytest.raises(DfserveClientError, match="closed"):
        client.classify(b"x")


# ------------------------------------------------------------------------------------------------ benchmark


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_overhead_benchmark_runs_and_prints(
    triton_server: Any, sample_images: dict[str, Path], protocol: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The figure itself comes from a longer run (see the module's docstring); this proves the harness works."""
    from dfserve.bench.overhead import measure_sdk_overhead

    result = measure_sdk_overhead(url_of(triton_server, protocol), list(sample_images.values()), 4, 32, rounds=2)
    assert result.bare_ips > 0 and result.sdk_ips > 0 and result.sdk_cpu_us > 0
    assert "SDK overhead" in capsys.readouterr().out


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("mode", MODES)
def test_odd_decoded_inputs_fail_alone_in_bulk_calls(
    triton_server: Any, sample_images: dict[str, Path], protocol: str, mode: str
) -> None:
    """A 0x0 image, an empty or 1-D array, a float array or an extreme strip is its own InvalidInputError; the
    good images around it are answered (issue 11: one odd input once aborted the whole call)."""
    good = list(sample_images.values())[:2]
    odd: list[Any] = [
        Image.new("RGB", (0, 0)),
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((5,), np.uint8),
        np.zeros((8, 8, 3), np.float32),
        np.zeros((1, 5000, 3), np.uint8),
    ]
    items = [good[0], *odd, good[1]]
    with Client(url_of(triton_server, protocol), mode=mode) as client:  # type: ignore[arg-type]
        results = client.classify_many(items, concurrency=3)
    assert isinstance(results[0], Prediction) and isinstance(results[-1], Prediction)
    for result in results[1:-1]:
        assert isinstance(result, InvalidInputError), result
    messages = " | ".join(str(r) for r in results[1:-1])
    assert "no pixels" in messages and "aspect ratio" in messages and "uint8" in messages
