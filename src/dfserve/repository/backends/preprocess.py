"""`preprocess`: encoded image files to the engine's uint8 pixels, on the server.

Each request in a dynamic batch is decoded on its own, so a corrupt or hostile file fails only its own
request (INVALID_ARGUMENT naming the problem) while the others in the batch get their pixels.

A request whose client has gone is not decoded: before each file the model asks Triton
(``request.is_cancelled()``, Python backend 23.10 and later; 2.51 has it) and answers CANCELLED instead. Triton
marks a request cancelled when a gRPC client cancels its call or its deadline passes; Triton 2.51's HTTP frontend
does not notice a closed connection, so over HTTP the per-file bounds (bytes, pixels, JPEG scans) are what limit
the work a gone client leaves behind. A file being decoded is not interrupted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from dfserve.errors import InvalidImageError
from dfserve.preprocessing import preprocess_bytes, use_configured_limits_only
from dfserve.repository.backends.common import invalid_argument, spec_from_args


class _Cancelled(Exception):
    """The request was cancelled (its client gone) before all its files were decoded."""


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        self.spec = spec_from_args(args)
        self.logger = pb_utils.Logger
        use_configured_limits_only()  # this process opens images through `open_image` only

    def _pixels(self, request: Any) -> np.ndarray:
        tensor = pb_utils.get_input_tensor_by_name(request, self.spec.tensors.image)
        items = tensor.as_numpy().reshape(-1)
        if items.size == 0:
            raise InvalidImageError("request carried no image")
        out = []
        is_cancelled = getattr(request, "is_cancelled", None)
        for i, item in enumerate(items):
            if is_cancelled is not None and is_cancelled():
                raise _Cancelled(f"request cancelled by its client before file {i} of {items.size} was decoded")
            data = item if isinstance(item, bytes) else bytes(item)
            try:
                out.append(preprocess_bytes(data, self.spec.preprocessing, self.spec.limits, self.spec.resize_mode))
            except InvalidImageError as exc:
                where = f" (batch item {i})" if items.size > 1 else ""
                raise InvalidImageError(f"{exc}{where}") from exc
        return np.stack(out)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                pixels = self._pixels(request)
            except InvalidImageError as exc:
                responses.append(invalid_argument(pb_utils, str(exc)))
                continue
            except _Cancelled as exc:
                code = getattr(pb_utils.TritonError, "CANCELLED", pb_utils.TritonError.UNAVAILABLE)
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), code)))
                continue
            except Exception as exc:  # a bug, not bad input: still fail this request only
                self.logger.log_error(f"preprocess failed: {exc!r}")
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"preprocess failed: {exc}", pb_utils.TritonError.INTERNAL)
                    )
                )
                continue
            out = pb_utils.Tensor(self.spec.tensors.pixels, pixels)
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
