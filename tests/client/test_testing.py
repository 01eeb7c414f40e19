"""`dfserve.client.testing.FakeServer` used the way a caller's unit tests would use it: a small service under
test talks to it through the real `Client`/`AsyncClient`, with scores the test chose, and sees the failures a
real server can give (503 with Retry-After, a refused image, an unknown model, a hung server)."""

from __future__ import annotations

import io
import logging
import time

import numpy as np
import pytest
from PIL import Image

from dfserve.client import (
    AsyncClient,
    Client,
    InvalidInputError,
    ModelNotFoundError,
    Prediction,
    ServerUnavailableError,
)
from dfserve.client.testing import FakeServer, detector_spec
from dfserve.spec.model import Labels, ModelSpec, Preprocessing


def jpeg(colour: tuple[int, int, int] = (10, 200, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, format="JPEG")
    return buf.getvalue()


# --------------------------------------------------------------------------- the "caller": a service under test


class Moderation:
    """What a caller might write: flag an upload whose P(fake) is at or above a threshold, and hold it for a
    person when the detector is down."""

    def __init__(self, client: Client, threshold: float = 0.5) -> None:
        self.client = client
        self.threshold = threshold

    def verdict(self, upload: bytes) -> str:
        try:
            prediction = self.client.classify(upload)
        except ServerUnavailableError:
            return "held"
        except InvalidInputError:
            return "rejected"
        assert prediction.positive_score is not None
        return "flagged" if prediction.positive_score >= self.threshold else "published"


@pytest.mark.parametrize(("p_fake", "expected"), [(0.9, "flagged"), (0.5, "flagged"), (0.2, "published")])
def test_a_service_decides_from_the_scores_the_test_chose(p_fake: float, expected: str) -> None:
    with FakeServer(scores={"real": 1 - p_fake, "fake": p_fake}) as server, Client(server.url) as client:
        assert Moderation(client).verdict(jpeg()) == expected
        (request,) = server.requests
        assert request.model == "detector" and request.images == [jpeg()]  # the bytes as sent
        assert request.request_id  # the SDK sends one; the same id is on the prediction and on any error


def test_a_service_handles_the_servers_failures() -> None:
    with FakeServer(scores=[0.1, 0.9]) as server, Client(server.url, max_retries=0) as client:
        service = Moderation(client)
        server.fail_next(503, "server is shutting down")
        assert service.verdict(jpeg()) == "held"
        assert service.verdict(b"not an image at all") == "rejected"  # refused by the server, 400
        assert service.verdict(jpeg()) == "flagged"


def test_scores_from_a_function_of_the_image() -> None:
    """A `ScoresFn` sees each image: here, red images are fakes."""

    def by_colour(image: bytes | np.ndarray) -> dict[str, float]:
        assert isinstance(image, bytes)
        red = Image.open(io.BytesIO(image)).convert("RGB").getpixel((0, 0))[0] > 128  # type: ignore[index]
        return {"real": 0.05, "fake": 0.95} if red else {"real": 0.95, "fake": 0.05}

    with FakeServer(scores=by_colour) as server, Client(server.url) as client:
        assert client.classify(jpeg((250, 0, 0))).label == "fake"
        assert client.classify(jpeg((0, 0, 250))).label == "real"


def test_pixels_mode_and_a_softmax_spec() -> None:
    spec = ModelSpec(
        source="caller-test",
        labels=Labels(names=("cat", "dog", "bird"), activation="softmax", num_logits=3),
        preprocessing=Preprocessing(resize="fixed", size=(32, 32)),
    )
    seen: list[tuple[int, ...]] = []

    def scores(image: bytes | np.ndarray) -> list[float]:
        seen.append(np.asarray(image).shape)
        return [0.1, 0.7, 0.2]

    with FakeServer(spec, scores=scores) as server, Client(server.url, mode="pixels") as client:
        prediction = client.classify(jpeg())
    assert prediction.label == "dog" and prediction.positive_score is None and prediction.model_name == "vit"
    assert seen == [(3, 32, 32)]  # the SDK preprocessed with the served spec and sent uint8 pixels


def test_health_readiness_and_unknown_models() -> None:
    with FakeServer() as server, Client(server.url) as client:
        assert client.is_ready()
        server.ready = False
        health = client.health()
        assert health.live and not health.ready and not client.is_ready()
    with FakeServer() as server, Client(server.url, model="no_such_model") as client:
        with pytest.raises(ModelNotFoundError) as info:
            client.classify(jpeg())
        assert info.value.status_code == 404 and "no_such_model" in str(info.value)


def test_retry_after_is_honoured(caplog: pytest.LogCaptureFixture) -> None:
    with FakeServer() as server, Client(server.url) as client:
        client.model_spec()
        server.fail_next(429, "slow down", retry_after=0.6)
        start = time.monotonic()
        with caplog.at_level(logging.INFO, logger="dfserve.client"):
            assert isinstance(client.classify(jpeg()), Prediction)
        elapsed = time.monotonic() - start
    assert 0.6 <= elapsed < 1.5, elapsed  # the server's 0.6 s, not the SDK's own 0.5 s less jitter
    assert any("retry 1 in 0.60 s" in r.getMessage() for r in caplog.records)


async def test_async_retry_after_and_a_stub_restarting() -> None:
    with FakeServer() as server:
        async with AsyncClient(server.url) as client:
            await client.model_spec()
            server.fail_next(503, retry_after=0.4)
            server.fail_next(500, "Stub process 'preprocess_0_0' is not healthy.")  # Triton's, while it restarts
            start = time.monotonic()
            assert (await client.classify(jpeg())).label in ("real", "fake")
            assert time.monotonic() - start >= 0.4
            server.fail_next(503, times=3)  # more than the 2 retries: the error, with the server's status
            with pytest.raises(ServerUnavailableError) as info:
                await client.classify(jpeg())
    assert info.value.status_code == 503 and info.value.request_id


def test_default_spec_and_its_checks() -> None:
    spec = detector_spec(("authentic", "synthetic"), max_batch_size=4)
    assert spec.labels.positive == "synthetic" and spec.batching.max_batch_size == 4
    with pytest.raises(ValueError, match="each label"):
        FakeServer(scores={"real": 0.5})
    with pytest.raises(RuntimeError, match="not started"):
        _ = FakeServer().url
