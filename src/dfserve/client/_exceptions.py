"""The SDK's exceptions, one class per thing a caller can act on.

    DfserveError                            (dfserve.errors)
    └── DfserveClientError                  everything the SDK raises on purpose                  status_code
        ├── ClientConfigError               bad constructor or call arguments (also a ValueError)   400
        ├── ServerUnavailableError          connection refused/reset, DNS failure, UNAVAILABLE,     503
        │                                   HTTP 429/502/503, a Python-backend stub restarting
        ├── TLSError                        the TLS handshake failed (untrusted certificate, ...)   503
        ├── RequestTimeoutError             no answer within the timeout (also a TimeoutError)      504
        ├── InvalidInputError               the image was refused, here or by the server (ValueError) 400
        │   └── RequestTooLargeError        the request body is over the server's (its proxy's) limit 413
        ├── ModelNotReadyError              the model is not loaded (yet)                           503
        │   └── ModelNotFoundError          the server does not know the model at all              404
        ├── IncompatibleModelError          the served model carries no usable dfserve spec         422
        ├── AccessDeniedError               a restricted API (e.g. shared memory) refused the key   403
        ├── SharedMemoryError               a local shared-memory region could not be used          500
        └── InferenceError                  any other error the server answered with                500

Backend exceptions (tritonclient, gRPC, aiohttp, sockets) are converted to these in exactly one place,
`dfserve.client._errors.map_error`, and chained with ``raise ... from`` so the original stays in the traceback.
Every error carries the server URL, an int `status_code` (the server's HTTP status; for gRPC the HTTP status of
its code, as Google's API design guide maps them; where the server did not answer, the class's own code in the
table above), the model and the request id it was sent with, so that a log line is enough to act on and can be
matched with the server's log.
"""

from __future__ import annotations

from dfserve.errors import DfserveError


class DfserveClientError(DfserveError):
    """Base of everything the SDK raises on purpose.

    `url` is the server the call went to; `status` the server's own status when it answered (an HTTP code or a
    gRPC status name, as text); `status_code` an int always (see the module's table); `model` the model the call
    went to and `request_id` the id it was sent with (Triton's request ``id``), where there was one;
    `retry_after` the seconds the server asked to wait (HTTP ``Retry-After``), if it did; `retryable` whether
    the SDK's retry policy treats the error as transient.
    """

    retryable: bool = False
    default_status_code: int = 500

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: str | None = None,
        status_code: int | None = None,
        model: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.url = url
        self.status = status
        self.status_code: int = self.default_status_code if status_code is None else int(status_code)
        self.model = model
        self.request_id = request_id
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[object, ...]:  # keep keyword fields across pickling (process pools)
        fields = {
            "url": self.url,
            "status": self.status,
            "status_code": self.status_code,
            "model": self.model,
            "request_id": self.request_id,
            "retry_after": self.retry_after,
        }
        return (_rebuild, (type(self), self.message, fields))


def _rebuild(cls: type[DfserveClientError], message: str, fields: dict[str, object]) -> DfserveClientError:
    return cls(message, **fields)  # type: ignore[arg-type]


class ClientConfigError(DfserveClientError, ValueError):
    """An argument given to the SDK is invalid or ambiguous (e.g. a URL scheme contradicting `protocol`)."""

    default_status_code = 400


class ServerUnavailableError(DfserveClientError):
    """The server could not be reached, or it said it cannot serve now (503, 429, a Python-backend stub that is
    being restarted). Retried with backoff, after the server's ``Retry-After`` when it sends one."""

    retryable = True
    default_status_code = 503


class TLSError(DfserveClientError):
    """The TLS handshake failed: the server's certificate is not trusted by the CA given (or the system's), its
    name does not match, it asked for a client certificate, or one side does not speak TLS. Not retried."""

    default_status_code = 503


class RequestTimeoutError(DfserveClientError, TimeoutError):
    """The server did not answer within the timeout (the same message over HTTP and gRPC). Not retried: a slow
    server retried gets slower."""

    default_status_code = 504


class InvalidInputError(DfserveClientError, ValueError):
    """The image was refused (not an image, empty, too large, wrong array layout); the message says why."""

    default_status_code = 400


class RequestTooLargeError(InvalidInputError):
    """The request body is larger than the server accepts: HTTP 413, or gRPC RESOURCE_EXHAUSTED (the code gRPC
    gives a message over its size limit, and dfserve's nginx proxy answers). The message names the limit. Not
    retried: the same request would be refused again."""

    default_status_code = 413


class ModelNotReadyError(DfserveClientError):
    """The model is not loaded (yet), or not known to the server (`ModelNotFoundError`, a subclass, so that code
    written for earlier versions, which raised this for both, still catches both)."""

    default_status_code = 503


class ModelNotFoundError(ModelNotReadyError):
    """The server does not know this model name (Triton: "Request for unknown model: 'x' is not found"): a typo
    or the wrong server, not a model still loading. Not retried, unless the server says it is not ready."""

    default_status_code = 404


class IncompatibleModelError(DfserveClientError):
    """The served model has no `dfserve_spec` parameter, or one this SDK cannot read."""

    default_status_code = 422


class AccessDeniedError(DfserveClientError):
    """A restricted endpoint refused the request: the header with the server's key is missing or wrong."""

    default_status_code = 403


class SharedMemoryError(DfserveClientError):
    """A local system shared-memory region could not be created, written or read."""


class InferenceError(DfserveClientError):
    """The server answered with an error not covered by a more specific class."""
