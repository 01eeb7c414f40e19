"""One input's work, shared by the single-machine run and the Ray pipeline: read and preprocess (CPU), then
send the pixels through the SDK (network). Kept apart so that both paths compute exactly the same thing.

The CPU half is `dfserve.preprocessing.preprocess_bytes` with the served spec's preprocessing, limits and resize
mode: the very function the server's `preprocess` model runs, so pixels mode cannot drift from file mode.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dfserve.client._constants import Mode
from dfserve.client._core import Payload, build_request
from dfserve.errors import InvalidImageError
from dfserve.preprocessing import preprocess_bytes
from dfserve.score.sources import ReadError, read_bytes
from dfserve.spec.model import ModelSpec

if TYPE_CHECKING:
    from dfserve.client import Client, Prediction


@dataclass(frozen=True)
class Prepared:
    """An input after the CPU half: its digest and what to send (uint8 [3,H,W] pixels in pixels mode, the file's
    bytes in file mode), or why it cannot be scored."""

    key: str
    sha256: str | None
    payload: np.ndarray | bytes | None
    error: str | None = None


def prepare(key: str, location: str, spec: ModelSpec, mode: Mode = "pixels") -> Prepared:
    """Read `location`, hash its bytes and (pixels mode) preprocess them as the server would. Never raises for
    bad input."""
    try:
        data = read_bytes(location, spec.limits)
    except ReadError as exc:
        return Prepared(key, None, None, str(exc))
    sha = hashlib.sha256(data).hexdigest()
    if mode == "file":
        return Prepared(key, sha, data)
    try:
        return Prepared(key, sha, preprocess_bytes(data, spec.preprocessing, spec.limits, spec.resize_mode))
    except InvalidImageError as exc:
        return Prepared(key, sha, None, str(exc))


def classify_prepared(
    client: Client, spec: ModelSpec, pixels: np.ndarray | bytes, path: str | None = None
) -> Prediction:
    """Send uint8 [3,H,W] pixels, preprocessed elsewhere, to the engine through `client` (pixels mode), or an
    encoded file's bytes to the entry model (file mode), with the client's retries, timeout and error mapping.

    The SDK's own methods take an image and preprocess it in the calling thread; here the preprocessing already
    ran (in another thread, process or Ray worker), so only the request is built and sent, with the SDK's own
    request builder and result parser."""

    payload = Payload("file", pixels, path) if isinstance(pixels, bytes) else Payload("pixels", pixels, path)
    request = build_request(payload, spec, client.protocol, entry_model=client.model)
    result = client._call(client._infer_fn(request), request.model_name)
    return client._parse(result, request, spec)
