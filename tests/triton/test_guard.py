"""dfserve's HTTP front (dfserve.triton.guard) before the real tritonserver 2.51: what it refuses (bodies nested
deeper than Triton's recursive JSON parser survives, bodies over the limit) and what it passes unchanged (JSON
and binary-tensor inference, chunked bodies, Expect: 100-continue, keep-alive), and its answer while Triton is
down."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dfserve.triton.guard import MAX_JSON_DEPTH, HttpGuard, json_depth
from dfserve.triton.process import TritonServer
from tests.triton.test_server import write_model

BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}).encode()


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"", 0),
        (b"[]", 1),
        (b"[[1],[2,[3]]]", 3),
        (b'{"a":"[[[[","b":[1,[2]]}', 3),  # brackets in strings do not count
        (b'{"a":"x\\"[[[","b":[]}', 2),  # nor after an escaped quote
        (b'{"a":"\\\\","b":[[]]}', 3),  # an escaped backslash ends no string
        (b'{"a":"\\\\\\"[","b":[[]]}', 3),
        (b'"[[["', 0),
        (b'{"inputs":' + b"[" * 200_000 + b"]" * 200_000 + b"}", 200_001),
    ],
)
def test_json_depth(text: bytes, depth: int) -> None:
    assert json_depth(text) == depth


def test_json_depth_agrees_with_python_on_generated_documents() -> None:
    import random

    rng = random.Random(7)

    def make(level: int) -> object:
        if level > 6 or rng.random() < 0.3:
            return rng.choice([1, 'a[\\"{', "\\", None, "]]"])
        if rng.random() < 0.5:
            return [make(level + 1) for _ in range(rng.randint(0, 3))]
        return {f"k{i}[": make(level + 1) for i in range(rng.randint(0, 3))}

    def depth(value: object) -> int:
        if isinstance(value, list):
            return 1 + max((depth(v) for v in value), default=0)
        if isinstance(value, dict):
            return 1 + max((depth(v) for v in value.values()), default=0)
        return 0

    for _ in range(300):
        doc = make(0)
        assert json_depth(json.dumps(doc).encode()) == depth(doc)


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, "addone", 1.0)
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0) as srv:
        yield srv


@pytest.fixture
def guard(triton: TritonServer) -> Iterator[HttpGuard]:
    front = HttpGuard("127.0.0.1", 0, ("127.0.0.1", triton.http_port), max_body_bytes=1 << 20).start()
    yield front
    front.stop()


def request(port: int, body: bytes, headers: dict[str, str] | None = None, path: str = "/v2/models/addone/infer"):  # type: ignore[no-untyped-def]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("POST", path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, resp.read(), dict(resp.getheaders())


@pytest.mark.slow
def test_refuses_deep_and_large_bodies_and_passes_the_rest(guard: HttpGuard, triton: TritonServer) -> None:
    deep = b'{"inputs":' + b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1) + b"}"
    status, text, _ = request(guard.port, deep)
    assert status == 400 and b"nested 66 deep" in text, text
    status, text, _ = request(guard.port, b" " * ((1 << 20) + 1))
    assert status == 413 and b"larger than 1048576 bytes" in text
    assert request(guard.port, BODY)[0] == 200
    # binary tensor extension: the JSON header is scanned, the tensor bytes are not
    header = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}
    ).encode()
    body = header + struct.pack("<2f", 1, 2) + b"[" * 0
    status, text, _ = request(guard.port, body, {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200 and json.loads(text)["outputs"][0]["data"] == [2, 3]
    deep_header = b'{"x":' + b"[" * 100 + b"]" * 100 + b"}"
    status, _, _ = request(
        guard.port, deep_header + b"[[[[", {"Inference-Header-Content-Length": str(len(deep_header))}
    )
    assert status == 400
    assert triton.is_running()


@pytest.mark.slow
def test_chunked_expect_and_keep_alive(guard: HttpGuard) -> None:
    with socket.create_connection(("127.0.0.1", guard.port), timeout=20) as sock:
        head = (
            b"POST /v2/models/addone/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        sock.sendall(head)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        half = len(BODY) // 2
        for part in (BODY[:half], BODY[half:]):
            sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        answer = b""
        while b'"data":[2.0,3.0]' not in answer:
            answer += sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200")
        # the same connection again (keep-alive), a plain request
        sock.sendall(
            b"POST /v2/models/addone/infer HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + str(len(BODY)).encode()
            + b"\r\n\r\n"
            + BODY
        )
        answer = b""
        while b'"data":[2.0,3.0]' not in answer:
            answer += sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200")


@pytest.mark.slow
def test_answers_503_while_triton_is_down(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    front = HttpGuard("127.0.0.1", 0, ("127.0.0.1", port), max_body_bytes=1 << 20).start()
    try:
        started = time.monotonic()
        status, text, headers = request(front.port, BODY)
        assert status == 503 and b"restarting" in text and time.monotonic() - started < 2
        assert headers["Retry-After"] == "5"  # clients come back once the restart is over, not twice too early
    finally:
        front.stop()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"inputs": [', b"malformed JSON"),
        (
            json.dumps({"inputs": [{"name": "x", "shape": [-1, 2], "datatype": "FP32", "data": [1, 2]}]}).encode(),
            b"must be a list of non-negative integers",
        ),
        (
            json.dumps({"inputs": [{"name": "x", "shape": [2**62, 2], "datatype": "FP32", "data": [1, 2]}]}).encode(),
            b"more than 1099511627776 elements",
        ),
        (
            json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "UINT8", "data": [[300, 2]]}]}).encode(),
            b"UINT8 values must lie in 0..255, got 2..300",
        ),
    ],
)
@pytest.mark.slow
def test_client_errors_triton_misreports_are_400(
    guard: HttpGuard, triton: TritonServer, body: bytes, message: bytes
) -> None:
    """Triton 2.51 answers the first two with 500 and scores the last after wrapping 300 to 44; through the front
    each is a 400 naming the problem, and Triton never sees it."""
    status, text, _ = request(guard.port, body)
    assert status == 400 and message in text, text


@pytest.mark.slow
def test_a_refusal_on_a_kept_alive_connection_is_answered(guard: HttpGuard) -> None:
    """The usual client: one connection, a good request, then a bad one; the 400 arrives at once."""
    conn = http.client.HTTPConnection("127.0.0.1", guard.port, timeout=20)
    conn.request("POST", "/v2/models/addone/infer", body=BODY)
    assert conn.getresponse().read() and True
    started = time.monotonic()
    conn.request("POST", "/v2/models/addone/infer", body=b"[" * 1000 + b"]" * 1000)
    resp = conn.getresponse()
    assert resp.status == 400 and b"nested 1000 deep" in resp.read()
    assert time.monotonic() - started < 2.0


@pytest.mark.slow
def test_an_oversized_body_gets_its_413_not_a_reset(guard: HttpGuard) -> None:
    """The client is still sending when the front refuses from the Content-Length: it must read the 413 (a reset
    would read as a server that is down, which clients retry)."""
    for _ in range(5):
        status, text, _ = request(guard.port, b"x" * (8 << 20))
        assert status == 413 and b"larger than" in text
