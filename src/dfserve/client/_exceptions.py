"""The SDK's exceptions, one class per thing a caller can act on.

    DfserveError                            (dfserve.errors)
    └── DfserveClientError                  everything the SDK raises on purpose
        ├── ClientConfigError               bad constructor or call arguments (also a ValueError)
        ├── ServerUnavailableError          connection refused/reset, DNS failure, UNAVAILABLE / HTTP 503
        ├── TLSError                        the TLS handshake failed (untrusted certificate, wrong host, no TLS)
        ├── RequestTimeoutError             no answer within the timeout (also a builtin TimeoutError)
        ├── InvalidInputError               the image was refused, locally or by the server (also a ValueError)
        │   └── RequestTooLargeError        the request body is over the server's (its proxy's) size limit
        ├── ModelNotReadyError              the model is unknown to the server or not loaded
        ├── IncompatibleModelError          the served model carries no usable dfserve spec
        ├── AccessDeniedError               a restricted API (e.g. shared memory) refused the request's key
        ├── SharedMemoryError               a local shared-memory region could not be created or used
        └── InferenceError                  any other error the server answered with

Backend exceptions (tritonclient, gRPC, aiohttp, sockets) are converted to these in exactly one place,
`dfserve.client._core.map_error`, and chained with ``raise ... from`` so the original stays in the traceback.
Every error carries the server URL and, where the server answered, its status, so that a log line is enough
to act on.
"""

from __future__ import annotations

from dfserve.errors import DfserveError


class DfserveClientError(DfserveError):
    """Base of everything the SDK raises on purpose.

    `url` is the server the call went to, `status` the server's status (HTTP code or gRPC status name) when
    it answered, `retryable` whether the SDK's retry policy treats the error as transient.
    """

    retryable: bool = False

    def __init__(self, message: str, *, url: str | None = None, status: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.url = url
        self.status = status

    def __reduce__(self) -> tuple[object, ...]:  # keep keyword fields across pickling (process pools)
        return (_rebuild, (type(self), self.message, self.url, self.status))


def _rebuild(cls: type[DfserveClientError], message: str, url: str | None, status: str | None) -> DfserveClientError:
    return cls(message, url=url, status=status)


class ClientConfigError(DfserveClientError, ValueError):
    """An argument given to the SDK is invalid or ambiguous (e.g. a URL scheme contradicting `protocol`)."""


class ServerUnavailableError(DfserveClientError):
    """The server could not be reached, or it said it cannot serve now. Retried with backoff."""

    retryable = True


class TLSError(DfserveClientError):
    """The TLS handshake failed: the server's certificate is not trusted by the CA given (or the system's), its
    name does not match, it asked for a client certificate, or one side does not speak TLS. Not retried."""


class RequestTimeoutError(DfserveClientError, TimeoutError):
    """The server did not answer within the timeout. Not retried: a slow server retried gets slower."""


class InvalidInputError(DfserveClientError, ValueError):
    """The image was refused (not an image, empty, too large, wrong array layout); the message says why."""


class RequestTooLargeError(InvalidInputError):
    """The request body is larger than the server accepts: HTTP 413, or gRPC RESOURCE_EXHAUSTED (the code gRPC
    gives a message over its size limit, and dfserve's nginx proxy answers). The message names the limit. Not
    retried: the same request would be refused again."""


class ModelNotReadyError(DfserveClientError):
    """The model is not known to the server or not loaded (yet)."""


class IncompatibleModelError(DfserveClientError):
    """The served model has no `dfserve_spec` parameter, or one this SDK cannot read."""


class AccessDeniedError(DfserveClientError):
    """A restricted endpoint refused the request: the header with the server's key is missing or wrong."""


class SharedMemoryError(DfserveClientError):
    """A local system shared-memory region could not be created, written or read."""


class InferenceError(DfserveClientError):
    """The server answered with an error not covered by a more specific class."""
