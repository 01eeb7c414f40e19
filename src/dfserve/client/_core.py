"""Everything the sync and async clients share, with no network I/O: settings, turning an input into a request,
turning a response into a `Prediction`, the retry policy and the mapping of backend errors to ours.

`Client` and `AsyncClient` only hold their send loops; they call into this module before and after each
request, so the two cannot drift apart (the httpx `BaseClient` pattern). Reading a local file or preprocessing
pixels happens here too: that is disk and CPU work, not the network.
"""

from __future__ import annotations

import http.client
import io
import logging
import math
import random
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from dfserve.client._exceptions import (
    AccessDeniedError,
    ClientConfigError,
    DfserveClientError,
    IncompatibleModelError,
    InferenceError,
    InvalidInputError,
    ModelNotReadyError,
    RequestTimeoutError,
    RequestTooLargeError,
    ServerUnavailableError,
    SharedMemoryError,
    TLSError,
)
from dfserve.client._types import Prediction
from dfserve.errors import EmptyImageError, EndpointError, ImageTooLargeError, InvalidImageError
from dfserve.preprocessing import ImageInput, array_to_image, check_size, load_rgb, preprocess, read_image_bytes
from dfserve.spec.endpoints import Endpoint, parse_endpoint
from dfserve.spec.model import RESIZE_MODES, SPEC_PARAMETER, ModelNames, ModelSpec, ResizeMode, spec_from_model_config

if TYPE_CHECKING:
    from dfserve.client._shm import ShmSlot

from dfserve.client._constants import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    INITIAL_RETRY_DELAY,
    MAX_RETRY_DELAY,
    MODES,
    Mode,
    ProtocolName,
)
from dfserve.spec.names import ADMIN_KEY_HEADER, GRPC_RESTRICTED_HEADER_PREFIX

MAX_JITTER = 0.25
"""Each backoff delay is shortened by a random fraction up to this, so clients that failed together retry apart."""
GRPC_MAX_MESSAGE_BYTES = 2**31 - 1
GRPC_MAX_RECONNECT_BACKOFF_MS = 1000
"""gRPC's default reconnect backoff grows to 120 s, so a channel would keep failing long after a restarted server
is back; our own retry policy already spaces attempts."""


# --------------------------------------------------------------------------------------------------- settings


def resolve_endpoint(url: str, protocol: str | None) -> tuple[str, ProtocolName]:
    """Split a user's URL into the ``host:port`` tritonclient wants and the protocol to speak, for a caller that
    speaks plain text only (the bare-tritonclient comparison of `_overhead`); the clients use `endpoint`."""
    parsed = endpoint(url, protocol)
    if parsed.tls:
        raise ClientConfigError(f"{url!r} asks for TLS; this tool speaks plain http:// or grpc:// only")
    return parsed.address, parsed.protocol


def endpoint(url: str, protocol: str | None) -> Endpoint:
    """`dfserve.spec.endpoints.parse_endpoint` (the one parser the SDK, the load tests and verify share), its
    refusal as our `ClientConfigError`. ``https://`` and ``grpcs://`` mean TLS."""
    try:
        return parse_endpoint(url, protocol)
    except EndpointError as exc:
        raise ClientConfigError(str(exc)) from exc


@dataclass(frozen=True)
class ClientSettings:
    """Validated client options; built once by `make_settings` so that both clients reject the same input."""

    address: str
    protocol: ProtocolName
    timeout: float
    max_retries: int | None
    mode: Mode
    model: str
    headers: Mapping[str, str] = field(default_factory=dict)
    shared_memory: bool = False
    resize_mode: ResizeMode | None = None
    """None: the served spec's own mode, so pixels mode computes what the server would."""
    admin_key: str | None = None
    tls: bool = False
    """TLS (``https://``, ``grpcs://``): the server's certificate is checked against `ca_file`, else the
    system's trust store."""
    ca_file: str | None = None
    cert_file: str | None = None
    """A client certificate (PEM) for servers that ask for one (mutual TLS), with its `key_file`."""
    key_file: str | None = None

    @property
    def url(self) -> str:
        """The server as a person reads it in an error message: ``grpcs://host:port``."""
        return f"{self.protocol}{'s' if self.tls else ''}://{self.address}"


def make_settings(
    url: str = DEFAULT_URL,
    protocol: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_retries: int | None = DEFAULT_MAX_RETRIES,
    mode: str = "file",
    model: str | None = None,
    headers: Mapping[str, str] | None = None,
    shared_memory: bool = False,
    resize_mode: str | None = None,
    admin_key: str | None = None,
    tls: bool | None = None,
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
) -> ClientSettings:
    parsed = endpoint(url, protocol)
    address, proto, scheme_tls = parsed.address, parsed.protocol, parsed.tls
    if tls is False and scheme_tls:
        raise ClientConfigError(f"url {url!r} asks for TLS but tls=False; pass one or make them agree")
    use_tls = bool(tls or scheme_tls or ca_file or cert_file)
    files: dict[str, str | None] = {}
    for name, value in (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file)):
        if value is not None and not Path(value).is_file():
            raise ClientConfigError(f"{name} {str(value)!r} is not a file")
        files[name] = str(value) if value is not None else None
    if (cert_file is None) != (key_file is None):
        raise ClientConfigError("cert_file and key_file go together: a client certificate needs its private key")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        raise ClientConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if max_retries is not None and (
        isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0
    ):
        raise ClientConfigError(f"max_retries must be None (until the timeout) or an integer >= 0, got {max_retries!r}")
    if mode not in MODES:
        raise ClientConfigError(
            f"mode must be 'file' (send the encoded image) or 'pixels' (preprocess here), got {mode!r}"
        )
    if resize_mode is not None and resize_mode not in RESIZE_MODES:
        raise ClientConfigError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {resize_mode!r}")
    if shared_memory and mode != "pixels":
        raise ClientConfigError(
            "shared_memory=True needs mode='pixels': only preprocessed pixels go through shared memory"
        )
    model = model or ModelNames().ensemble
    if not isinstance(model, str) or not model.strip():
        raise ClientConfigError(f"model must be a model name, got {model!r}")
    clean_headers = {str(k): str(v) for k, v in (headers or {}).items()}
    return ClientSettings(
        address=address,
        protocol=proto,
        timeout=float(timeout),
        max_retries=max_retries,
        mode=mode,
        model=model,
        headers=clean_headers,
        shared_memory=bool(shared_memory),
        resize_mode=resize_mode,
        admin_key=admin_key or None,
        tls=use_tls,
        **files,
    )


_MODULES: dict[str, ModuleType] = {}


def triton_module(protocol: ProtocolName, *, aio: bool = False) -> ModuleType:
    """tritonclient's module for a protocol, imported on first use so that `import dfserve` stays light."""
    name = f"tritonclient.{protocol}{'.aio' if aio else ''}"
    module = _MODULES.get(name)
    if module is None:
        import importlib

        module = _MODULES[name] = importlib.import_module(name)
    return module


def grpc_channel_args() -> list[tuple[str, Any]]:
    """tritonclient's own message-size options plus a short reconnect backoff (see GRPC_MAX_RECONNECT_BACKOFF_MS)."""
    return [
        ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", GRPC_MAX_RECONNECT_BACKOFF_MS),
    ]


# ----------------------------------------------------------------------------------------------- model spec


def spec_from_config(config: Mapping[str, Any], model: str) -> ModelSpec:
    """The `ModelSpec` embedded in a model's config (parameter ``dfserve_spec``), as either protocol returns it.

    This is how the client learns labels, input size, preprocessing and the other models' names from the
    server instead of from constants of its own.
    """
    try:
        spec = spec_from_model_config(config)
    except ValueError as exc:  # json, pydantic and format-version errors are ValueErrors
        raise IncompatibleModelError(
            f"model {model!r}: parameter {SPEC_PARAMETER!r} is not a spec this SDK reads: {exc}"
        ) from exc
    if spec is None:
        raise IncompatibleModelError(
            f"model {model!r} has no parameter {SPEC_PARAMETER!r} in its config: it was not built by `dfserve build`"
        )
    return spec


# --------------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Payload:
    """One input, ready for the wire: the encoded file (`file` mode) or uint8 [3,H,W] pixels (`pixels` mode)."""

    mode: Mode
    data: bytes | np.ndarray
    path: str | None = None


def describe(item: object) -> str:
    """How an error message names an input."""
    if isinstance(item, str | Path):
        return str(item)
    if isinstance(item, np.ndarray):
        return f"array {item.shape} {item.dtype}"
    if isinstance(item, bytes | bytearray | memoryview):
        return f"{len(item)} bytes"
    return type(item).__name__


def encode_png(img: Image.Image) -> bytes:
    """Lossless encoding for decoded inputs in `file` mode, so the server sees exactly these pixels."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def prepare(item: ImageInput, mode: Mode, spec: ModelSpec, resize_mode: ResizeMode | None = None) -> Payload:
    """Read, encode or preprocess one input. Raises InvalidInputError naming the input and the problem.

    In `file` mode paths, bytes and file objects travel as they are (the fewest bytes on the wire); a PIL
    image or an array is oriented and converted to RGB exactly as local preprocessing would, then sent as PNG.
    In `pixels` mode the shared `dfserve.preprocessing.preprocess` runs here with the server's own spec.
    """
    path = str(item) if isinstance(item, str | Path) else None
    try:
        if mode == "pixels":
            return Payload(
                "pixels", preprocess(item, spec.preprocessing, spec.limits, resize_mode or spec.resize_mode), path
            )
        data = read_image_bytes(item, spec.limits)
        if data is None:
            # the same checks the server applies to a file (no pixels, too many, extreme aspect), here, so that a
            # decoded input fails alone with a clear error instead of an encoder's ValueError
            if isinstance(item, Image.Image):
                check_size(item.width, item.height, spec.limits)
                data = encode_png(load_rgb(item.copy()))
            elif isinstance(item, np.ndarray):
                if item.ndim < 2:
                    raise InvalidImageError(f"image array must be HxWx3 (RGB) or HxW (grey), got shape {item.shape}")
                check_size(item.shape[1], item.shape[0], spec.limits)
                data = encode_png(array_to_image(item))
            else:
                raise InvalidImageError(
                    f"unsupported image input {type(item).__name__}: pass a path, bytes, a binary file object, "
                    "a PIL image or an HxWx3 uint8 numpy array"
                )
        if not data:
            raise EmptyImageError("empty image: 0 bytes")
        if len(data) > spec.limits.max_file_bytes:
            raise ImageTooLargeError(
                f"image file is {len(data)} bytes, above the server's limit of {spec.limits.max_file_bytes} bytes"
            )
        return Payload("file", data, path)
    except InvalidImageError as exc:
        raise InvalidInputError(f"{describe(item)}: {exc}") from exc
    except OSError as exc:  # unreadable file: permissions, I/O error
        raise InvalidInputError(f"{describe(item)}: cannot read: {exc.strerror or exc}") from exc
    except (ValueError, TypeError) as exc:  # an encoder's refusal of an odd array or image: still this item's
        raise InvalidInputError(f"{describe(item)}: cannot encode this image: {exc}") from exc


# ------------------------------------------------------------------------------------------ request/response


@dataclass
class InferRequest:
    """The arguments of one tritonclient `infer` call, built from real `InferInput` objects."""

    model_name: str
    inputs: list[Any]
    outputs: list[Any]
    path: str | None = None
    slot: ShmSlot | None = None


def build_request(
    payload: Payload, spec: ModelSpec, protocol: ProtocolName, *, entry_model: str, slot: ShmSlot | None = None
) -> InferRequest:
    """`file` mode: BYTES image [1,1] to the entry model (the ensemble). `pixels` mode: UINT8 pixels
    [1,3,H,W] to the engine, through the shared-memory `slot` when one is given."""
    tc = triton_module(protocol)
    names = spec.tensors
    if payload.mode == "file":
        assert isinstance(payload.data, bytes)
        inp = tc.InferInput(names.image, [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[payload.data]], dtype=np.object_))
        model = entry_model
    else:
        assert isinstance(payload.data, np.ndarray)
        pixels = payload.data[None]
        inp = tc.InferInput(names.pixels, list(pixels.shape), "UINT8")
        if slot is not None:
            slot.write_input(pixels)
            inp.set_shared_memory(slot.name, pixels.nbytes, offset=0)
        else:
            inp.set_data_from_numpy(pixels)
        model = spec.models.engine
    out = tc.InferRequestedOutput(names.scores)
    if slot is not None:
        out.set_shared_memory(slot.name, slot.output_nbytes, offset=slot.output_offset)
    return InferRequest(model, [inp], [out], payload.path, slot)


def parse_result(result: Any, request: InferRequest, spec: ModelSpec, protocol: ProtocolName) -> Prediction:
    """A tritonclient `InferResult` (either protocol) to a `Prediction` with the spec's label names."""
    names = spec.labels.names
    if request.slot is not None:
        raw = request.slot.read_output(len(names))
    else:
        raw = result.as_numpy(spec.tensors.scores)
        if raw is None:
            raise InferenceError(f"model {request.model_name!r} answered without output {spec.tensors.scores!r}")
    flat = np.asarray(raw).reshape(-1)
    if flat.size != len(names):
        raise IncompatibleModelError(
            f"model {request.model_name!r} returned {flat.size} scores for {len(names)} labels {list(names)}"
        )
    values: list[float] = flat.astype(np.float64).tolist()  # a few labels: plain Python beats numpy here
    if not all(map(math.isfinite, values)):
        raise InferenceError(f"model {request.model_name!r} returned non-finite scores {values}")
    response = result.get_response()
    if protocol == "http":
        model_name = str(response.get("model_name") or request.model_name)
        version = str(response.get("model_version") or "")
    else:
        model_name = response.model_name or request.model_name
        version = str(response.model_version)
    best = max(range(len(values)), key=values.__getitem__)
    return Prediction(
        label=names[best],
        score=min(max(values[best], 0.0), 1.0),
        scores=dict(zip(names, values, strict=True)),
        model_name=model_name,
        model_version=version,
        random_weights=spec.random_weights,
        path=request.path,
        positive_label=spec.labels.positive,
    )


# ----------------------------------------------------------------------------------------------- retry policy


class Unset:
    """The type of `UNSET`: a per-call argument not given (None already means "retry until the timeout")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


@dataclass(frozen=True)
class RetryPolicy:
    """Which errors are retried, and after how long.

    Only transient errors are retried (`DfserveClientError.retryable`: connection failures, UNAVAILABLE, HTTP
    429/502/503; and a model not found while the server says it is not ready, i.e. restarting), never a refused
    input or a timeout. Delays grow 0.5 s, 1 s, 2 s ... up to 8 s, each shortened by up to 25% at random, until
    the call's deadline (or `max_retries`, when set): a call rides out a restart that fits in its `timeout`, and
    never takes much longer than that `timeout` against a server that is down.
    """

    max_retries: int | None = DEFAULT_MAX_RETRIES
    initial_delay: float = INITIAL_RETRY_DELAY
    max_delay: float = MAX_RETRY_DELAY
    jitter: float = MAX_JITTER

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        base = min(self.initial_delay * 2**attempt, self.max_delay)
        return base * (1 - self.jitter * rand())

    def next_delay(
        self,
        error: DfserveClientError,
        attempt: int,
        remaining: float,
        rand: Callable[[], float] = random.random,
        *,
        transient: bool = False,
    ) -> float | None:
        """Seconds to wait before retry number `attempt + 1`, or None to give up and raise `error`.

        `transient` retries an error that is final on a healthy server (the model not found) because the server
        said it is not ready: it is starting, stopping or reloading, and will answer again."""
        if not (error.retryable or transient):
            return None
        if self.max_retries is not None and attempt >= self.max_retries:
            return None
        wait = self.delay(attempt, rand)
        return wait if wait < remaining else None


LOG = logging.getLogger("dfserve.client")


def log_retry(error: DfserveClientError, attempt: int, wait: float) -> None:
    """Every retry is logged (logger `dfserve.client`), so a service sees a restart it rode out."""
    LOG.warning("retry %d in %.2f s after %s: %s", attempt + 1, wait, type(error).__name__, error)


# ----------------------------------------------------------------------------------------------- error mapping

_GRPC_TO_ERROR: dict[str, type[DfserveClientError]] = {
    "UNAVAILABLE": ServerUnavailableError,
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
# Errors are mapped by status. Triton (2.51, measured) answers an unknown model, or one with no loaded version
# while the server starts or stops, with 404 / NOT_FOUND, a bad image with 400 / INVALID_ARGUMENT and the
# restricted HTTP APIs without the key with 403; those statuses suffice. dfserve's nginx proxy
# (dfserve.triton.proxy) refuses a body over its limit with 413 / RESOURCE_EXHAUSTED (gRPC's own code for a message
# over its size limit), both final, and the restricted APIs over their rate with 429 / UNAVAILABLE, both retried.
# Two cases carry no status of their own, so only there the message decides:
# - a restricted gRPC protocol called without the key answers UNAVAILABLE ("This protocol is restricted"),
#   which would otherwise be retried as a server that is down;
# - gRPC reports a failed TLS handshake only as UNAVAILABLE ("Ssl handshake failed", "certificate ...").
_GRPC_RESTRICTED_PHRASES = ("restricted", "expecting header")
_TLS_PHRASES = ("ssl", "handshake", "certificate")


def map_error(exc: BaseException, *, url: str, model: str | None = None) -> DfserveClientError:
    """Convert any exception met during a call to the most specific `DfserveClientError`, naming the cause.

    The one place that knows tritonclient's, gRPC's, aiohttp's and the socket layer's exceptions.
    """
    if isinstance(exc, DfserveClientError):
        return exc
    where = f"{url}" + (f", model {model!r}" if model else "")
    if isinstance(exc, InvalidImageError):
        return InvalidInputError(str(exc), url=url)
    from tritonclient.utils import InferenceServerException
    from tritonclient.utils.shared_memory import SharedMemoryException

    if isinstance(exc, SharedMemoryException):
        return SharedMemoryError(f"system shared memory: {exc}", url=url)
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        message = str(exc.message() or "").strip() or str(exc)
        code = status.removeprefix("StatusCode.")
        cls = _GRPC_TO_ERROR.get(code) or _HTTP_TO_ERROR.get(code) or InferenceError
        lowered = message.lower()
        if not status and _looks_like_connection_failure(lowered):
            cls = ServerUnavailableError  # tritonclient's own wrapper of a socket error, without a status
        if "stub process" in lowered and "not healthy" in lowered:
            cls = ServerUnavailableError  # a dead Python-backend stub: `dfserve serve` is restarting the server
        if code == "UNAVAILABLE" and any(p in lowered for p in _GRPC_RESTRICTED_PHRASES):
            cls = AccessDeniedError
        elif cls is ServerUnavailableError and any(p in lowered for p in _TLS_PHRASES):
            cls = TLSError
        prefix = {
            ServerUnavailableError: "server unavailable",
            RequestTimeoutError: "timed out",
            AccessDeniedError: "access denied",
            ModelNotReadyError: "model not ready",
            InvalidInputError: "input refused by the server",
            RequestTooLargeError: "request too large",
            TLSError: "TLS handshake failed",
        }.get(cls, "server error")
        return cls(f"{prefix} ({where}, status {code or 'none'}): {message}", url=url, status=code or None)
    if _is_tls_failure(exc):
        return TLSError(f"TLS handshake with {where} failed: {_exc_text(exc)}", url=url)
    if isinstance(exc, http.client.HTTPException) and "parse" in type(exc).__name__.lower():
        return InferenceError(
            f"{where} did not answer in HTTP ({_exc_text(exc)}): is this Triton's gRPC port? "
            "Use grpc://host:port (Triton's default gRPC port is 8001)",
            url=url,
        )
    if _is_timeout(exc):
        return RequestTimeoutError(f"timed out waiting for {where}: {_exc_text(exc)}", url=url)
    if _is_connection_error(exc):
        return ServerUnavailableError(f"server unavailable at {where}: {_exc_text(exc)}", url=url)
    return InferenceError(f"unexpected error talking to {where}: {_exc_text(exc)}", url=url)


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
    try:
        import aiohttp

        return isinstance(exc, aiohttp.ClientSSLError)
    except ImportError:  # pragma: no cover - aiohttp comes with tritonclient[http]
        return False


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError | socket.timeout):
        return True
    return type(exc).__name__ == "Timeout" and type(exc).__module__.startswith("gevent")


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | socket.gaierror | http.client.RemoteDisconnected):
        return True
    try:
        import aiohttp

        if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ServerDisconnectedError):
            return True
    except ImportError:  # pragma: no cover - aiohttp comes with tritonclient[http]
        pass
    if isinstance(exc, http.client.HTTPException) and "closed" in type(exc).__name__.lower():
        return True  # geventhttpclient's HTTPConnectionClosed: the server went away mid-response
    return isinstance(exc, OSError) and exc.errno is not None  # unreachable network/host and kin


# ------------------------------------------------------------------------------------------------ base client


class BaseClient:
    """The I/O-free half of `Client` and `AsyncClient`: settings, the cached spec and the per-item steps."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        protocol: ProtocolName | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
        mode: Mode = "file",
        model: str | None = None,
        headers: Mapping[str, str] | None = None,
        shared_memory: bool = False,
        resize_mode: ResizeMode | None = None,
        admin_key: str | None = None,
        tls: bool | None = None,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
    ) -> None:
        self._settings = make_settings(
            url,
            protocol,
            timeout=timeout,
            max_retries=max_retries,
            mode=mode,
            model=model,
            headers=headers,
            shared_memory=shared_memory,
            resize_mode=resize_mode,
            admin_key=admin_key,
            tls=tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
        )
        self._retry = RetryPolicy(max_retries=self._settings.max_retries)
        self._spec: ModelSpec | None = None
        self._closed = False

    @property
    def url(self) -> str:
        """``protocol://host:port`` of the server."""
        return self._settings.url

    @property
    def protocol(self) -> ProtocolName:
        return self._settings.protocol

    @property
    def mode(self) -> Mode:
        return self._settings.mode

    @property
    def timeout(self) -> float:
        return self._settings.timeout

    @property
    def model(self) -> str:
        """The entry model: the one whose config holds the spec, and that `file` mode sends images to."""
        return self._settings.model

    @property
    def is_closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, mode={self.mode!r}, model={self.model!r})"

    def _check_open(self) -> None:
        if self._closed:
            raise ClientConfigError(f"{type(self).__name__} for {self.url} is closed")

    def _error(self, exc: BaseException, model: str | None = None) -> DfserveClientError:
        return map_error(exc, url=self.url, model=model)

    def _tls_kwargs(self, *, aio: bool) -> dict[str, Any]:
        """The TLS arguments of each tritonclient constructor (they differ by protocol and by sync/async)."""
        s = self._settings
        if not s.tls:
            return {}
        if self.protocol == "grpc":
            return {
                "ssl": True,
                "root_certificates": s.ca_file,
                "private_key": s.key_file,
                "certificate_chain": s.cert_file,
            }
        if aio:
            import ssl

            context = ssl.create_default_context(cafile=s.ca_file)
            if s.cert_file and s.key_file:
                context.load_cert_chain(s.cert_file, s.key_file)
            return {"ssl": True, "ssl_context": context}
        options: dict[str, str] = {}
        if s.ca_file:
            options["ca_certs"] = s.ca_file
        if s.cert_file and s.key_file:
            options.update(certfile=s.cert_file, keyfile=s.key_file)
        return {"ssl": True, "ssl_options": options}

    def _call_kwargs(self, timeout: float | None = None) -> dict[str, Any]:
        """Keyword arguments every tritonclient call takes: our headers, and gRPC's per-call deadline."""
        kwargs: dict[str, Any] = {"headers": dict(self._settings.headers) or None}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = timeout or self.timeout
        return kwargs

    def _overrides(self, timeout: float | None, max_retries: int | Unset | None) -> tuple[float, RetryPolicy]:
        """A call's own timeout and retry policy, where it sets them; the client's otherwise."""
        if timeout is not None:
            timeout = make_settings(self._settings.url, timeout=timeout).timeout  # the same checks as the client's
        policy = self._retry
        if not isinstance(max_retries, Unset):
            policy = RetryPolicy(max_retries=make_settings(self._settings.url, max_retries=max_retries).max_retries)
        return timeout or self.timeout, policy

    def _admin_kwargs(self) -> dict[str, Any]:
        """`_call_kwargs` plus the server's key for its restricted APIs (shared memory), in the form each
        protocol wants: an HTTP header, or gRPC metadata with Triton's restricted-protocol prefix."""

        kwargs = self._call_kwargs()
        if self._settings.admin_key:
            name = ADMIN_KEY_HEADER if self.protocol == "http" else GRPC_RESTRICTED_HEADER_PREFIX + ADMIN_KEY_HEADER
            kwargs["headers"] = {**(kwargs["headers"] or {}), name: self._settings.admin_key}
        return kwargs

    def _spec_from(self, config: Mapping[str, Any]) -> ModelSpec:
        spec = spec_from_config(config, self.model)
        self._spec = spec
        return spec

    def _request_for(self, item: ImageInput, spec: ModelSpec, slot: ShmSlot | None = None) -> InferRequest:
        payload = prepare(item, self.mode, spec, self._settings.resize_mode)
        return build_request(payload, spec, self.protocol, entry_model=self.model, slot=slot)

    def _parse(self, result: Any, request: InferRequest, spec: ModelSpec) -> Prediction:
        return parse_result(result, request, spec, self.protocol)

    @staticmethod
    def _shm_sizes(spec: ModelSpec) -> tuple[int, int]:
        height, width = spec.input_hw
        return 3 * height * width, 4 * len(spec.labels.names)

    @staticmethod
    def _check_concurrency(concurrency: int, name: str = "concurrency") -> int:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ClientConfigError(f"{name} must be an integer >= 1, got {concurrency!r}")
        return concurrency
