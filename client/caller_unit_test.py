"""A caller's unit tests, on `dfserve.client.testing.FakeServer` instead of a real server.

    python -m pytest client/caller_unit_test.py

`FakeServer` is a real HTTP server on 127.0.0.1 that speaks the protocol of a dfserve server, with the scores
each test chooses; the SDK under test runs unchanged (its wire format, retries and errors), so the service code
below is tested as it runs in production, without Triton, a model or a GPU.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

import dfserve
from dfserve.client.testing import FakeServer


def moderate(client: dfserve.Client, upload: bytes, threshold: float = 0.8) -> str:
    """The service code under test: publish, flag for review, or hold when the detector cannot answer."""
    try:
        prediction = client.classify(upload, timeout=2.0)
    except dfserve.InvalidInputError:
        return "rejected"
    except (dfserve.ServerUnavailableError, dfserve.RequestTimeoutError):
        return "held"
    p_fake = prediction.positive_score
    return "flagged" if p_fake is not None and p_fake >= threshold else "published"


def upload() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 80, 40)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(("p_fake", "expected"), [(0.95, "flagged"), (0.8, "flagged"), (0.3, "published")])
def test_verdict_follows_p_fake(p_fake: float, expected: str) -> None:
    with FakeServer(scores={"real": 1 - p_fake, "fake": p_fake}) as server, dfserve.Client(server.url) as client:
        assert moderate(client, upload()) == expected
        assert len(server.requests) == 1 and server.requests[0].images == [upload()]


def test_a_detector_that_is_down_holds_the_upload() -> None:
    with FakeServer() as server, dfserve.Client(server.url) as client:
        server.fail_next(503, times=3)  # the first try and both retries
        assert moderate(client, upload()) == "held"


def test_a_hung_detector_holds_the_upload_within_the_timeout() -> None:
    with FakeServer() as server, dfserve.Client(server.url) as client:
        client.model_spec()
        server.freeze()
        assert moderate(client, upload()) == "held"
        server.thaw()


def test_a_file_that_is_not_an_image_is_rejected() -> None:
    with FakeServer() as server, dfserve.Client(server.url) as client:
        assert moderate(client, b"%PDF-1.7 not an image") == "rejected"
