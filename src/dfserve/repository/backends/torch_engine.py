"""`vit` run by PyTorch inside the Python backend: the plain-GPU-host engine (no TensorRT, no containers).

The repository's `vit/1/` holds the classifier's own `config.json` and `model.safetensors` (the build copies
them, so serving does not depend on the checkpoint folder). `dfserve.engine.torch_module.ScoringModule` wraps
it with the ONNX graph's normalisation and scoring, in the spec's precision, on CUDA when torch sees a GPU and
on the CPU otherwise. All requests of a dynamic batch run as one call; Triton has already checked each
request's dtype and shape against config.pbtxt. Warm-up at load runs batch 1 and the largest batch, so the
first request is not slow; `DFSERVE_TORCH_COMPILE=<mode>` compiles the classifier with torch.compile (off by
default: on the CPU it does not help this model, and compilation adds minutes to the load).
The CUDA path cannot run on the project's CPU machines; `python -m dfserve.bench.gpu` measures it on a GPU host.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from dfserve.engine import torch_module as torch_engine
from dfserve.repository.backends.common import run_batched, spec_from_args
from dfserve.spec.names import TORCH_COMPILE_ENV


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        import torch

        self.torch = torch
        self.spec = spec_from_args(args)
        folder = Path(args["model_repository"]) / args["model_version"]
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        classifier = torch_engine.load_classifier(folder)
        self.engine: Any = torch_engine.engine_for(
            classifier, self.spec, device=self.device, precision=self.spec.precision
        )
        mode = os.environ.get(TORCH_COMPILE_ENV, "")
        if mode:
            self.engine = torch.compile(self.engine, mode=mode, dynamic=False)
        h, w = self.spec.input_hw
        with torch.inference_mode():
            for batch in sorted({1, self.spec.batching.max_batch_size}):
                self.engine(torch.zeros((batch, 3, h, w), dtype=torch.uint8, device=self.device))

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_batched(pb_utils, requests, self.spec, self._run, "PyTorch engine")

    def _run(self, batch: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            x = self.torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            return self.engine(x).to("cpu").numpy().astype(np.float32, copy=False)
