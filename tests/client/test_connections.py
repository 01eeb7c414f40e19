"""A bounded number of connections, however many threads use one `Client`: 200 short-lived threads and
repeated `classify_many` calls through a pool of 8 leave at most 8 established TCP connections from this
process to the real server (counted by psutil), over HTTP and gRPC."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psutil
import pytest

from dfserve.client import Client, ClientConfigError, Prediction

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def established_to(port: int) -> int:
    """This process's established TCP connections to the server's `port`."""
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.status == psutil.CONN_ESTABLISHED and conn.raddr and conn.raddr.port == port
    )


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_200_short_lived_threads_use_at_most_the_pool(
    triton_server: Any, sample_images: dict[str, Path], protocol: str
) -> None:
    port = triton_server.http_port if protocol == "http" else triton_server.grpc_port
    url = triton_server.http_url if protocol == "http" else f"grpc://{triton_server.grpc_url}"
    photo = next(iter(sample_images.values()))
    results: list[Any] = []
    peak = 0
    with Client(url, pool_size=8) as client:
        for _wave in range(5):  # 5 waves of 40 threads alive at once: 200 threads, each ends after its call
            threads = [threading.Thread(target=lambda: results.append(client.classify(photo))) for _ in range(40)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            peak = max(peak, established_to(port))
            client.classify_many([photo] * 24, concurrency=16)  # more workers than connections: they share them
            peak = max(peak, established_to(port))
        assert len(results) == 200 and all(isinstance(r, Prediction) for r in results)
        during = established_to(port)
    after = established_to(port)
    print(
        f"{protocol}: 200 short-lived threads + 5 classify_many through pool_size=8: peak {peak}, "
        f"open before close {during}, after close {after}"
    )
    assert 1 <= peak <= 8
    assert after == 0


def test_pool_size_is_checked(triton_server: Any) -> None:
    with pytest.raises(ClientConfigError, match="pool_size"):
        Client(triton_server.http_url, pool_size=0)


def test_http_to_the_grpc_port_says_so(triton_server: Any) -> None:
    """The address printed for gRPC, pasted with http://, fails once with a hint instead of a parse error."""
    from dfserve.client import InferenceError

    with Client(f"http://{triton_server.grpc_url}", timeout=10) as client, pytest.raises(InferenceError) as caught:
        client.model_spec()
    assert "gRPC port" in str(caught.value) and "grpc://" in str(caught.value)
