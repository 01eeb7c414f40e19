"""PyTorch checkpoint to the served ONNX graph: uint8 pixels in, probabilities out.

The classifier itself (a Transformers or a timm model) is exported by PyTorch's exporter and checked against
PyTorch (`dfserve.export.torch_onnx`). Around it, two small graphs are composed with `onnx.compose`:

    pixels  UINT8 [N,3,H,W] -> Cast -> *rescale -> (-mean)/std -> pixel_values   (the processor's arithmetic)
    logits  FP32  [N,L]     -> sigmoid as [1-p, p] | softmax    -> scores FP32 [N,K]

so the wire carries uint8 (a quarter of float32's bytes), clients cannot get the normalisation wrong, and the
same graph serves ONNX Runtime, Triton's onnxruntime backend and TensorRT.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from dfserve.errors import ExportError
from dfserve.export.torch_onnx import LogitsOnly, export_logits
from dfserve.spec.model import ModelSpec

log = logging.getLogger(__name__)

HF_INPUT = "pixel_values"
HF_OUTPUT = "logits"
BATCH_DIM = "batch"
PRE = "dfserve_pre_"
"""Name prefix of the nodes dfserve adds before the classifier (uint8 → normalised): reduced precision and
quantization leave them alone, so the input is the checkpoint's processor to the last bit."""
POST = "dfserve_post_"
"""Name prefix of the scoring nodes after the classifier (sigmoid served as [1 − p, p], or softmax): kept FP32."""


def export_classifier(model: Any, opset: int, workdir: Path, input_hw: tuple[int, int]) -> onnx.ModelProto:
    """Export the classifier (Transformers or timm: anything `LogitsOnly` wraps), validated against PyTorch."""

    return export_logits(LogitsOnly(model), input_hw, opset, workdir / "model.onnx")


def _pre_graph(spec: ModelSpec, opset_imports: list[Any], ir_version: int) -> onnx.ModelProto:
    pp = spec.preprocessing
    h, w = spec.input_hw
    nodes = [helper.make_node("Cast", [spec.tensors.pixels], ["_f"], to=TensorProto.FLOAT, name=f"{PRE}cast")]
    inits = []
    current = "_f"
    if pp.do_rescale:
        inits.append(numpy_helper.from_array(np.array(pp.rescale_factor, dtype=np.float32), "_scale"))
        nodes.append(helper.make_node("Mul", [current, "_scale"], ["_rescaled"], name=f"{PRE}rescale"))
        current = "_rescaled"
    if pp.do_normalize:
        inits.append(numpy_helper.from_array(np.array(pp.mean, dtype=np.float32).reshape(1, 3, 1, 1), "_mean"))
        inits.append(numpy_helper.from_array(np.array(pp.std, dtype=np.float32).reshape(1, 3, 1, 1), "_std"))
        nodes.append(helper.make_node("Sub", [current, "_mean"], ["_centred"], name=f"{PRE}centre"))
        nodes.append(helper.make_node("Div", ["_centred", "_std"], [HF_INPUT], name=f"{PRE}scale"))
    else:
        nodes.append(helper.make_node("Identity", [current], [HF_INPUT], name=f"{PRE}out"))
    graph = helper.make_graph(
        nodes,
        "dfserve_preprocess",
        [helper.make_tensor_value_info(spec.tensors.pixels, TensorProto.UINT8, [BATCH_DIM, 3, h, w])],
        [helper.make_tensor_value_info(HF_INPUT, TensorProto.FLOAT, [BATCH_DIM, 3, h, w])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=opset_imports, ir_version=ir_version)


def _post_graph(spec: ModelSpec, opset_imports: list[Any], ir_version: int) -> onnx.ModelProto:
    labels = spec.labels
    out = spec.tensors.scores
    if labels.activation == "sigmoid":
        nodes = [
            helper.make_node("Sigmoid", [HF_OUTPUT], ["_p"], name=f"{POST}sigmoid"),
            helper.make_node("Sub", ["_one", "_p"], ["_q"], name=f"{POST}complement"),
            helper.make_node("Concat", ["_q", "_p"], [out], axis=1, name=f"{POST}pair"),
        ]
        inits = [numpy_helper.from_array(np.array(1.0, dtype=np.float32), "_one")]
    else:
        nodes = [helper.make_node("Softmax", [HF_OUTPUT], [out], axis=-1, name=f"{POST}softmax")]
        inits = []
    graph = helper.make_graph(
        nodes,
        "dfserve_scores",
        [helper.make_tensor_value_info(HF_OUTPUT, TensorProto.FLOAT, [BATCH_DIM, labels.num_logits])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [BATCH_DIM, len(labels.names)])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=opset_imports, ir_version=ir_version)


def clean_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """One opset import per domain and no dead weight: `onnx.compose` repeats the default domain's import for
    each merged graph (which stops ONNX Runtime's quantizer: "Failed to find proper ai.onnx domain") and leaves
    the exporter's Identity and Constant nodes; onnxslim (a maintained simplifier) folds them away."""
    import onnxslim

    opsets: dict[str, int] = {}
    for imp in model.opset_import:
        opsets[imp.domain] = max(opsets.get(imp.domain, 0), imp.version)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in sorted(opsets.items()))
    slim = onnxslim.slim(model)
    assert isinstance(slim, onnx.ModelProto)
    del slim.opset_import[:]
    slim.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in sorted(opsets.items()))
    slim.graph.name, slim.doc_string = model.graph.name, model.doc_string
    return slim


def compose_served_graph(core: onnx.ModelProto, spec: ModelSpec) -> onnx.ModelProto:
    """Wrap the exported classifier between the preprocessing and scoring graphs, then check the result."""
    inputs = [i.name for i in core.graph.input]
    outputs = [o.name for o in core.graph.output]
    if inputs != [HF_INPUT] or HF_OUTPUT not in outputs:
        raise ExportError(f"unexpected exported graph: inputs {inputs}, outputs {outputs}")
    opsets = list(core.opset_import)
    pre = _pre_graph(spec, opsets, core.ir_version)
    post = _post_graph(spec, opsets, core.ir_version)
    try:
        merged = compose.merge_models(pre, core, io_map=[(HF_INPUT, HF_INPUT)])
        merged = compose.merge_models(merged, post, io_map=[(HF_OUTPUT, HF_OUTPUT)])
        merged.graph.name = f"dfserve_{spec.models.engine}"
        merged.doc_string = (
            f"dfserve: {spec.source} ({'random weights' if spec.random_weights else 'trained weights'}); "
            f"{spec.tensors.pixels} uint8 [N,3,{spec.input_hw[0]},{spec.input_hw[1]}] -> {spec.tensors.scores} "
            f"[N,{len(spec.labels.names)}] = {list(spec.labels.names)}"
        )
        merged = clean_graph(merged)
        onnx.checker.check_model(merged, full_check=True)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"composing the served ONNX graph failed: {exc}") from exc
    return merged


def export_onnx(model: Any, spec: ModelSpec, path: Path, *, core_path: Path | None = None) -> Path:
    """Export, compose, check and save the served graph to `path` (and the bare classifier to `core_path`: a
    reduced-precision graph converts the classifier alone, so the graphs around it stay FP32 by construction)."""
    with tempfile.TemporaryDirectory(prefix="dfserve-export-") as tmp:
        core = export_classifier(model, spec.onnx_opset, Path(tmp), spec.input_hw)
        if core_path is not None:
            onnx.save(core, str(core_path))
        served = compose_served_graph(core, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(served, str(path))
    return path
