"""From what tritonclient raised to the one SDK error a caller can act on: HTTP statuses and gRPC codes mapped
once for both protocols (with an int `status_code` on every error), the phrases Triton uses for a model that is
not there, not loaded or whose stub is restarting, and the transport failures (TLS, timeouts, refused
connections) that never reached Triton.
"""

from __future__ import annotations

import http.client
import socket
import sys
from typing import TYPE_CHECKING, Any

from dfserve.client._exceptions import (
    AccessDeniedError,
    DfserveClientError,
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
from dfserve.errors import InvalidImageError

if TYPE_CHECKING:
    pass


_GRPC_TO_ERROR: dict[str, type[DfserveClientError]] = {
    "UNAVAILABLE": ServerUnavailableError,
    "CANCELLED": ServerUnavailableError,  # Triton cancels in-flight requests while it shuts down: try again
    "DEADLINE_EXCEEDED": RequestTimeoutError,
    "UNAUTHENTICATED": AccessDeniedError,
    "PERMISSION_DENIED": AccessDeniedError,
    "NOT_FOUND": ModelNotReadyError,
    "INVALID_ARGUMENT": InvalidInputError,
    "RESOURCE_EXHAUSTED": RequestTooLargeError,
}


_HTTP_TO_ERROR: dict[str, type[DfserveClientError]] = {
    "400": InvalidInputError,
    "401": AccessDeniedError,
    "403": AccessDeniedError,
    "404": ModelNotReadyError,
    "408": RequestTimeoutError,
    "413": RequestTooLargeError,
    "429": ServerUnavailableError,
    "502": ServerUnavailableError,
    "503": ServerUnavailableError,
    "504": RequestTimeoutError,
}


GRPC_HTTP_STATUS: dict[str, int] = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 413,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}
"""The HTTP status of each gRPC code, as Google's API design guide maps them (google.rpc.Code), except
RESOURCE_EXHAUSTED: gRPC's size limit and dfserve's proxy use it for a body that is too large, HTTP's 413."""


# Errors are mapped by status. Triton (2.51, measured) answers an unknown model, or one with no loaded version
# while the server starts or stops, with 404 / NOT_FOUND, a bad image with 400 / INVALID_ARGUMENT and the
# restricted HTTP APIs without the key with 403; those statuses suffice. dfserve's nginx proxy
# (dfserve.triton.proxy) refuses a body over its limit with 413 / RESOURCE_EXHAUSTED (gRPC's own code for a message
# over its size limit), both final, and the restricted APIs over their rate with 429 / UNAVAILABLE, both retried.
# Where the status alone is not enough, the message decides:
# - a restricted gRPC protocol called without the key answers UNAVAILABLE ("This protocol is restricted"),
#   which would otherwise be retried as a server that is down;
# - gRPC reports a failed TLS handshake only as UNAVAILABLE ("Ssl handshake failed", "certificate ...");
# - a name the server does not know ("Request for unknown model: 'x' is not found") is a `ModelNotFoundError`;
#   a known model that is not loaded says "is not ready" or "has no available versions";
# - a dead or restarting Python-backend stub answers 500 / INTERNAL, "Stub process '<name>' is not healthy."
#   (or "Stub process is not healthy.", "Model '<name>' is not ready."; the strings of Triton 2.51's
#   libtriton_python.so). Inference is idempotent, and dfserve's launcher restarts the server, so a 500 that says
#   "is not healthy" or "is not ready" is a retryable `ServerUnavailableError` carrying the server's 500.
_GRPC_RESTRICTED_PHRASES = ("restricted", "expecting header")


_TLS_PHRASES = ("ssl", "handshake", "certificate")


_NOT_FOUND_PHRASES = ("is not found", "unknown model")


_NOT_LOADED_PHRASES = ("is not ready", "no available version", "not loaded")


_STUB_STATES = ("is not healthy", "is not ready")
STUB_RESTART_WAIT_S = 5.0
"""How long to wait after a dead stub's 500 before trying again: Triton 2.51 heals a dead Python-backend stub only
by a whole-server restart (`dfserve serve` notices within a second and is ready again 3-5 s later), so the short
backoff of the default two retries would spend both before the server is back."""
"""In a 500 / INTERNAL (`InferenceError` by status): a stub, or the model it runs, that is coming back."""


def status_code_of(code: str) -> int | None:
    """The HTTP status of a server's status text: itself for ``"404"``, the mapped code for ``"NOT_FOUND"``."""
    if code.isdigit():
        return int(code)
    return GRPC_HTTP_STATUS.get(code)


def map_error(
    exc: BaseException,
    *,
    url: str,
    model: str | None = None,
    timeout: float | None = None,
    request_id: str | None = None,
) -> DfserveClientError:
    """Convert any exception met during a call to the most specific `DfserveClientError`, naming the cause, the
    model and the request id; a timeout reads the same whichever protocol and layer noticed it.

    The one place that knows tritonclient's, gRPC's, aiohttp's and the socket layer's exceptions.
    """
    if isinstance(exc, DfserveClientError):
        if exc.request_id is None and request_id is not None:
            exc.request_id = request_id
        return exc
    where = f"{url}" + (f", model {model!r}" if model else "") + (f", request {request_id}" if request_id else "")
    fields: dict[str, Any] = {"url": url, "model": model, "request_id": request_id}
    timed_out = f"timed out waiting for {where}" + (f": no answer within {timeout:g} s" if timeout else "")
    if isinstance(exc, InvalidImageError):
        return InvalidInputError(str(exc), **fields)
    from tritonclient.utils import InferenceServerException
    from tritonclient.utils.shared_memory import SharedMemoryException

    if isinstance(exc, SharedMemoryException):
        return SharedMemoryError(f"system shared memory: {exc}", **fields)
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        message = str(exc.message() or "").strip() or str(exc)
        code = status.removeprefix("StatusCode.")
        cls = _GRPC_TO_ERROR.get(code) or _HTTP_TO_ERROR.get(code) or InferenceError
        status_code = status_code_of(code)
        lowered = message.lower()
        if not status and _looks_like_connection_failure(lowered):
            cls = ServerUnavailableError  # tritonclient's own wrapper of a socket error, without a status
        if code == "UNAVAILABLE" and any(p in lowered for p in _GRPC_RESTRICTED_PHRASES):
            cls, status_code = AccessDeniedError, AccessDeniedError.default_status_code
        elif cls is ServerUnavailableError and any(p in lowered for p in _TLS_PHRASES):
            cls = TLSError
        elif (
            cls is ModelNotReadyError
            and any(p in lowered for p in _NOT_FOUND_PHRASES)
            and not any(p in lowered for p in _NOT_LOADED_PHRASES)
        ):
            cls = ModelNotFoundError
        stub_restart = cls is InferenceError and any(p in lowered for p in _STUB_STATES)
        if stub_restart:
            cls = ServerUnavailableError  # a stub restarting; the server's 500 stays in status_code
        if cls is RequestTimeoutError:
            return cls(timed_out, status=code or None, status_code=status_code, **fields)
        prefix = {
            ServerUnavailableError: "server unavailable",
            AccessDeniedError: "access denied",
            ModelNotReadyError: "model not ready",
            ModelNotFoundError: "model not found",
            InvalidInputError: "input refused by the server",
            RequestTooLargeError: "request too large",
            TLSError: "TLS handshake failed",
        }.get(cls, "server error")
        return cls(
            f"{prefix} ({where}, status {code or 'none'}): {message}",
            status=code or None,
            status_code=status_code,
            retry_after=getattr(exc, "retry_after", None) or (STUB_RESTART_WAIT_S if stub_restart else None),
            **fields,
        )
    if _is_tls_failure(exc):
        return TLSError(f"TLS handshake with {where} failed: {_exc_text(exc)}", **fields)
    if isinstance(exc, http.client.HTTPException) and "parse" in type(exc).__name__.lower():
        return InferenceError(
            f"{where} did not answer in HTTP ({_exc_text(exc)}): is this Triton's gRPC port? "
            "Use grpc://host:port (Triton's default gRPC port is 8001)",
            **fields,
        )
    if _is_timeout(exc):
        return RequestTimeoutError(timed_out, **fields)
    if _is_connection_error(exc):
        return ServerUnavailableError(f"server unavailable at {where}: {_exc_text(exc)}", **fields)
    return InferenceError(f"unexpected error talking to {where}: {_exc_text(exc)}", **fields)


class CallTimeout(TimeoutError):
    """A call's deadline passed on our side (the HTTP clients have no per-call timeout of their own). Its
    connection may hold half a response, so the connection pool discards that connection."""

    discard_connection = True


def _exc_text(exc: BaseException) -> str:
    text = str(exc).strip()
    inner = exc.__cause__ or exc.__context__
    if not text and inner is not None:
        text = str(inner).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _looks_like_connection_failure(message: str) -> bool:
    return any(p in message for p in ("connection refused", "failed to connect", "connection reset", "broken pipe"))


def _is_tls_failure(exc: BaseException) -> bool:
    import ssl

    if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
        return True
    aiohttp = sys.modules.get("aiohttp")  # not imported: not an aiohttp error (and the sync client stays light)
    return aiohttp is not None and isinstance(exc, aiohttp.ClientSSLError)


def _is_timeout(exc: BaseException) -> bool:
    import asyncio

    if isinstance(exc, TimeoutError | socket.timeout | asyncio.TimeoutError):
        return True
    return type(exc).__name__ == "Timeout" and type(exc).__module__.startswith("gevent")


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | socket.gaierror | http.client.RemoteDisconnected):
        return True
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None and isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ServerDisconnectedError):
        return True
    if isinstance(exc, http.client.HTTPException) and "closed" in type(exc).__name__.lower():
        return True  # geventhttpclient's HTTPConnectionClosed: the server went away mid-response
    return isinstance(exc, OSError) and exc.errno is not None  # unreachable network/host and kin
