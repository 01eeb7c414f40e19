"""Retries against a real tritonserver whose Python-backend stub died: Triton answers every request for the
ensemble with 500 "Stub process ... is not healthy" (it does not restart the stub itself; dfserve's launcher
restarts the server). The SDK treats that answer as transient: it retries (openai-python's two retries) and
then raises `ServerUnavailableError` carrying the server's own 500 and message. Retry-After and the backoff
against `FakeServer` are in test_testing.py; the policy itself in test_core.py."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest

from dfserve.client import AsyncClient, Client, ServerUnavailableError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_a_dead_stubs_500_is_retried_then_raised_with_its_status(
    built_repo: Path, sample_images: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    from dfserve.triton.process import TritonServer

    photo = sample_images["rocket"]
    server = TritonServer(built_repo, http_port=0, grpc_port=0, metrics_port=0).start(timeout=240)
    try:
        with Client(server.http_url) as http, Client(f"grpc://{server.grpc_url}") as grpc:
            for client in (http, grpc):
                client.classify(photo)
            for pid in server.stubs():
                os.kill(pid, signal.SIGKILL)
            time.sleep(1.0)
            errors = {}
            with caplog.at_level(logging.INFO, logger="dfserve.client"):
                for name, client in (("http", http), ("grpc", grpc)):
                    with pytest.raises(ServerUnavailableError) as info:
                        client.classify(photo)
                    errors[name] = info.value

                async def once() -> ServerUnavailableError:
                    async with AsyncClient(server.http_url) as aclient:
                        with pytest.raises(ServerUnavailableError) as info:
                            await aclient.classify(photo)
                        return info.value

                import asyncio

                errors["http async"] = asyncio.run(once())
        for name, error in errors.items():
            print(f"{name}: {error.status_code} {error}")
            assert error.status_code == 500, (name, error)
            assert "is not healthy" in str(error) or "is not ready" in str(error), (name, error)
        retries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retry ")]
        assert sum(m.startswith("retry 2 ") for m in retries) == 3, retries  # two retries per call, then raised
    finally:
        server.stop()
