"""What a load test aims at: the server address, the protocol, and the served model's `ModelSpec`.

Load generators never declare model or tensor names, input sizes or labels of their own: they ask the server
for a model's config and read the `dfserve_spec` parameter that the build embedded in it. Only the name of the
model to ask is needed to start; by default the names `dfserve.spec.model.ModelNames` gives a fresh build are
tried, then the repository index (when the server lets anonymous callers read it).
"""

from __future__ import annotations

from typing import Any

from dfserve.errors import TargetError
from dfserve.spec.endpoints import Protocol, parse_endpoint
from dfserve.spec.model import SPEC_PARAMETER, ModelNames, ModelSpec, spec_from_model_config


def split_host(host: str, protocol: Protocol | None = None) -> tuple[str, Protocol, bool]:
    """``[scheme://]host[:port]`` to (``host:port``, protocol, tls), with the SDK's rules
    (`dfserve.spec.endpoints.parse_endpoint`)."""
    endpoint = parse_endpoint(host, protocol)
    return endpoint.address, endpoint.protocol, endpoint.tls


def spec_from_config(config: dict[str, Any]) -> ModelSpec | None:
    """The `ModelSpec` embedded in a model config (`dfserve.spec.model.spec_from_model_config`), or None."""
    try:
        return spec_from_model_config(config)
    except ValueError as exc:
        raise TargetError(
            f"model {config.get('name', '?')}: parameter {SPEC_PARAMETER} is not a valid spec: {exc}"
        ) from exc


def make_client(url: str, protocol: Protocol, *, ssl: bool = False, timeout_s: float = 60.0) -> Any:
    """One tritonclient client (HTTP on geventhttpclient, or gRPC)."""
    if protocol == "http":
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(
            url, ssl=ssl, concurrency=1, connection_timeout=timeout_s, network_timeout=timeout_s
        )
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url, ssl=ssl)


def _model_config(client: Any, protocol: Protocol, model: str) -> dict[str, Any]:
    if protocol == "http":
        return dict(client.get_model_config(model))
    return dict(client.get_model_config(model, as_json=True).get("config", {}))


def _index_names(client: Any, protocol: Protocol) -> list[str]:
    try:
        index = (
            client.get_model_repository_index()
            if protocol == "http"
            else client.get_model_repository_index(as_json=True).get("models", [])
        )
    except Exception:  # restricted (dfserve's own server keeps it behind a key) or unsupported
        return []
    return [str(m["name"]) for m in index if m.get("name")]


def fetch_spec(client: Any, protocol: Protocol, model: str | None = None) -> ModelSpec:
    """Read the served `ModelSpec` from `model`'s config, or from the first model that carries one."""
    from tritonclient.utils import InferenceServerException

    defaults = ModelNames()
    candidates = [model] if model else [defaults.ensemble, defaults.engine, defaults.preprocess]
    errors: list[str] = []
    tried: set[str] = set()
    while candidates:
        name = candidates.pop(0)
        tried.add(name)
        try:
            spec = spec_from_config(_model_config(client, protocol, name))
        except InferenceServerException as exc:
            msg = exc.message() or str(exc)
            if "connect" in msg.lower() or "unavailable" in msg.lower() or "refused" in msg.lower():
                raise TargetError(f"cannot reach the server: {msg}") from exc
            errors.append(f"{name}: {msg}")
            spec = None
        except OSError as exc:  # geventhttpclient raises socket errors as they are
            raise TargetError(f"cannot reach the server: {exc}") from exc
        if spec is not None:
            return spec
        if not model and not candidates:
            candidates = [n for n in _index_names(client, protocol) if n not in tried]
    if model:
        raise TargetError(f"model {model!r} carries no {SPEC_PARAMETER} parameter ({'; '.join(errors) or 'none'})")
    raise TargetError(
        f"no dfserve model found on the server (tried {', '.join(sorted(tried))}): name one with --dfserve-model"
    )
