"""`detector` of a `--decode gpu --engine torch` build: image files in, scores out, in one batched Python-backend
model (decode, resize and crop on the device by `dfserve.engine.gpu_decode`, then the PyTorch engine).

Why one model rather than an ensemble of a GPU `preprocess` and `vit`: the pixels never leave the GPU nor the
process (no CUDA IPC between two stubs, no second dynamic-batching queue), and the whole dynamic batch is decoded
by one batched nvJPEG call. The served interface is unchanged: `image` BYTES in, `scores` out with the labels file
(Triton's classification extension applies to any model's output). `vit` (pixels in) stays in the repository
for the SDK's pixels mode.

Every file of the batch is checked and decoded on its own terms (see `dfserve.engine.gpu_decode`): a request with
a bad file gets INVALID_ARGUMENT (HTTP 400) naming it, its batch-mates get their scores. Only an engine failure
fails the whole batch (INTERNAL). On this project's CPU machines it runs with device `cpu` (the same code); the
CUDA path runs on a GPU host (`dfserve bench gpu-decode` measures it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from dfserve.engine import torch_module as torch_engine
from dfserve.engine.gpu_decode import DeviceDecoder
from dfserve.errors import InvalidImageError
from dfserve.preprocessing import use_configured_limits_only
from dfserve.repository.backends.common import invalid_argument, spec_from_args
from dfserve.repository.writer import warmup_image_bytes


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        import torch

        self.torch = torch
        self.spec = spec_from_args(args)
        use_configured_limits_only()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        folder = Path(args["model_repository"]) / args["model_version"]
        classifier = torch_engine.load_classifier(folder)
        self.engine: Any = torch_engine.engine_for(
            classifier, self.spec, device=self.device, precision=self.spec.precision
        )
        self.decoder = DeviceDecoder(self.spec.preprocessing, self.spec.limits, self.device)
        pb_utils.Logger.log_info(f"detector: decode on {self.device} with {self.decoder.jpeg_decoder}")
        warm = warmup_image_bytes(self.spec)
        with torch.inference_mode():
            for batch in sorted({1, self.spec.batching.max_batch_size}):
                self._scores(self.decoder([warm] * batch).pixels)

    def _scores(self, pixels: Any) -> np.ndarray:
        step = self.spec.batching.max_batch_size
        outs = [self.engine(pixels[i : i + step]) for i in range(0, pixels.shape[0], step)]
        scores = self.torch.cat(outs) if outs else pixels.new_zeros((0, len(self.spec.labels.names)))
        return scores.float().cpu().numpy()

    def execute(self, requests: list[Any]) -> list[Any]:
        t = self.spec.tensors
        files: list[bytes] = []
        owners: list[int] = []
        for r, request in enumerate(requests):
            items = pb_utils.get_input_tensor_by_name(request, t.image).as_numpy().reshape(-1)
            for item in items:
                files.append(item if isinstance(item, bytes) else bytes(item))
                owners.append(r)
        try:  # bad files are answered per file below; what fails here is the device or a bug: the whole batch
            decoded = self.decoder(files)
            with self.torch.inference_mode():
                scores = self._scores(decoded.pixels)
        except Exception as exc:
            pb_utils.Logger.log_error(f"detector failed: {exc!r}")
            failure = pb_utils.TritonError(f"decode or PyTorch engine failed: {exc}", pb_utils.TritonError.INTERNAL)
            return [pb_utils.InferenceResponse(error=failure) for _ in requests]
        row_of = {i: row for row, i in enumerate(decoded.rows)}
        responses = []
        for r in range(len(requests)):
            mine = [i for i, owner in enumerate(owners) if owner == r]
            failed = [i for i in mine if i in decoded.errors]
            if not mine:
                responses.append(invalid_argument(pb_utils, "request carried no image"))
            elif failed:
                error: InvalidImageError = decoded.errors[failed[0]]
                where = f" (batch item {mine.index(failed[0])})" if len(mine) > 1 else ""
                responses.append(invalid_argument(pb_utils, f"{error}{where}"))
            else:
                out = np.ascontiguousarray(scores[[row_of[i] for i in mine]])
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(t.scores, out)]))
        return responses
