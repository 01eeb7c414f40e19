"""A call's own `timeout=` bounds it over HTTP and gRPC, sync and async, against servers that never answer: a real
TCP server that accepts and stays silent, a real gRPC server whose inference never returns, `FakeServer` frozen
after the spec was read, and (slow) a real tritonserver whose Python-backend stubs are SIGSTOPped."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dfserve.client import AsyncClient, Client, RequestTimeoutError, ServerUnavailableError
from dfserve.client.testing import FakeServer, detector_spec
from dfserve.spec.model import SPEC_PARAMETER

TIMEOUT = 0.5
BOUND = 1.5  # the figure: a call with timeout=0.5 returns within 1.5 s


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts every connection and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in held:
        conn.close()


@pytest.fixture
def hung_grpc() -> Iterator[int]:
    """A real gRPC server speaking Triton's service: it answers the model config (with the spec) and readiness,
    and never answers an inference request."""
    import grpc
    from tritonclient.grpc import model_config_pb2, service_pb2

    release = threading.Event()
    spec = detector_spec()

    def config(request: bytes, context: Any) -> bytes:
        cfg = model_config_pb2.ModelConfig(name=spec.models.ensemble, max_batch_size=8)
        cfg.parameters[SPEC_PARAMETER].string_value = spec.model_dump_json()
        return service_pb2.ModelConfigResponse(config=cfg).SerializeToString()

    def ready(request: bytes, context: Any) -> bytes:
        return service_pb2.ServerReadyResponse(ready=True).SerializeToString()

    def hang(request: bytes, context: Any) -> bytes:
        release.wait(30)
        context.abort(grpc.StatusCode.CANCELLED, "test over")
        return b""

    class Handler(grpc.GenericRpcHandler):
        def service(self, details: Any) -> Any:
            method = details.method.rsplit("/", 1)[-1]
            fn = {"ModelConfig": config, "ServerReady": ready}.get(method, hang)
            return grpc.unary_unary_rpc_method_handler(fn)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((Handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    release.set()
    server.stop(grace=None)


def timed(call: Callable[[], Any]) -> tuple[BaseException | None, float]:
    start = time.monotonic()
    try:
        call()
    except BaseException as exc:
        return exc, time.monotonic() - start
    return None, time.monotonic() - start


def classify_with(kind: str, url: str, image: bytes, *, prime: bool = False) -> Callable[[], Any]:
    """A call of `classify(image, timeout=TIMEOUT)` with a sync or async client; `prime` reads the spec first."""
    if kind == "sync":

        def sync() -> Any:
            with Client(url) as client:
                if prime:
                    client.model_spec()
                return client.classify(image, timeout=TIMEOUT)

        return sync

    async def run() -> Any:
        async with AsyncClient(url) as client:
            if prime:
                await client.model_spec()
            return await client.classify(image, timeout=TIMEOUT)

    return lambda: asyncio.run(run())


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_timeout_bounds_a_call_to_a_server_that_accepts_and_never_answers(
    silent_server: int, protocol: str, kind: str
) -> None:
    """The whole call, the spec's first read included, is bounded by the call's timeout (the client's is 30 s)."""
    error, elapsed = timed(classify_with(kind, f"{protocol}://127.0.0.1:{silent_server}", png()))
    assert elapsed < BOUND, f"{elapsed:.2f}s"
    if protocol == "http":
        assert isinstance(error, RequestTimeoutError), error
        assert str(error).endswith(f"no answer within {TIMEOUT:g} s")
    else:  # gRPC gives up on a peer that never sends its HTTP/2 SETTINGS before the deadline: UNAVAILABLE
        assert isinstance(error, RequestTimeoutError | ServerUnavailableError), error


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_grpc_inference_that_never_returns_times_out(hung_grpc: int, kind: str) -> None:
    error, elapsed = timed(classify_with(kind, f"grpc://127.0.0.1:{hung_grpc}", png(), prime=True))
    assert elapsed < BOUND, f"{elapsed:.2f}s"
    assert isinstance(error, RequestTimeoutError) and error.status_code == 504, error
    assert error.request_id and error.request_id in str(error) and error.model == "detector"


def test_http_inference_that_never_returns_times_out() -> None:
    with FakeServer() as server, Client(server.url) as client:
        client.model_spec()
        server.freeze()
        error, elapsed = timed(lambda: client.classify(png(), timeout=TIMEOUT))
        server.thaw()
    assert elapsed < BOUND, f"{elapsed:.2f}s"
    assert isinstance(error, RequestTimeoutError) and error.status_code == 504, error
    assert error.request_id and error.request_id in str(error)


async def test_async_http_inference_that_never_returns_times_out() -> None:
    with FakeServer() as server:
        async with AsyncClient(server.url) as client:
            await client.model_spec()
            server.freeze()
            start = time.monotonic()
            with pytest.raises(RequestTimeoutError) as info:
                await client.classify(png(), timeout=TIMEOUT)
            elapsed = time.monotonic() - start
            server.thaw()
    assert elapsed < BOUND, f"{elapsed:.2f}s"
    assert info.value.status_code == 504 and info.value.request_id


def test_one_timeout_message_for_both_protocols(hung_grpc: int, silent_server: int) -> None:
    messages = {}
    for protocol, port in (("grpc", hung_grpc), ("http", silent_server)):
        with Client(f"{protocol}://127.0.0.1:{port}") as client:
            if protocol == "grpc":
                client.model_spec()
            with pytest.raises(RequestTimeoutError) as info:
                client.classify(png(), timeout=TIMEOUT)
        text = str(info.value)
        for varying in (client.url, str(info.value.request_id)):
            text = text.replace(varying, "*")
        messages[protocol] = text.replace(", request *", "")
    assert messages["grpc"] == messages["http"] == "timed out waiting for *, model 'detector': no answer within 0.5 s"


def test_a_timed_out_http_connection_is_replaced_and_the_client_goes_on() -> None:
    """The connection that timed out may hold half an answer: it is dropped, and the next call (on a pool of one
    connection) gets a fresh one and the right answer."""
    with FakeServer(scores={"real": 0.25, "fake": 0.75}) as server, Client(server.url, pool_size=1) as client:
        client.model_spec()
        server.freeze()
        with pytest.raises(RequestTimeoutError):
            client.classify(png(), timeout=TIMEOUT)
        server.thaw()
        for _ in range(3):
            assert client.classify(png(), timeout=5).positive_score == pytest.approx(0.75)


async def test_async_client_goes_on_after_a_timeout() -> None:
    with FakeServer(scores=[0.4, 0.6]) as server:
        async with AsyncClient(server.url) as client:
            await client.model_spec()
            server.freeze()
            with pytest.raises(RequestTimeoutError):
                await client.classify(png(), timeout=TIMEOUT)
            server.thaw()
            assert (await client.classify(png(), timeout=5)).label == "fake"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_real_tritonserver_with_its_stubs_stopped(built_repo: Path, sample_images: dict[str, Path]) -> None:
    """SIGSTOP every Python-backend stub of a real tritonserver: the ensemble's requests hang inside the server.
    Each client flavour returns within the bound with the one timeout error."""
    from dfserve.triton.process import TritonServer

    photo = sample_images["coffee"]
    server = TritonServer(built_repo, http_port=0, grpc_port=0, metrics_port=0).start(timeout=240)
    stubs = sorted(server.stubs())
    assert stubs
    try:
        urls = {"http": server.http_url, "grpc": f"grpc://{server.grpc_url}"}
        clients = {p: Client(url) for p, url in urls.items()}
        for client in clients.values():
            client.classify(photo)  # warm: spec read, connections open
        for pid in stubs:
            os.kill(pid, signal.SIGSTOP)
        try:
            outcomes = {}
            for protocol, client in clients.items():
                outcomes[f"{protocol} sync"] = timed(lambda c=client: c.classify(photo, timeout=TIMEOUT))

                async def once(url: str = urls[protocol]) -> tuple[BaseException | None, float]:
                    async with AsyncClient(url) as aclient:
                        await aclient.model_spec()  # answered by the server itself, not the stopped stubs
                        start = time.monotonic()
                        try:
                            await aclient.classify(photo, timeout=TIMEOUT)
                        except BaseException as exc:
                            return exc, time.monotonic() - start
                        return None, time.monotonic() - start

                outcomes[f"{protocol} async"] = asyncio.run(once())
        finally:
            for pid in stubs:
                os.kill(pid, signal.SIGCONT)
        for name, (error, elapsed) in outcomes.items():
            print(f"{name}: {type(error).__name__} after {elapsed:.2f}s")
            assert isinstance(error, RequestTimeoutError), (name, error)
            assert elapsed < BOUND, (name, elapsed)
        for client in clients.values():
            client.close()
    finally:
        # not asserted: whether tritonserver outlives stubs that stopped answering its health checks (the
        # clients going on after a timeout is tested above, on FakeServer)
        print(f"tritonserver after SIGCONT: {server!r}")
        server.stop()
