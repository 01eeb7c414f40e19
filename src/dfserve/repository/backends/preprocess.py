"""`preprocess`: encoded image files to the engine's uint8 pixels, on the server.

Each request in a dynamic batch is decoded on its own, so a corrupt or hostile file fails only its own
request (INVALID_ARGUMENT naming the problem) while the others in the batch get their pixels.

The requests of a batch are decoded by a thread pool of `Batching.preprocess_threads` threads (0: min(4, the
host's cores)): Pillow releases the GIL while it decodes and resizes, so one instance uses several cores, and a
host needs a few `preprocess` processes rather than one per core. Only the decoding runs in the threads; reading
the requests and building the responses (Triton's stub objects) stay on the thread that called `execute`.

A request whose client has gone is not decoded: Triton is asked (``request.is_cancelled()``, Python backend 23.10
and later; 2.51 has it) on the thread that called `execute`, before the request is handed to the pool, and between
files when the instance decodes on that thread; such a request is answered CANCELLED. Triton marks a request
cancelled when a gRPC client cancels its call or its deadline passes; Triton 2.51's HTTP frontend does not notice a
closed connection, so over HTTP the per-file bounds (bytes, pixels, JPEG scans) are what limit the work a gone
client leaves behind. A file being decoded is not interrupted.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from dfserve.errors import InvalidImageError
from dfserve.preprocessing import preprocess_bytes, use_configured_limits_only
from dfserve.repository.backends.common import invalid_argument, spec_from_args
from dfserve.spec.model import ModelSpec

DEFAULT_MAX_THREADS = 4


class _Cancelled(Exception):
    """The request was cancelled (its client gone) before all its files were decoded."""


def decode_threads(spec: ModelSpec) -> int:
    """The spec's thread count, or min(DEFAULT_MAX_THREADS, cores) when it says 0."""
    return spec.batching.preprocess_threads or min(DEFAULT_MAX_THREADS, os.cpu_count() or 1)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        self.spec = spec_from_args(args)
        self.logger = pb_utils.Logger
        use_configured_limits_only()  # this process opens images through `open_image` only
        threads = decode_threads(self.spec)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="decode") if threads > 1 else None

    def _pixels(self, items: list[bytes], is_cancelled: Callable[[], bool] | None = None) -> np.ndarray:
        if not items:
            raise InvalidImageError("request carried no image")
        out = []
        for i, data in enumerate(items):
            if is_cancelled is not None and is_cancelled():
                raise _Cancelled(f"request cancelled by its client before file {i} of {len(items)} was decoded")
            try:
                out.append(preprocess_bytes(data, self.spec.preprocessing, self.spec.limits, self.spec.resize_mode))
            except InvalidImageError as exc:
                where = f" (batch item {i})" if len(items) > 1 else ""
                raise InvalidImageError(f"{exc}{where}") from exc
        return np.stack(out)

    def _outcome(self, items: list[bytes], is_cancelled: Callable[[], bool] | None = None) -> np.ndarray | Exception:
        try:
            return self._pixels(items, is_cancelled)
        except Exception as exc:  # returned, not raised: the response is built on the caller's thread
            return exc

    def execute(self, requests: list[Any]) -> list[Any]:
        batch = []
        cancelled: dict[int, _Cancelled] = {}
        for k, request in enumerate(requests):
            tensor = pb_utils.get_input_tensor_by_name(request, self.spec.tensors.image)
            batch.append([item if isinstance(item, bytes) else bytes(item) for item in tensor.as_numpy().reshape(-1)])
            is_cancelled = getattr(request, "is_cancelled", None)
            if is_cancelled is not None and is_cancelled():
                cancelled[k] = _Cancelled("request cancelled by its client before its files were decoded")
        if self.pool is not None:  # Triton's request objects are asked on this thread only
            work = [self.pool.submit(self._outcome, b) for k, b in enumerate(batch) if k not in cancelled]
            done = iter(f.result() for f in work)
            outcomes = [cancelled[k] if k in cancelled else next(done) for k in range(len(batch))]
        else:
            outcomes = [
                cancelled[k] if k in cancelled else self._outcome(b, getattr(requests[k], "is_cancelled", None))
                for k, b in enumerate(batch)
            ]
        responses = []
        for outcome in outcomes:
            if isinstance(outcome, _Cancelled):
                code = getattr(pb_utils.TritonError, "CANCELLED", pb_utils.TritonError.UNAVAILABLE)
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(outcome), code)))
            elif isinstance(outcome, InvalidImageError):
                responses.append(invalid_argument(pb_utils, str(outcome)))
            elif isinstance(outcome, Exception):  # a bug, not bad input: still fail this request only
                self.logger.log_error(f"preprocess failed: {outcome!r}")
                error = pb_utils.TritonError(f"preprocess failed: {outcome}", pb_utils.TritonError.INTERNAL)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                out = pb_utils.Tensor(self.spec.tensors.pixels, outcome)
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses

    def finalize(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
