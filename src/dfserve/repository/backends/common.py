"""What both Python-backend models share: reading the spec from Triton's model config, and answering one
request with an error that Triton reports as a client error (HTTP 400, gRPC INVALID_ARGUMENT)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from dfserve.errors import IncompatibleSpecError
from dfserve.spec.model import SPEC_PARAMETER, ModelSpec, spec_from_model_config


def spec_from_args(args: dict[str, Any]) -> ModelSpec:
    """The `ModelSpec` embedded in this model's config.pbtxt (parameter `dfserve_spec`)."""
    config = json.loads(args["model_config"])
    spec = spec_from_model_config(config)
    if spec is None:
        raise IncompatibleSpecError(f"model {config.get('name', '?')!r} has no {SPEC_PARAMETER} parameter")
    # The repository holds only shims: the code that runs is the installed dfserve's, so it must be the one
    # that built the repository. Refusing here fails the model's load with a message naming both versions.
    spec.require_same_dfserve(f"model {config.get('name', '?')!r}")
    return spec


def invalid_argument(pb_utils: Any, message: str) -> Any:
    """A response that fails only this request, as INVALID_ARGUMENT, leaving the rest of the batch intact."""
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))


def run_batched(
    pb_utils: Any, requests: list[Any], spec: ModelSpec, run: Callable[[np.ndarray], np.ndarray], engine: str
) -> list[Any]:
    """All requests of a dynamic batch as one engine call, the scores split back per request. Triton has checked
    every request's dtype and shape against config.pbtxt, so what is left to guard is the call as a whole: if the
    engine fails, every request of the batch gets an INTERNAL error naming it."""
    t = spec.tensors
    arrays = [pb_utils.get_input_tensor_by_name(r, t.pixels).as_numpy() for r in requests]
    sizes = [a.shape[0] for a in arrays]
    batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    try:
        scores = run(batch)
    except Exception as exc:
        error = pb_utils.TritonError(f"{engine} failed: {exc}", pb_utils.TritonError.INTERNAL)
        return [pb_utils.InferenceResponse(error=error) for _ in requests]
    responses = []
    start = 0
    for n in sizes:
        out = pb_utils.Tensor(t.scores, np.ascontiguousarray(scores[start : start + n]))
        responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        start += n
    return responses
