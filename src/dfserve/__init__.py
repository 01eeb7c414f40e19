"""dfserve: Triton-served inference for Hugging Face ViT-family image classifiers.

The bare install is the SDK (`Client`, `AsyncClient`); `dfserve[build]`, `[server]`, `[loadtest]` add the
build, the embedded server and the load tests.

The SDK's names are re-exported here but imported on first access, so `import dfserve` stays instant
(the CLI, the build and the server import it without paying for numpy, Pillow or tritonclient).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dfserve._version import __version__

if TYPE_CHECKING:
    from dfserve.client import (
        AccessDeniedError,
        AsyncClient,
        Client,
        ClientConfigError,
        DfserveClientError,
        Health,
        IncompatibleModelError,
        InferenceError,
        InvalidInputError,
        ModelNotReadyError,
        Prediction,
        RequestTimeoutError,
        RequestTooLargeError,
        Result,
        ServerUnavailableError,
        SharedMemoryError,
        TLSError,
    )

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
    "RequestTooLargeError",
    "Result",
    "ServerUnavailableError",
    "SharedMemoryError",
    "TLSError",
    "__version__",
]

_SDK_NAMES = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    if name in _SDK_NAMES:
        value = getattr(importlib.import_module("dfserve.client"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dfserve' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
