"""A test double for code that calls a dfserve server: `FakeServer`, a real HTTP server on 127.0.0.1 (a thread
in your test process) that speaks the KServe v2 protocol the way dfserve's Triton does, for a `ModelSpec` and
scores you choose.

    from dfserve.client import Client
    from dfserve.client.testing import FakeServer

    def test_my_service_flags_fakes() -> None:
        with FakeServer(scores={"real": 0.1, "fake": 0.9}) as server, Client(server.url) as client:
            assert my_service.check(client, "photo.jpg") == "flagged"
            assert server.requests[0].model == "detector"

Why a server and not a mock: the SDK under test runs unchanged (tritonclient, its wire format, the retry
policy, the error mapping), so what passes here passes against a real server; the double only replaces Triton.
Use it with `Client`/`AsyncClient` over HTTP (``server.url``); it does not speak gRPC (test gRPC against the
real server). It serves the entry model (the spec's ensemble, `file` mode: encoded images, which it checks
decode with Pillow) and the engine (`pixels` mode: UINT8 [N,3,H,W]), batches up to the spec's max batch size,
health, readiness and model configs with the spec embedded. For the failures a caller must handle:
`fail_next(503, retry_after=1)` answers the next inference requests with an error (as Triton or dfserve's proxy
would), `freeze()` stops answering anything (a hung server: test your timeouts), `ready = False` makes the
readiness probes answer 503.
"""

from __future__ import annotations

import io
import json
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeAlias

import numpy as np

from dfserve.spec.model import SPEC_PARAMETER, Labels, ModelSpec, Preprocessing

__all__ = ["FakeRequest", "FakeServer", "ScoresFn", "detector_spec"]

ScoresFn: TypeAlias = Callable[[bytes | np.ndarray], Mapping[str, float] | Sequence[float]]
"""Scores for one image, from its encoded bytes (`file` mode) or its uint8 [3,H,W] pixels (`pixels` mode)."""


def detector_spec(labels: tuple[str, str] = ("real", "fake"), *, max_batch_size: int = 8) -> ModelSpec:
    """A small single-logit detector's spec (negative, positive), like CommunityForensics-DeepfakeDet-ViT's."""
    return ModelSpec.model_validate(
        {
            "source": "dfserve.client.testing",
            "labels": Labels(names=labels, activation="sigmoid", num_logits=1),
            "preprocessing": Preprocessing(resize="fixed", size=(224, 224)),
            "batching": {"max_batch_size": max_batch_size, "preprocess_max_batch_size": max_batch_size},
        }
    )


@dataclass(frozen=True)
class FakeRequest:
    """One inference request the server received."""

    model: str
    request_id: str
    images: list[bytes | np.ndarray]
    """Each image of the batch: encoded bytes (`file` mode) or uint8 [3,H,W] pixels (`pixels` mode)."""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Failure:
    status: int
    message: str
    retry_after: float | None
    times: int


class FakeServer:
    """A real KServe v2 HTTP server for `spec` (default: `detector_spec()`), answering `scores`: a mapping of
    label to probability, a sequence in label order, or a `ScoresFn` called per image; default: every label
    equally likely. Start it with ``with`` (or `start`/`stop`); `url` is what `Client` takes."""

    def __init__(
        self,
        spec: ModelSpec | None = None,
        *,
        scores: Mapping[str, float] | Sequence[float] | ScoresFn | None = None,
        model_version: str = "1",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.spec = spec or detector_spec()
        self.model_version = model_version
        self.ready = True
        """False: the server and model readiness probes answer 503 (liveness still 200)."""
        self.requests: list[FakeRequest] = []
        self._scores = scores
        self._host, self._port = host, port
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self._thawed = threading.Event()
        self._thawed.set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if not callable(scores):
            self._row(b"")  # check fixed scores against the labels now, not in a request handler

    # ------------------------------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, once started."""
        if self._httpd is None:
            raise RuntimeError("FakeServer is not started: use `with FakeServer(...) as server` or start()")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = _Server((self._host, self._port), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="dfserve-fake-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (answering any frozen request first, with 503). Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._thawed.set()
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------ scripting

    def fail_next(
        self, status: int = 503, message: str | None = None, *, times: int = 1, retry_after: float | None = None
    ) -> None:
        """Answer the next `times` inference requests with `status` and Triton's error body (``{"error": ...}``),
        with a ``Retry-After`` header when `retry_after` is given."""
        text = message or HTTPStatus(status).phrase
        with self._lock:
            self._failures.append(_Failure(status, text, retry_after, times))

    def freeze(self) -> None:
        """Accept connections and requests but answer none (a hung server) until `thaw` or `stop`."""
        self._thawed.clear()

    def thaw(self) -> None:
        self._thawed.set()

    # ------------------------------------------------------------------------------------------ the protocol

    def _row(self, image: bytes | np.ndarray) -> list[float]:
        names = self.spec.labels.names
        scores = self._scores
        if scores is None:
            return [1.0 / len(names)] * len(names)
        value = scores(image) if callable(scores) else scores
        if isinstance(value, Mapping):
            unknown = set(value) - set(names)
            if unknown or len(value) != len(names):
                raise ValueError(f"scores must name each label {list(names)} once, got {sorted(value)}")
            return [float(value[name]) for name in names]
        row = [float(v) for v in value]
        if len(row) != len(names):
            raise ValueError(f"scores must have one value per label {list(names)}, got {len(row)}")
        return row

    def _config(self, model: str) -> dict[str, Any] | None:
        spec, models = self.spec, self.spec.models
        tensors = spec.tensors
        if model == models.ensemble:
            batch = min(spec.batching.max_batch_size, spec.batching.preprocess_max_batch_size)
            inputs = [{"name": tensors.image, "data_type": "TYPE_STRING", "dims": [1]}]
        elif model == models.engine:
            batch = spec.batching.max_batch_size
            inputs = [{"name": tensors.pixels, "data_type": "TYPE_UINT8", "dims": [3, *spec.input_hw]}]
        else:
            return None
        return {
            "name": model,
            "max_batch_size": batch,
            "input": inputs,
            "output": [{"name": tensors.scores, "data_type": "TYPE_FP32", "dims": [len(spec.labels.names)]}],
            "parameters": {SPEC_PARAMETER: {"string_value": spec.model_dump_json()}},
        }

    def _take_failure(self) -> _Failure | None:
        with self._lock:
            if not self._failures:
                return None
            failure = self._failures[0]
            failure.times -= 1
            if failure.times <= 0:
                self._failures.pop(0)
            return failure

    def _infer(
        self, model: str, header: dict[str, Any], binary: bytes, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, Any]]:
        config = self._config(model)
        if config is None:
            return 404, {"error": f"Request for unknown model: '{model}' is not found"}
        if not self.ready:
            return 400, {"error": f"Request for unknown model: '{model}' is not ready"}
        inputs = header.get("inputs") or []
        expected = config["input"][0]["name"]
        if len(inputs) != 1 or inputs[0].get("name") != expected:
            return 400, {"error": f"expected one input {expected!r} for model '{model}'"}
        tensor = inputs[0]
        shape = [int(d) for d in tensor.get("shape", [])]
        if not shape or shape[0] < 1:
            return 400, {"error": f"input {expected!r} has no batch dimension: shape {shape}"}
        if shape[0] > config["max_batch_size"]:
            return 400, {"error": f"inference request batch-size must be <= {config['max_batch_size']} for '{model}'"}
        try:
            images = _decode(tensor, shape, binary)
        except ValueError as exc:
            return 400, {"error": f"in model '{model}', input {expected!r}: {exc}"}
        rows = []
        for image in images:
            if isinstance(image, bytes):
                problem = _not_an_image(image)
                if problem:
                    return 400, {"error": f"in ensemble '{model}', {problem}"}
            try:
                rows.append(self._row(image))
            except Exception as exc:  # the test's own scores function: its error goes to the test's client
                return 500, {"error": f"FakeServer scores for model '{model}': {type(exc).__name__}: {exc}"}
        request_id = str(header.get("id", ""))
        self.requests.append(FakeRequest(model, request_id, images, dict(headers)))
        names = self.spec.labels.names
        body: dict[str, Any] = {
            "model_name": model,
            "model_version": self.model_version,
            "outputs": [
                {
                    "name": self.spec.tensors.scores,
                    "datatype": "FP32",
                    "shape": [len(rows), len(names)],
                    "data": [v for row in rows for v in row],
                }
            ],
        }
        if request_id:
            body["id"] = request_id
        return 200, body


def _decode(tensor: Mapping[str, Any], shape: list[int], binary: bytes) -> list[bytes | np.ndarray]:
    """The batch of one input tensor, from its binary part (tritonclient's default) or its JSON ``data``."""
    datatype = tensor.get("datatype")
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    count = int(np.prod(shape))
    if datatype == "BYTES":
        if size is not None:
            items, offset = [], 0
            while offset < len(binary):
                (length,) = struct.unpack_from("<I", binary, offset)
                items.append(binary[offset + 4 : offset + 4 + length])
                offset += 4 + length
        else:
            items = [str(v).encode() for v in np.asarray(tensor.get("data", [])).reshape(-1)]
        if len(items) != count:
            raise ValueError(f"{len(items)} elements for shape {shape}")
        return list(items)
    if datatype == "UINT8":
        raw = binary if size is not None else bytes(np.asarray(tensor.get("data", []), dtype=np.uint8))
        if len(raw) != count:
            raise ValueError(f"{len(raw)} bytes for shape {shape}")
        pixels = np.frombuffer(raw, dtype=np.uint8).reshape(shape)
        return list(pixels)
    raise ValueError(f"unexpected datatype {datatype!r}")


def _not_an_image(data: bytes) -> str | None:
    """What the server's preprocessing would say of bytes Pillow cannot open; None for an image."""
    if not data:
        return "image is 0 bytes"
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except UnidentifiedImageError:
        return f"not an image: no known image format in {len(data)} bytes"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"not an image: {exc}"
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (it timed out on a frozen request) is expected here; anything else is not."""
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """KServe v2 over HTTP/1.1 with keep-alive, as tritonclient.http expects."""

    fake: FakeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: a test's output is the test's
        return

    def _send(self, status: int, body: dict[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _wait_if_frozen(self) -> bool:
        self.fake._thawed.wait()
        if self.fake._httpd is None:  # stopped while frozen
            self._send(503, {"error": "server is shutting down"})
            return False
        return True

    def _parts(self) -> tuple[str, ...]:
        path = self.path.split("?", 1)[0]
        parts = tuple(p for p in path.split("/") if p)
        if len(parts) >= 5 and parts[0] == "v2" and parts[1] == "models" and parts[3] == "versions":
            parts = (*parts[:3], *parts[5:])  # /v2/models/<m>/versions/<v>/x -> /v2/models/<m>/x
        return parts

    def do_GET(self) -> None:
        if not self._wait_if_frozen():
            return
        fake, parts = self.fake, self._parts()
        if parts == ("v2", "health", "live"):
            return self._send(200)
        if parts == ("v2", "health", "ready"):
            return self._send(200 if fake.ready else 503)
        if len(parts) >= 3 and parts[:2] == ("v2", "models"):
            model, rest = parts[2], parts[3:]
            config = fake._config(model)
            if config is None:
                return self._send(404, {"error": f"Request for unknown model: '{model}' is not found"})
            if rest == ("ready",):
                return self._send(200 if fake.ready else 503)
            if rest == ("config",):
                return self._send(200, config)
            if rest == ():
                return self._send(200, {"name": model, "versions": [fake.model_version], "platform": "dfserve-fake"})
        self._send(404, {"error": f"not found: {self.path}"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if not self._wait_if_frozen():
            return
        parts = self._parts()
        if not (len(parts) == 4 and parts[:2] == ("v2", "models") and parts[3] == "infer"):
            return self._send(404, {"error": f"not found: {self.path}"})
        failure = self.fake._take_failure()
        if failure is not None:
            extra = {"Retry-After": f"{failure.retry_after:g}"} if failure.retry_after is not None else None
            return self._send(failure.status, {"error": failure.message}, extra)
        header_length = self.headers.get("Inference-Header-Content-Length")
        split = int(header_length) if header_length is not None else len(body)
        try:
            header = json.loads(body[:split] or b"{}")
        except ValueError as exc:
            return self._send(400, {"error": f"failed to parse the request JSON: {exc}"})
        status, answer = self.fake._infer(parts[2], header, body[split:], dict(self.headers.items()))
        self._send(status, answer)
