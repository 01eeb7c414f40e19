"""What both Python-backend models share: reading the spec from Triton's model config, and answering one
request with an error that Triton reports as a client error (HTTP 400, gRPC INVALID_ARGUMENT)."""

from __future__ import annotations

import json
from typing import Any

from dfserve.config import SPEC_PARAMETER, IncompatibleSpecError, ModelSpec, spec_from_model_config


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
