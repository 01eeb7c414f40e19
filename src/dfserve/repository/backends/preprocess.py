"""`preprocess`: encoded image files to the engine's uint8 pixels, on the server.

Each request in a dynamic batch is decoded on its own, so a corrupt or hostile file fails only its own
request (INVALID_ARGUMENT naming the problem) while the others in the batch get their pixels.

The requests of a batch are decoded by a thread pool of `Batching.preprocess_threads` threads (0: min(4, the
host's cores)): Pillow releases the GIL while it decodes and resizes, so one instance uses several cores, and a
host needs a few `preprocess` processes rather than one per core. Only the decoding runs in the threads; reading
the requests and building the responses (Triton's stub objects) stay on the thread that called `execute`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from dfserve.errors import InvalidImageError
from dfserve.preprocessing import preprocess_bytes, use_configured_limits_only
from dfserve.repository.backends.common import invalid_argument, spec_from_args
from dfserve.spec.model import ModelSpec

DEFAULT_MAX_THREADS = 4


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

    def _pixels(self, items: list[bytes]) -> np.ndarray:
        if not items:
            raise InvalidImageError("request carried no image")
        out = []
        for i, data in enumerate(items):
            try:
                out.append(preprocess_bytes(data, self.spec.preprocessing, self.spec.limits, self.spec.resize_mode))
            except InvalidImageError as exc:
                where = f" (batch item {i})" if len(items) > 1 else ""
                raise InvalidImageError(f"{exc}{where}") from exc
        return np.stack(out)

    def _outcome(self, items: list[bytes]) -> np.ndarray | Exception:
        try:
            return self._pixels(items)
        except Exception as exc:  # returned, not raised: the response is built on the caller's thread
            return exc

    def execute(self, requests: list[Any]) -> list[Any]:
        batch = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, self.spec.tensors.image)
            batch.append([item if isinstance(item, bytes) else bytes(item) for item in tensor.as_numpy().reshape(-1)])
        outcomes = list(self.pool.map(self._outcome, batch)) if self.pool else [self._outcome(b) for b in batch]
        responses = []
        for outcome in outcomes:
            if isinstance(outcome, InvalidImageError):
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
