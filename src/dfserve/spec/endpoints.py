"""Server addresses as users write them, parsed once for every caller (the SDK, the load tests, verify).

``[scheme://]host[:port]``: the scheme says the protocol and whether TLS is used (``http://``, ``https://``,
``grpc://``, ``grpcs://``); without one, the `protocol` argument decides, else the port (8001 is Triton's gRPC
port), else HTTP. A missing port is the protocol's default. A scheme that contradicts `protocol` is refused
rather than guessed. This module imports nothing heavy: the CLI parses addresses before anything else loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dfserve.errors import EndpointError

Protocol = Literal["http", "grpc"]
PROTOCOLS: tuple[Protocol, ...] = ("http", "grpc")
DEFAULT_PORTS: dict[Protocol, int] = {"http": 8000, "grpc": 8001}
DEFAULT_HOST = "127.0.0.1"
"""Where the commands look for a server when no --url is given: `dfserve serve`'s default bind address."""


def default_url(protocol: Protocol | None = None) -> str:
    """The server every command (classify, eval, verify, loadtest, soak) talks to without --url:
    http://127.0.0.1:8000, or grpc://127.0.0.1:8001 for the gRPC protocol."""
    chosen: Protocol = protocol or "http"
    return f"{chosen}://{DEFAULT_HOST}:{DEFAULT_PORTS[chosen]}"


URL_HELP = (
    "the server, [scheme://]host[:port]; the scheme picks the protocol and TLS (http://, https://, grpc://, "
    "grpcs://) (default: http://127.0.0.1:8000, or grpc://127.0.0.1:8001 with --protocol grpc)"
)
"""The --url help every command shares."""


SCHEMES: dict[str, tuple[Protocol, bool]] = {
    "http": ("http", False),
    "https": ("http", True),
    "grpc": ("grpc", False),
    "grpcs": ("grpc", True),
}


@dataclass(frozen=True)
class Endpoint:
    address: str
    """``host:port`` as tritonclient wants it."""
    protocol: Protocol
    tls: bool = False

    @property
    def url(self) -> str:
        """The address as a person reads it, scheme included (``grpc://host:8001``)."""
        scheme = {("http", False): "http", ("http", True): "https", ("grpc", False): "grpc", ("grpc", True): "grpcs"}
        return f"{scheme[(self.protocol, self.tls)]}://{self.address}"


def parse_endpoint(url: str, protocol: str | None = None) -> Endpoint:
    if protocol is not None and protocol not in PROTOCOLS:
        raise EndpointError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
    if not isinstance(url, str) or not url.strip():
        raise EndpointError(f"no server address: give host:port, got {url!r}")
    scheme, sep, address = url.strip().partition("://")
    chosen: Protocol | None = protocol
    tls = False
    if sep:
        scheme = scheme.lower()
        if scheme not in SCHEMES:
            raise EndpointError(
                f"unsupported URL scheme {scheme!r} in {url!r}: use http://, https://, grpc://, grpcs:// or host:port"
            )
        implied, tls = SCHEMES[scheme]
        if protocol is not None and protocol != implied:
            raise EndpointError(f"{url!r} is a {implied} address but protocol={protocol!r}; make them agree")
        chosen = implied
    else:
        address = scheme
    host, port = _split_host_port(address.rstrip("/"), url)
    if chosen is None:
        chosen = "grpc" if port == DEFAULT_PORTS["grpc"] else "http"
    return Endpoint(f"{host}:{port if port is not None else DEFAULT_PORTS[chosen]}", chosen, tls)


def _split_host_port(address: str, url: str) -> tuple[str, int | None]:
    if not address or "/" in address or "?" in address:
        raise EndpointError(f"give [scheme://]host[:port] without a path, got {url!r}")
    if address.startswith("["):  # [ipv6]:port
        host, _, rest = address.partition("]")
        host += "]"
        port_text = rest.removeprefix(":") if rest else ""
    elif address.count(":") == 1:
        host, _, port_text = address.partition(":")
    else:
        host, port_text = address, ""
    if not host.strip("[]"):
        raise EndpointError(f"{url!r} has no host")
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise EndpointError(f"{url!r} has an invalid port {port_text!r}")
    return host, int(port_text)
