"""One parser of server addresses for the SDK, the load tests and verify: the same input means the same thing."""

from __future__ import annotations

import pytest

from dfserve.client import ClientConfigError
from dfserve.client._core import resolve_endpoint
from dfserve.errors import EndpointError
from dfserve.measure.target import split_host
from dfserve.spec.endpoints import Endpoint, parse_endpoint


@pytest.mark.parametrize(
    ("url", "protocol", "expected"),
    [
        ("localhost:8000", None, Endpoint("localhost:8000", "http")),
        ("localhost:8001", None, Endpoint("localhost:8001", "grpc")),
        ("https://h", None, Endpoint("h:8000", "http", True)),
        ("grpcs://h:9", "grpc", Endpoint("h:9", "grpc", True)),
        ("[::1]", "grpc", Endpoint("[::1]:8001", "grpc")),
    ],
)
def test_parse_endpoint(url: str, protocol: str | None, expected: Endpoint) -> None:
    assert parse_endpoint(url, protocol) == expected
    assert expected.url.startswith(("http://", "https://", "grpc://", "grpcs://"))


@pytest.mark.parametrize("url", ["ftp://h:1", "h:1/v2", "h:0", "", ":9"])
def test_sdk_and_load_tests_refuse_the_same_addresses(url: str) -> None:
    with pytest.raises(EndpointError) as parsed:
        parse_endpoint(url, "http")
    with pytest.raises(ClientConfigError) as sdk:
        resolve_endpoint(url, "http")
    with pytest.raises(EndpointError) as loadtest:
        split_host(url, "http")
    assert str(parsed.value) == str(sdk.value) == str(loadtest.value)


def test_plain_addresses_mean_the_same_to_both() -> None:
    for url in ("h:8001", "grpc://h:7", "http://h"):
        address, protocol = resolve_endpoint(url, None)
        assert split_host(url, None) == (address, protocol, False)
