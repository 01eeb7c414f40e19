"""`vit` on a Triton without the ONNX Runtime backend (the `nvidia-pytriton` build): ONNX Runtime inside the
Python backend.

All requests of a dynamic batch run as one ONNX Runtime call, then the scores are split back per request.
Triton has already checked every request's dtype and shape against config.pbtxt, so a malformed tensor never
reaches this code; what is left to guard is the batch as a whole.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from dfserve.repository.backends.common import run_batched, spec_from_args
from dfserve.spec.names import ONNX_FILENAME, ORT_THREADS_ENV


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        import onnxruntime as ort

        self.spec = spec_from_args(args)
        path = Path(args["model_repository"]) / args["model_version"] / ONNX_FILENAME
        options = ort.SessionOptions()
        # Inside Triton the engine shares the cores with the server and the preprocess instances: threads that
        # spin while idle would take their cycles.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # The spec's thread split (chosen by `python -m dfserve.bench.tune`); the environment variable overrides
        # it on one host without a rebuild.
        threads = int(os.environ.get(ORT_THREADS_ENV, "0")) or self.spec.batching.engine_threads
        if threads:
            options.intra_op_num_threads = threads
        if self.spec.batching.engine_inter_op_threads:
            options.inter_op_num_threads = self.spec.batching.engine_inter_op_threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def execute(self, requests: list[Any]) -> list[Any]:
        t = self.spec.tensors
        return run_batched(
            pb_utils, requests, self.spec, lambda x: self.session.run([t.scores], {t.pixels: x})[0], "ONNX Runtime"
        )
