"""`classify_batch`: N images in one request, split at the served model's max batch size, against `FakeServer`
(the wire format, the splitting, the order) and, slow, the real server (the same scores as one at a time)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dfserve.client import AsyncClient, Client, InvalidInputError
from dfserve.client._batch import max_batch
from dfserve.client.testing import FakeServer, detector_spec


def image(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


def grey_scores(img: bytes | np.ndarray) -> list[float]:
    """P(fake) = the image's grey level / 255, so each answer says which image it was for."""
    level = float(np.asarray(Image.open(io.BytesIO(img)))[0, 0, 0]) if isinstance(img, bytes) else 0.0
    return [1 - level / 255, level / 255]


@pytest.mark.parametrize("count", [1, 4, 5, 11])
def test_batches_split_at_the_max_batch_size_and_keep_order(count: int) -> None:
    images = [image(10 * i) for i in range(count)]
    with FakeServer(detector_spec(max_batch_size=4), scores=grey_scores) as server, Client(server.url) as client:
        predictions = client.classify_batch(images)
        sizes = [len(r.images) for r in server.requests]
    assert sizes == [4] * (count // 4) + ([count % 4] if count % 4 else [])
    assert [p.positive_score for p in predictions] == pytest.approx([10 * i / 255 for i in range(count)], abs=1e-6)
    ids = [p.request_id for p in predictions]
    assert len(set(ids)) == len(sizes)  # one request id per request, shared by its images


def test_paths_are_named_and_a_bad_item_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(image(40 * i))
    with FakeServer(scores=grey_scores) as server, Client(server.url) as client:
        assert [p.path for p in client.classify_batch(paths)] == [str(p) for p in paths]
        with pytest.raises(InvalidInputError, match=r"missing\.png"):
            client.classify_batch([paths[0], tmp_path / "missing.png"])
        assert len(server.requests) == 1
        assert client.classify_batch([]) == []


def test_pixels_mode_batches_to_the_engine() -> None:
    with FakeServer(detector_spec(max_batch_size=2)) as server, Client(server.url, mode="pixels") as client:
        predictions = client.classify_batch([image(1), image(2), image(3)])
        assert [r.model for r in server.requests] == ["vit", "vit"]
        assert [len(r.images) for r in server.requests] == [2, 1]
        assert all(np.asarray(i).shape == (3, 224, 224) for r in server.requests for i in r.images)
    assert len(predictions) == 3


async def test_async_classify_batch() -> None:
    with FakeServer(detector_spec(max_batch_size=3), scores=grey_scores) as server:
        async with AsyncClient(server.url) as client:
            predictions = await client.classify_batch([image(0), image(51), image(102), image(255)])
        assert [len(r.images) for r in server.requests] == [3, 1]
    assert [round(p.positive_score or 0, 2) for p in predictions] == [0.0, 0.2, 0.4, 1.0]


def test_max_batch_follows_the_models_that_run_it() -> None:
    spec = detector_spec(max_batch_size=8).model_copy(
        update={"batching": detector_spec().batching.model_copy(update={"preprocess_max_batch_size": 2})}
    )
    assert (max_batch(spec, "file"), max_batch(spec, "pixels")) == (2, 8)  # the ensemble's is the smaller


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("mode", ["file", "pixels"])
def test_real_server_batch_matches_one_at_a_time(
    triton_server: Any, sample_images: dict[str, Path], protocol: str, mode: str
) -> None:
    url = triton_server.http_url if protocol == "http" else f"grpc://{triton_server.grpc_url}"
    photos = list(sample_images.values()) * 3
    with Client(url, mode=mode) as client:  # type: ignore[arg-type]
        one_by_one = [client.classify(p).scores for p in photos]
        batched = client.classify_batch(photos)
        assert max_batch(client.model_spec(), mode) >= 1  # type: ignore[arg-type]
    assert [b.path for b in batched] == [str(p) for p in photos]
    for single, many in zip(one_by_one, batched, strict=True):
        assert max(abs(single[k] - many.scores[k]) for k in single) <= 1e-5
