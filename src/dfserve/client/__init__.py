"""dfserve's client SDK: classify images with a running dfserve (Triton) server.

    from dfserve import Client
    with Client("localhost:8000") as client:
        prediction = client.classify("photo.jpg")

`Client` and `AsyncClient` take the same arguments and have the same methods (`classify`, `classify_batch`,
`classify_many`, `health`, `is_ready`, `model_spec`); every error they raise on purpose is a
`DfserveClientError`. `dfserve.client.testing.FakeServer` is a real local HTTP server that speaks the same
protocol with scores you choose, for your own unit tests.
The `dfserve classify` and `dfserve eval` commands live in `dfserve.quality.cli`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dfserve.client._async_client import AsyncClient
    from dfserve.client._client import Client
    from dfserve.client._exceptions import (
        AccessDeniedError,
        ClientConfigError,
        DfserveClientError,
        IncompatibleModelError,
        InferenceError,
        InvalidInputError,
        ModelNotFoundError,
        ModelNotReadyError,
        RequestTimeoutError,
        RequestTooLargeError,
        ServerUnavailableError,
        SharedMemoryError,
        TLSError,
    )
    from dfserve.client._types import Health, Prediction, Result

# Imported on first access: `dfserve classify --help` and the CLI's other commands import this package's
# light modules (constants, types) without paying for numpy, Pillow and tritonclient.
_WHERE = {
    "AsyncClient": "_async_client",
    "Client": "_client",
    "Health": "_types",
    "Prediction": "_types",
    "Result": "_types",
    **dict.fromkeys(
        (
            "AccessDeniedError",
            "ClientConfigError",
            "DfserveClientError",
            "IncompatibleModelError",
            "InferenceError",
            "InvalidInputError",
            "ModelNotFoundError",
            "ModelNotReadyError",
            "RequestTimeoutError",
            "RequestTooLargeError",
            "ServerUnavailableError",
            "SharedMemoryError",
            "TLSError",
        ),
        "_exceptions",
    ),
}
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
    "ModelNotFoundError",
    "ModelNotReadyError",
    "Prediction",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "Result",
    "ServerUnavailableError",
    "SharedMemoryError",
    "TLSError",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'dfserve.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dfserve.client.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
