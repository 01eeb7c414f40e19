"""Whether TensorRT fused the engine's attention, read from its engine inspector, and what the build does if not.

Why it matters: unfused, a batch-32 ViT-S/16@384 writes and reads its 32×6×577² attention scores through memory in
every layer (an estimated 1.8–5.4 ms per batch against about 3 ms of matrix multiplies, up to 2× on the engine);
a fused multi-head-attention kernel keeps them on chip. TensorRT fuses MatMul → Softmax → MatMul when the three
are FP16 or BF16 (developer guide, "Fused Attention"; `dfserve.export.precision` writes that graph) and nothing
in between stops its pattern matcher, so a graph that should fuse can still come out unfused on another release.

How it is read. With ``ProfilingVerbosity.DETAILED`` TensorRT 10 lists the kernels of its Myelin subgraphs in
``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`` (and ``trtexec --dumpLayerInfo``).
A fused attention kernel is named after its kernel family, e.g. ``_gemm_mha_v2_myl3_6`` or
``__mye8037_gemm_mha_v2`` (public TensorRT 10 profiles of ViTs and DiTs), ``_gemv_mha_v1`` for a single query;
plugins and older releases say ``fmha`` / ``fused_multihead_attention``; TensorRT 10.14's IAttention layers say
``attention``. Unfused attention shows as separate GEMM kernels and a softmax kernel whose name or ONNX metadata
("[ONNX Layer: /vit/encoder/layer.0/attention/attention/Softmax]", TensorRT 9.2's dump in NVIDIA/TensorRT#3665)
names the Softmax. `attention_fusion` counts both, against the number of attention Softmax nodes in the ONNX graph
the engine was built from (`attention_sites`), and gives a status:

- ``fused``: fused attention kernels and no separate attention softmax;
- ``partial``: both (some blocks fused, some not);
- ``unfused``: attention softmax kernels, or no fused kernel, in a graph that has attention;
- ``none``: the graph has no attention; ``unknown``: the inspector gave nothing to read (an error, names only).

The build (`check_attention`) fails on ``unfused`` and ``partial`` unless ``--allow-unfused-attention``, in which
case it logs a loud warning; ``unknown`` always warns. FP32 engines are recorded but never gated (TensorRT's MHA
fusion is FP16/BF16/FP8 only).

This has only run against recorded inspector output and the TensorRT stand-in (tests/export/trt_standin.py); the
names are from public TensorRT 10 profiles, not from an engine built in this project.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import onnx

from dfserve.errors import EngineBuildError
from dfserve.export.onnx_graph import POST

log = logging.getLogger(__name__)

FUSED_ATTENTION = re.compile(
    r"ge[mv]{2}_mha|fmha|mha_v\d|fused_?multi_?head|flash_?attention|(^|[^a-z])mha([^a-z]|$)|attention_?layer",
    re.IGNORECASE,
)
"""Layer, tactic or layer-type names of fused attention kernels (see the module docstring for where each is from)."""
SOFTMAX = re.compile(r"softmax", re.IGNORECASE)
SCORING = (POST, "/post/")
"""dfserve's own scoring graph (sigmoid/softmax over the logits): never attention."""
UNFUSED_FLAG = "--allow-unfused-attention"
EVIDENCE_LISTED = 5


def attention_sites(model_path: Path) -> int:
    """Attention Softmax nodes in the ONNX graph (dfserve's scoring Softmax excluded)."""
    model = onnx.load(str(model_path), load_external_data=False)
    return sum(1 for n in model.graph.node if n.op_type == "Softmax" and not n.name.startswith(SCORING))


def _text(layer: Any, *keys: str) -> str:
    if not isinstance(layer, dict):
        return str(layer)
    return " ".join(str(layer.get(k) or "") for k in keys)


def attention_fusion(layers: list[Any], sites: int) -> dict[str, Any]:
    """The attention status of an engine from its inspector layers (dicts when DETAILED, names otherwise)."""
    fused: list[str] = []
    unfused: list[str] = []
    for layer in layers:
        name = _text(layer, "Name")
        if FUSED_ATTENTION.search(_text(layer, "Name", "TacticName", "LayerType")):
            fused.append(name)
        elif SOFTMAX.search(text := _text(layer, "Name", "Metadata")) and not any(p in text for p in SCORING):
            unfused.append(name)
    detailed = bool(layers) and all(isinstance(layer, dict) for layer in layers)
    if sites == 0:
        status = "none"
    elif fused and unfused:
        status = "partial"
    elif fused:
        status = "fused"
    elif unfused or detailed:
        status = "unfused"
    else:
        status = "unknown"
    return {
        "status": status,
        "sites": sites,
        "fused_layers": len(fused),
        "unfused_softmax_layers": len(unfused),
        "fused_examples": fused[:EVIDENCE_LISTED],
        "unfused_examples": unfused[:EVIDENCE_LISTED],
    }


def check_attention(attention: dict[str, Any], precision: str, allow_unfused: bool) -> None:
    """Fail an FP16 build whose attention TensorRT did not fuse, unless `allow_unfused` (then warn loudly)."""
    status = attention.get("status", "unknown")
    if precision != "fp16" or status in ("fused", "none"):
        return
    if status == "unknown":
        log.warning(
            "!!! could not tell whether TensorRT fused attention (the inspector gave nothing to read): check "
            "`trtexec --loadEngine=model.plan --dumpLayerInfo --profilingVerbosity=detailed` for _gemm_mha kernels"
        )
        return
    message = (
        f"TensorRT left attention {status}: {attention.get('fused_layers', 0)} fused attention kernel(s), "
        f"{attention.get('unfused_softmax_layers', 0)} separate softmax kernel(s) for {attention.get('sites', 0)} "
        f"attention block(s) (e.g. {(attention.get('unfused_examples') or ['?'])[0]}); the engine moves every "
        "block's attention scores through memory and may run up to 2x slower"
    )
    if allow_unfused:
        log.warning("!!! %s; accepted by %s", message, UNFUSED_FLAG)
        return
    raise EngineBuildError(f"{message}. Pass {UNFUSED_FLAG} to serve it anyway")
