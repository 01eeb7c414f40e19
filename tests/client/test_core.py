"""The I/O-free core: settings, requests built with tritonclient's real InferInput objects from real images,
responses parsed from real wire formats, the retry policy, and the mapping of the real exceptions that
tritonclient raises against closed and silent sockets."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfserve.client import (
    AccessDeniedError,
    ClientConfigError,
    IncompatibleModelError,
    InferenceError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerUnavailableError,
    TLSError,
)
from dfserve.client._core import (
    DEFAULT_MAX_RETRIES,
    build_request,
    make_settings,
    parse_result,
    prepare,
    resolve_endpoint,
    spec_from_config,
)
from dfserve.client._errors import map_error
from dfserve.client._retry import RetryPolicy
from dfserve.preprocessing import preprocess
from dfserve.spec.model import SPEC_PARAMETER, Labels, ModelSpec, Preprocessing

SPEC = ModelSpec(
    source="unit-test",
    random_weights=True,
    labels=Labels(names=("real", "fake"), activation="sigmoid", num_logits=1),
    preprocessing=Preprocessing(resize="shortest_edge", size=40, crop=(32, 32), resample=3),
)
FIVE = ModelSpec(
    source="unit-test-5",
    labels=Labels(names=("a", "b", "c", "d", "e"), activation="softmax", num_logits=5),
    preprocessing=Preprocessing(resize="fixed", size=(24, 24)),
)


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skimage import data

    path = tmp_path_factory.mktemp("core") / "chelsea.jpg"
    Image.fromarray(data.chelsea()).save(path, quality=90)
    return path


# ------------------------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("url", "protocol", "expected"),
    [
        ("localhost:8000", None, ("localhost:8000", "http")),
        ("localhost:8001", None, ("localhost:8001", "grpc")),
        ("grpc://10.0.0.1:9000", None, ("10.0.0.1:9000", "grpc")),
        ("http://example.org:8001/", None, ("example.org:8001", "http")),
        ("example.org", "grpc", ("example.org:8001", "grpc")),
        ("example.org", None, ("example.org:8000", "http")),
        ("[::1]:8001", None, ("[::1]:8001", "grpc")),
        ("GRPC://h:1", "grpc", ("h:1", "grpc")),
    ],
)
def test_resolve_endpoint(url: str, protocol: str | None, expected: tuple[str, str]) -> None:
    assert resolve_endpoint(url, protocol) == expected


@pytest.mark.parametrize(
    ("url", "protocol", "message"),
    [
        ("grpc://h:8001", "http", "is a grpc address but protocol='http'"),
        ("https://h:8000", None, "asks for TLS; this tool speaks plain"),  # the bare-tritonclient comparison
        ("ftp://h:8000", None, "unsupported URL scheme 'ftp'"),
        ("h:8000/v2", None, "without a path"),
        ("h:99999", None, "invalid port"),
        ("h:abc", None, "invalid port"),
        ("", None, "host:port"),
        (":8000", None, "no host"),
        ("h:8000", "udp", "protocol must be"),
    ],
)
def test_resolve_endpoint_refuses_ambiguous_or_bad_urls(url: str, protocol: str | None, message: str) -> None:
    with pytest.raises(ClientConfigError, match=message):
        resolve_endpoint(url, protocol)


def test_tls_settings(tmp_path: Path) -> None:
    """https:// and grpcs:// mean TLS; a CA or client certificate implies it; the URL says so in errors."""
    from dfserve.client._core import make_settings

    ca = tmp_path / "ca.pem"
    ca.write_text("-")
    assert make_settings("https://h:8443").tls and make_settings("https://h:8443").url == "https://h:8443"
    grpcs = make_settings("grpcs://h", ca_file=ca)
    assert (grpcs.protocol, grpcs.tls, grpcs.address, grpcs.ca_file) == ("grpc", True, "h:8001", str(ca))
    assert make_settings("h:8000", ca_file=ca).url == "https://h:8000"
    assert not make_settings("http://h:8000").tls
    with pytest.raises(ClientConfigError, match="tls=False"):
        make_settings("https://h", tls=False)
    with pytest.raises(ClientConfigError, match="go together"):
        make_settings("https://h", cert_file=ca)
    with pytest.raises(ClientConfigError, match="is not a file"):
        make_settings("https://h", ca_file=tmp_path / "missing.pem")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout must be a positive"),
        ({"timeout": float("inf")}, "timeout must be a positive"),
        ({"max_retries": -1}, "max_retries"),
        ({"mode": "tensor"}, "mode must be"),
        ({"shared_memory": True}, "needs mode='pixels'"),
        ({"resize_mode": "fast"}, "resize_mode"),
        ({"model": " "}, "model must be"),
    ],
)
def test_settings_are_validated_once(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ClientConfigError, match=message):
        make_settings("localhost:8000", **kwargs)  # type: ignore[arg-type]


def test_settings_defaults_come_from_the_spec_names() -> None:
    s = make_settings()
    assert (s.url, s.model, s.mode, s.max_retries) == ("http://localhost:8000", "detector", "file", DEFAULT_MAX_RETRIES)
    assert isinstance(ClientConfigError("x"), ValueError)


# ------------------------------------------------------------------------------------------------ spec


def test_spec_from_config_both_protocol_shapes() -> None:
    param = {SPEC_PARAMETER: {"string_value": SPEC.to_json()}}
    assert spec_from_config({"name": "detector", "parameters": param}, "detector") == SPEC  # HTTP
    assert spec_from_config({"config": {"name": "detector", "parameters": param}}, "detector") == SPEC  # gRPC


def test_spec_from_config_names_what_is_missing() -> None:
    with pytest.raises(IncompatibleModelError, match=r"has no parameter 'dfserve_spec'.*dfserve build"):
        spec_from_config({"name": "other", "parameters": {}}, "other")
    with pytest.raises(IncompatibleModelError, match="not a spec this SDK reads"):
        spec_from_config({"parameters": {SPEC_PARAMETER: {"string_value": '{"source": 1}'}}}, "detector")


# ------------------------------------------------------------------------------------------------ inputs


def test_file_mode_sends_paths_bytes_and_files_unchanged(photo: Path) -> None:
    raw = photo.read_bytes()
    assert prepare(photo, "file", SPEC).data == raw
    assert prepare(str(photo), "file", SPEC).path == str(photo)
    assert prepare(raw, "file", SPEC).data == raw
    with photo.open("rb") as fh:
        assert prepare(fh, "file", SPEC).data == raw


def test_file_mode_encodes_decoded_inputs_losslessly(photo: Path) -> None:
    with Image.open(photo) as img:
        arr = np.asarray(img.convert("RGB"))
        pil_payload = prepare(img, "file", SPEC)
    arr_payload = prepare(arr, "file", SPEC)
    for payload in (pil_payload, arr_payload):
        assert isinstance(payload.data, bytes) and payload.data[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(io.BytesIO(payload.data)) as back:
            np.testing.assert_array_equal(np.asarray(back), arr)


def test_pixels_mode_runs_the_shared_preprocessing_with_the_spec(photo: Path) -> None:
    payload = prepare(photo, "pixels", SPEC)
    assert isinstance(payload.data, np.ndarray)
    assert payload.data.shape == (3, *SPEC.input_hw) and payload.data.dtype == np.uint8
    np.testing.assert_array_equal(payload.data, preprocess(photo, SPEC.preprocessing))


@pytest.mark.parametrize("mode", ["file", "pixels"])
@pytest.mark.parametrize(
    ("item", "message"),
    [
        (b"", "empty"),
        ("/no/such/image.jpg", "no such file"),
        (np.zeros((4, 4, 3), dtype=np.float32), "must be uint8"),
        (np.zeros((4, 4, 7), dtype=np.uint8), "HxWx3"),
        (12345, "unsupported image input int"),
    ],
)
def test_bad_inputs_are_refused_locally_naming_the_problem(mode: str, item: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        prepare(item, mode, SPEC)  # type: ignore[arg-type]


def test_pixels_mode_refuses_undecodable_bytes_before_the_network() -> None:
    with pytest.raises(InvalidInputError, match="not an image"):
        prepare(b"definitely not a jpeg", "pixels", SPEC)


def test_file_mode_refuses_files_above_the_servers_byte_limit() -> None:
    small = SPEC.model_copy(update={"limits": SPEC.limits.model_copy(update={"max_file_bytes": 10})})
    with pytest.raises(InvalidInputError, match="above the server's limit of 10 bytes"):
        prepare(b"x" * 11, "file", small)


# ------------------------------------------------------------------------------------------------ requests


def test_file_request_http_wire_format(photo: Path) -> None:
    """The HTTP body tritonclient generates carries our BYTES tensor with the spec's names and shape."""
    import tritonclient.http as th
    from tritonclient.utils import deserialize_bytes_tensor

    request = build_request(prepare(photo, "file", SPEC), SPEC, "http", entry_model="detector")
    assert request.model_name == "detector"
    body, json_size = th.InferenceServerClient.generate_request_body(request.inputs, outputs=request.outputs)
    header = json.loads(body[:json_size])
    (tensor,) = header["inputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == (SPEC.tensors.image, "BYTES", [1, 1])
    assert [o["name"] for o in header["outputs"]] == [SPEC.tensors.scores]
    (sent,) = deserialize_bytes_tensor(body[json_size:])
    assert sent == photo.read_bytes()


def test_pixels_request_grpc_tensor(photo: Path) -> None:
    request = build_request(prepare(photo, "pixels", SPEC), SPEC, "grpc", entry_model="detector")
    assert request.model_name == SPEC.models.engine
    (inp,) = request.inputs
    assert (inp.name(), inp.datatype(), inp.shape()) == (SPEC.tensors.pixels, "UINT8", [1, 3, 32, 32])
    sent = np.frombuffer(inp._get_content(), dtype=np.uint8).reshape(1, 3, 32, 32)
    np.testing.assert_array_equal(sent[0], preprocess(photo, SPEC.preprocessing))


# ------------------------------------------------------------------------------------------------ responses


def _http_result(scores: np.ndarray, model: str = "detector", version: str = "3") -> object:
    import tritonclient.http as th

    raw = scores.astype(np.float32).tobytes()
    header = {
        "model_name": model,
        "model_version": version,
        "outputs": [
            {
                "name": "scores",
                "datatype": "FP32",
                "shape": list(scores.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
    }
    head = json.dumps(header).encode()
    return th.InferResult.from_response_body(head + raw, header_length=len(head))


def _grpc_result(scores: np.ndarray, model: str = "vit", version: str = "1") -> object:
    import tritonclient.grpc as tg
    from tritonclient.grpc import service_pb2

    out = service_pb2.ModelInferResponse.InferOutputTensor(name="scores", datatype="FP32", shape=list(scores.shape))
    response = service_pb2.ModelInferResponse(
        model_name=model,
        model_version=version,
        outputs=[out],
        raw_output_contents=[scores.astype(np.float32).tobytes()],
    )
    return tg.InferResult(response)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_parse_result_names_labels_from_the_spec(protocol: str, photo: Path) -> None:
    request = build_request(prepare(photo, "file", SPEC), SPEC, protocol, entry_model="detector")  # type: ignore[arg-type]
    scores = np.array([[0.25, 0.75]], dtype=np.float32)
    result = _http_result(scores) if protocol == "http" else _grpc_result(scores)
    pred = parse_result(result, request, SPEC, protocol)  # type: ignore[arg-type]
    assert pred.label == "fake" and pred.score == pytest.approx(0.75)
    assert list(pred.scores) == ["real", "fake"]
    assert pred.random_weights is True and pred.path == str(photo)
    assert (pred.model_name, pred.model_version) == (("detector", "3") if protocol == "http" else ("vit", "1"))


def test_parse_result_refuses_a_model_that_disagrees_with_its_spec(photo: Path) -> None:
    request = build_request(prepare(photo, "file", FIVE), FIVE, "http", entry_model="detector")
    with pytest.raises(IncompatibleModelError, match="returned 2 scores for 5 labels"):
        parse_result(_http_result(np.array([[0.1, 0.9]])), request, FIVE, "http")
    with pytest.raises(InferenceError, match="non-finite"):
        parse_result(_http_result(np.array([[0.1, np.nan, 0, 0, 0]])), request, FIVE, "http")


# ------------------------------------------------------------------------------------------------ retries


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(max_retries=10)
    assert [policy.delay(a, rand=lambda: 0.0) for a in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert policy.delay(0, rand=lambda: 1.0) == pytest.approx(0.375)  # 25% jitter at most
    delays = {policy.delay(2) for _ in range(50)}
    assert len(delays) > 1 and all(1.5 <= d <= 2.0 for d in delays)


def test_defaults_are_openai_pythons_two_retries() -> None:
    policy = RetryPolicy()
    down = ServerUnavailableError("down")
    waits = [policy.next_delay(down, a, remaining=100, rand=lambda: 0) for a in range(3)]
    assert DEFAULT_MAX_RETRIES == 2 and waits == [0.5, 1.0, None]
    assert RetryPolicy(max_retries=None).next_delay(down, 9, remaining=100, rand=lambda: 0) == 8.0


def test_retry_after_is_honoured_within_bounds() -> None:
    policy = RetryPolicy()
    asked = ServerUnavailableError("busy", retry_after=3.0)
    assert policy.next_delay(asked, 0, remaining=10) == 3.0
    assert policy.next_delay(asked, 0, remaining=2.0) is None  # would end past the deadline: give up now
    too_long = ServerUnavailableError("busy", retry_after=3600.0)  # beyond MAX_RETRY_AFTER: our own backoff
    assert policy.next_delay(too_long, 0, remaining=10, rand=lambda: 0) == 0.5
    assert policy.next_delay(ServerUnavailableError("busy", retry_after=0.0), 1, remaining=10, rand=lambda: 0) == 1.0
    assert policy.next_delay(InvalidInputError("bad", retry_after=1.0), 0, remaining=10) is None  # never final ones


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2", 2.0),
        (" 0.5 ", 0.5),
        ("-3", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    from email.utils import parsedate_to_datetime

    from dfserve.client._transport import parse_retry_after

    now = parsedate_to_datetime("Wed, 21 Oct 2015 07:27:50 GMT").timestamp()
    assert parse_retry_after(value, now=lambda: now) == expected


def test_only_transient_errors_are_retried_and_never_past_the_deadline() -> None:
    policy = RetryPolicy(max_retries=2)
    down = ServerUnavailableError("down")
    assert policy.next_delay(down, 0, remaining=10, rand=lambda: 0) == 0.5
    assert policy.next_delay(down, 2, remaining=10) is None  # out of retries
    assert policy.next_delay(down, 0, remaining=0.4, rand=lambda: 0) is None  # would end past the deadline
    for error in (InvalidInputError("bad"), RequestTimeoutError("slow"), ModelNotReadyError("x")):
        assert policy.next_delay(error, 0, remaining=10) is None


# ------------------------------------------------------------------------------------------------ errors


@pytest.fixture
def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A socket that accepts connections and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


def _raised(fn: object) -> BaseException:
    try:
        if inspect.iscoroutinefunction(fn):
            asyncio.run(fn())
        else:
            fn()  # type: ignore[operator]
    except BaseException as exc:
        return exc
    raise AssertionError("no exception")


def _clients(port: int) -> dict[str, object]:
    import tritonclient.grpc as tg
    import tritonclient.grpc.aio as tga
    import tritonclient.http as th
    import tritonclient.http.aio as tha

    url = f"127.0.0.1:{port}"

    async def http_aio() -> None:
        async with tha.InferenceServerClient(url, conn_timeout=1) as c:
            await c.is_server_live()

    async def grpc_aio() -> None:
        async with tga.InferenceServerClient(url) as c:
            await c.is_server_live(client_timeout=1)

    return {
        "http": lambda: th.InferenceServerClient(url, connection_timeout=1, network_timeout=1).is_server_live(),
        "grpc": lambda: tg.InferenceServerClient(url).is_server_live(client_timeout=1),
        "http.aio": http_aio,
        "grpc.aio": grpc_aio,
    }


@pytest.mark.parametrize("flavour", ["http", "grpc", "http.aio", "grpc.aio"])
def test_refused_connections_map_to_server_unavailable(flavour: str, closed_port: int) -> None:
    exc = _raised(_clients(closed_port)[flavour])
    error = map_error(exc, url=f"x://127.0.0.1:{closed_port}")
    assert isinstance(error, ServerUnavailableError), (exc, error)
    assert error.retryable and f"127.0.0.1:{closed_port}" in str(error)


@pytest.mark.parametrize("flavour", ["http", "grpc", "http.aio", "grpc.aio"])
def test_silent_servers_map_to_timeouts(flavour: str, silent_port: int) -> None:
    exc = _raised(_clients(silent_port)[flavour])
    error = map_error(exc, url="x", timeout=1)
    assert isinstance(error, RequestTimeoutError) and isinstance(error, TimeoutError), (exc, error)
    assert not error.retryable and error.status_code == 504
    assert str(error) == "timed out waiting for x: no answer within 1 s"  # one message, whichever layer noticed


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        ("StatusCode.INVALID_ARGUMENT", "not an image: no known image format in 4 bytes", InvalidInputError),
        ("400", "in ensemble 'detector', image is 0 bytes", InvalidInputError),
        ("404", "Request for unknown model: 'nope' is not found", ModelNotFoundError),  # Triton 2.51, measured
        ("400", "Request for unknown model: 'nope' is not found", InvalidInputError),  # by status, not by text
        ("StatusCode.UNAVAILABLE", "Request for unknown model: 'vit' is not ready", ServerUnavailableError),
        ("StatusCode.NOT_FOUND", "Request for unknown model: 'nope' is not found", ModelNotFoundError),
        ("StatusCode.NOT_FOUND", "Request for unknown model: 'vit' has no available versions", ModelNotReadyError),
        ("500", "Stub process 'preprocess_0_0' is not healthy.", ServerUnavailableError),  # restarting: retried
        ("StatusCode.INTERNAL", "Stub process is not healthy.", ServerUnavailableError),
        ("403", "This API is restricted, expecting header 'dfserve-admin-key'", AccessDeniedError),
        ("StatusCode.UNAVAILABLE", "This API is restricted, expecting header 'x'", AccessDeniedError),
        ("503", "server is shutting down", ServerUnavailableError),
        (
            "StatusCode.UNAVAILABLE",
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: Ssl handshake failed: "
            "SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED",
            TLSError,
        ),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", RequestTimeoutError),
        ("500", "onnxruntime blew up", InferenceError),
    ],
)
def test_server_statuses_map_by_meaning(status: str, message: str, expected: type) -> None:
    from tritonclient.utils import InferenceServerException

    error = map_error(
        InferenceServerException(msg=message, status=status), url="http://h:1", model="detector", request_id="r1"
    )
    assert type(error) is expected
    assert "model 'detector'" in str(error) and "request r1" in str(error)
    assert (error.model, error.request_id) == ("detector", "r1")
    if expected is not RequestTimeoutError:  # a timeout reads the same over both protocols (below)
        assert message in str(error)
    assert error.status == status.removeprefix("StatusCode.")
    assert isinstance(error.status_code, int) and 400 <= error.status_code <= 599


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("404", 404),
        ("503", 503),
        ("StatusCode.NOT_FOUND", 404),
        ("StatusCode.INVALID_ARGUMENT", 400),
        ("StatusCode.UNAVAILABLE", 503),
        ("StatusCode.DEADLINE_EXCEEDED", 504),
        ("StatusCode.INTERNAL", 500),
        ("StatusCode.RESOURCE_EXHAUSTED", 413),
        ("StatusCode.UNIMPLEMENTED", 501),
        ("", 500),
    ],
)
def test_status_code_is_the_http_status_or_its_grpc_equivalent(status: str, expected: int) -> None:
    from tritonclient.utils import InferenceServerException

    error = map_error(InferenceServerException(msg="x", status=status or None), url="u")
    assert error.status_code == expected


def test_restricted_grpc_answer_is_403_not_the_503_of_its_code() -> None:
    from tritonclient.utils import InferenceServerException

    exc = InferenceServerException(msg="This protocol is restricted, expecting header 'k'", status="UNAVAILABLE")
    error = map_error(exc, url="u")
    assert isinstance(error, AccessDeniedError) and error.status_code == 403


def test_every_error_has_an_int_status_code_and_survives_pickling() -> None:
    import pickle

    import dfserve.client as sdk

    classes = [getattr(sdk, n) for n in sdk.__all__ if n.endswith("Error")]
    for cls in classes:
        error = cls("boom", url="http://h:1", model="m", request_id="abc", retry_after=1.5)
        assert isinstance(error.status_code, int) and 400 <= error.status_code <= 599, cls
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is cls
        assert (copy.status_code, copy.model, copy.request_id, copy.retry_after) == (error.status_code, "m", "abc", 1.5)
    assert issubclass(ModelNotFoundError, ModelNotReadyError)  # code that caught ModelNotReadyError still does
    assert ModelNotFoundError("x").status_code == 404 and ModelNotReadyError("x").status_code == 503
