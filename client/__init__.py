"""dfserve's client SDK: classify images with a running dfserve (Triton) server.

    from dfserve import Client
    with Client("localhost:8000") as client:
        prediction = client.classify("photo.jpg")

`Client` and `AsyncClient` take the same arguments and have the same methods (`classify`, `classify_many`,
`health`, `is_ready`, `model_spec`); every error they raise on purpose is a `DfserveClientError`.
The `dfserve classify` and `dfserve eval` commands live in `dfserve.client.cli`.
"""

from __future__ import annotations

from dfserve.client._async_client import AsyncClient
from dfserve.client._client import Client
from dfserve.client._exceptions import (
    AccessDeniedError,
    ClientConfigError,
    DfserveClientError,
    IncompatibleModelError,
    InferenceError,
    InvalidInputError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerUnavailableError,
    SharedMemoryError,
)
from dfserve.client._types import Health, Prediction, Result

__all__ = [
    "AccessDeniedError",
    "AsyncClient",
    "Client",
    "ClientConfigError",
    "DfserveClientError",
    "Health",
    "IncompatibleModelError",
    "InferenceError",
    "InvalidInputError",
    "ModelNotReadyError",
    "Prediction",
    "RequestTimeoutError",
    "Result",
    "ServerUnavailableError",
    "SharedMemoryError",
]
