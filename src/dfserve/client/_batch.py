"""`classify_batch`: N images in one request, I/O-free (the clients send it).

The entry model (`file` mode: the ensemble) and the engine (`pixels` mode) take a batch dimension: BYTES [N,1]
images, UINT8 [N,3,H,W] pixels, FP32 [N,labels] scores back. Triton refuses a request above the model's
``max_batch_size``, so a longer list is split into requests of at most `max_batch(spec, mode)` images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dfserve.client._constants import Mode, ProtocolName
from dfserve.client._core import (
    InferRequest,
    Payload,
    answered_by,
    make_prediction,
    scores_array,
    triton_module,
)
from dfserve.client._exceptions import IncompatibleModelError
from dfserve.client._types import Prediction
from dfserve.spec.model import ModelSpec


def max_batch(spec: ModelSpec, mode: Mode) -> int:
    """The most images one request may carry: the engine's ``max_batch_size`` in `pixels` mode; in `file` mode
    the ensemble's, which `dfserve.repository.configs.ensemble_config` writes as the smaller of the engine's and
    `preprocess`'s."""
    batching = spec.batching
    if mode == "pixels":
        return batching.max_batch_size
    return min(batching.max_batch_size, batching.preprocess_max_batch_size)


def chunks(payloads: Sequence[Payload], size: int) -> list[Sequence[Payload]]:
    """`payloads` in order, `size` at a time."""
    return [payloads[i : i + size] for i in range(0, len(payloads), size)]


def build_batch_request(
    payloads: Sequence[Payload],
    spec: ModelSpec,
    protocol: ProtocolName,
    *,
    entry_model: str,
    request_id: str | None = None,
) -> InferRequest:
    """One request for all `payloads` (all of one mode): BYTES [N,1] to the entry model, or UINT8 [N,3,H,W]
    pixels to the engine."""
    tc = triton_module(protocol)
    names = spec.tensors
    if payloads[0].mode == "file":
        data = np.empty((len(payloads), 1), dtype=np.object_)
        for row, payload in enumerate(payloads):
            data[row, 0] = payload.data
        inp = tc.InferInput(names.image, list(data.shape), "BYTES")
        inp.set_data_from_numpy(data)
        model = entry_model
    else:
        pixels = np.stack([np.asarray(p.data) for p in payloads])
        inp = tc.InferInput(names.pixels, list(pixels.shape), "UINT8")
        inp.set_data_from_numpy(pixels)
        model = spec.models.engine
    out = tc.InferRequestedOutput(names.scores)
    return InferRequest(model, [inp], [out], None, None, request_id)


def parse_batch_result(
    result: object, request: InferRequest, spec: ModelSpec, protocol: ProtocolName, payloads: Sequence[Payload]
) -> list[Prediction]:
    """One `Prediction` per image of the request, in order, each naming its file."""
    raw = scores_array(result, request, spec)
    if raw.ndim < 1 or raw.shape[0] != len(payloads):
        raise IncompatibleModelError(
            f"model {request.model_name!r} answered {raw.shape[0] if raw.ndim else 0} rows of scores for a batch "
            f"of {len(payloads)} images"
        )
    model = answered_by(result, request, protocol)
    rows = raw.reshape(len(payloads), -1)
    return [make_prediction(row, request, spec, model, p.path) for row, p in zip(rows, payloads, strict=True)]
