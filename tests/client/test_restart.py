"""Nothing lost across a restart: `classify_many` rides out a graceful restart of a real tritonserver (stopped,
then started again on the same ports) with zero failed items, over HTTP and gRPC; retries are logged."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dfserve.client import Client, Prediction
from dfserve.triton.distribution import free_port
from dfserve.triton.process import TritonServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_graceful_restart_under_classify_many_loses_nothing(
    built_repo: Path, sample_images: dict[str, Path], protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    ports = {"http_port": free_port("127.0.0.1"), "grpc_port": free_port("127.0.0.1"), "metrics_port": 0}
    first = TritonServer(built_repo, **ports).start(timeout=240)  # type: ignore[arg-type]
    url = first.http_url if protocol == "http" else f"grpc://{first.grpc_url}"
    items = list(sample_images.values()) * 500  # long enough to outlast the restart
    done = threading.Event()
    progress = {"n": 0}
    results: list[Any] = []

    def on_progress(n: int, total: int) -> None:
        progress["n"] = n

    def work() -> None:
        with Client(url, timeout=90, max_retries=None) as client:  # retry until the timeout: ride it out
            results.extend(client.classify_many(items, concurrency=4, progress=on_progress))
        done.set()

    second: TritonServer | None = None
    with caplog.at_level(logging.INFO, logger="dfserve.client"):
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        try:
            deadline = time.monotonic() + 60
            while progress["n"] < 12 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert progress["n"] >= 12, "the bulk call never got going"
            first.stop()  # graceful: SIGINT, in-flight requests finish, then the process exits
            assert not done.is_set(), "the call returned while the server was down"
            second = TritonServer(built_repo, **ports).start(timeout=240)  # type: ignore[arg-type]
            worker.join(timeout=180)
        finally:
            first.stop()
            if second is not None:
                second.stop()
    assert done.is_set()
    failed = [r for r in results if not isinstance(r, Prediction)]
    assert len(results) == len(items) and failed == [], failed[:3]
    assert any("retry" in r.getMessage() for r in caplog.records)
