"""TLS for both protocols, sync and async, through real TLS endpoints on loopback with certificates made here:
HTTPS through Debian's nginx terminating TLS (and asking for a client certificate) in front of the real
tritonserver, gRPC over TLS through Triton's own `--grpc-use-ssl` options (mutual). A wrong CA fails at once
with a `TLSError` that names TLS."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dfserve.client import AsyncClient, Client, Prediction, TLSError
from dfserve.triton.distribution import free_port
from dfserve.triton.process import TritonServer
from tests.tls.certs import Certs, make_certs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

INSTALL_NGINX = Path(__file__).resolve().parents[1] / "tls" / "install_nginx.sh"
NGINX_CONF = """
worker_processes 1;
daemon off;
user root;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 64m;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client on;
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def https_url(triton_server: Any, certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nginx on a free loopback port, terminating TLS for the session's tritonserver."""
    nginx = subprocess.run(["sh", str(INSTALL_NGINX)], capture_output=True, text=True, timeout=600, check=True)
    tmp = tmp_path_factory.mktemp("nginx")
    port = free_port("127.0.0.1")
    conf = tmp / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            tmp=tmp,
            port=port,
            cert=certs.server_cert,
            key=certs.server_key,
            ca=certs.ca,
            upstream=triton_server.http_url,
        )
    )
    proc = subprocess.Popen([nginx.stdout.strip().splitlines()[-1], "-c", str(conf), "-p", str(tmp)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket_to(port):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start: {(tmp / 'error.log').read_text()}") from None
                time.sleep(0.1)
        yield f"https://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def socket_to(port: int) -> Any:
    import socket

    return socket.create_connection(("127.0.0.1", port), timeout=1)


@pytest.fixture(scope="module")
def grpcs_url(built_repo: Path, certs: Certs) -> Iterator[str]:
    """A second tritonserver whose gRPC endpoint speaks TLS only, and asks for a client certificate."""
    server = TritonServer(
        built_repo,
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        extra_args=[
            "--grpc-use-ssl=true",
            "--grpc-use-ssl-mutual=true",
            f"--grpc-server-cert={certs.server_cert}",
            f"--grpc-server-key={certs.server_key}",
            f"--grpc-root-cert={certs.ca}",
        ],
    )
    server.start(timeout=240)
    try:
        yield f"grpcs://{server.grpc_url}"
    finally:
        server.stop()


def client_files(certs: Certs) -> dict[str, Path]:
    return {"ca_file": certs.ca, "cert_file": certs.client_cert, "key_file": certs.client_key}


@pytest.mark.parametrize("scheme", ["https", "grpcs"])
def test_sync_classify_over_tls(
    https_url: str, grpcs_url: str, certs: Certs, sample_images: dict[str, Path], scheme: str
) -> None:
    url = https_url if scheme == "https" else grpcs_url
    photos = list(sample_images.values())
    with Client(url, **client_files(certs)) as client:
        assert client.url == url
        results = client.classify_many(photos, concurrency=2)
        health = client.health()
    assert all(isinstance(r, Prediction) for r in results), results
    assert health.ready and health.model_ready


@pytest.mark.parametrize("scheme", ["https", "grpcs"])
async def test_async_classify_over_tls(
    https_url: str, grpcs_url: str, certs: Certs, sample_images: dict[str, Path], scheme: str
) -> None:
    url = https_url if scheme == "https" else grpcs_url
    async with AsyncClient(url, **client_files(certs)) as client:
        results = await client.classify_many(list(sample_images.values()), concurrency=2)
    assert all(isinstance(r, Prediction) for r in results), results


@pytest.mark.parametrize("scheme", ["https", "grpcs"])
def test_a_wrong_ca_fails_at_once_naming_tls(https_url: str, grpcs_url: str, certs: Certs, scheme: str) -> None:
    url = https_url if scheme == "https" else grpcs_url
    files = {**client_files(certs), "ca_file": certs.wrong_ca}
    started = time.monotonic()
    with Client(url, timeout=20, **files) as client, pytest.raises(TLSError, match="TLS") as caught:
        client.model_spec()
    assert time.monotonic() - started < 10, "a TLS failure is final, not retried until the timeout"
    print(f"{scheme} with a wrong CA: {caught.value}")


def test_the_https_endpoint_is_real_tls(https_url: str, certs: Certs) -> None:
    """The proxy refuses a client without a certificate: the TLS endpoint is not a pass-through."""
    import ssl

    context = ssl.create_default_context(cafile=str(certs.ca))
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{https_url}/v2/health/ready", context=context, timeout=10)
    assert caught.value.code == 400  # nginx: "No required SSL certificate was sent"
