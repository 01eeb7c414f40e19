"""tritonclient's HTTP clients (sync and asyncio) keeping the server's ``Retry-After`` on the exception of a
429 or 503 answer (see `dfserve.client._transport`). Imported on first use: it imports tritonclient.http."""

from __future__ import annotations

from typing import Any

import tritonclient.http as _http
from tritonclient.http._utils import _get_error

from dfserve.client._transport import RETRY_AFTER_STATUSES, parse_retry_after

_PROBES = ("/health/", "/ready")
"""Readiness and liveness answer 503 as a value (False), never as an error: left alone."""


class HttpClient(_http.InferenceServerClient):
    """`tritonclient.http.InferenceServerClient` that raises a 429/503 answer carrying ``Retry-After`` itself,
    with `retry_after` set (tritonclient would raise the same exception, without it)."""

    def _get(self, request_uri: str, headers: Any, query_params: Any) -> Any:
        response = super()._get(request_uri, headers, query_params)
        return response if any(p in request_uri for p in _PROBES) else _raise_with_retry_after(response)

    def _post(self, request_uri: str, request_body: Any, headers: Any, query_params: Any) -> Any:
        return _raise_with_retry_after(super()._post(request_uri, request_body, headers, query_params))


def _raise_with_retry_after(response: Any) -> Any:
    if response.status_code in RETRY_AFTER_STATUSES:
        after = parse_retry_after(response.get("retry-after"))
        if after is not None:
            error = _get_error(response)
            error.retry_after = after
            raise error
    return response


def async_client_class() -> type:
    """The asyncio twin (built on first use: tritonclient.http.aio imports aiohttp)."""
    global _ASYNC
    if _ASYNC is None:
        import tritonclient.http.aio as _aio
        from tritonclient.http.aio import _get_error as _get_error_aio

        async def check(response: Any) -> Any:
            if response.status in RETRY_AFTER_STATUSES:
                after = parse_retry_after(response.headers.get("Retry-After"))
                if after is not None:
                    error = await _get_error_aio(response)
                    error.retry_after = after
                    raise error
            return response

        class AsyncHttpClient(_aio.InferenceServerClient):
            async def _get(self, request_uri: str, headers: Any, query_params: Any) -> Any:
                response = await super()._get(request_uri, headers, query_params)
                return response if any(p in request_uri for p in _PROBES) else await check(response)

            async def _post(self, request_uri: str, request_body: Any, headers: Any, query_params: Any) -> Any:
                return await check(await super()._post(request_uri, request_body, headers, query_params))

        _ASYNC = AsyncHttpClient
    return _ASYNC


_ASYNC: type | None = None
