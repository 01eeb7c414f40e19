"""Reduced-precision graphs for the ONNX Runtime targets, each proven on the checkpoint being built.

`fp16`: the exported classifier converted with ONNX Runtime's float16 converter (a maintained converter, not
hand-written graph surgery), LayerNormalization kept in FP32 by explicit casts, then composed between
dfserve's uint8 → normalised input graph and the sigmoid/softmax scoring graph, which are never converted: they
stay FP32 by construction; the classifier's FP32 boundary (pixel_values in, logits out) is explicit casts. The
types are in the graph, so the
engine that runs it (ONNX Runtime here and in NVIDIA's container; TensorRT on a GPU host) uses the precision that
was proven. ONNX Runtime's CPU provider runs FP16 graphs (it casts where it lacks an FP16 kernel), so the
rounding of every FP16 tensor is measured here, on the CPU, at every build.

`int8`: ONNX Runtime's dynamic quantization (`quantize_dynamic`): MatMul and Gemm weights in INT8, activations
quantized per call, so no calibration set can be unrepresentative. Chosen over static QDQ because it needs no
calibration data from the user, and on this CPU (AVX-512 VNNI) its integer MatMuls are where the time goes.
The input and scoring nodes are excluded by name (`onnx_graph.PRE`/`POST`).

Dynamic INT8 quantizes MatMul/Gemm only: the normalisation (Mul/Sub/Div) and the scoring nodes, also excluded by
name, are left as they are.

Attention stays FP16 end to end (MatMul → Softmax → MatMul, no Cast around the Softmax): that is the pattern
TensorRT's multi-head-attention fusion matches (developer guide, "MHA fusion": FP16/BF16 only), and its fused
kernels compute the softmax in FP32 inside anyway. Keeping Softmax in FP32 by casts (as this module did) forced
every layer's 577×577 attention scores through memory in FP32 on a GPU and left attention unfused; the same
Cast → Softmax → Cast pattern cost 42 % of a DiT's time in onnxruntime#27983. `softmax_fed_fp32` checks the
written graph, and the build refuses one where any Softmax is fed FP32. LayerNormalization stays FP32: TensorRT
fuses it either way, and it is where FP16 rounding of the residual stream shows (measured on the CPU: docs/gpu.md,
"FP16 drift measured on the CPU"). ONNX Runtime's CPU provider computes an FP16 Softmax in FP32 between casts it
inserts itself, so what the CPU gate measures is the FP16 rounding of the scores going in and the probabilities
coming out, which is what an unfused FP16 engine stores too.

Each graph then passes the fidelity gate of its precision (`dfserve.export.policy.FIDELITY_BARS`) against the
reference Transformers pipeline, and is compared with the FP32 graph; both figures go in the build report.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

from dfserve.errors import ExportError
from dfserve.export.onnx_graph import POST, PRE, compose_served_graph
from dfserve.spec.model import ModelSpec

FP16_KEEP_FP32_OPS: tuple[str, ...] = ("LayerNormalization",)
"""Operator types kept in FP32 inside the classifier (the graphs around it are FP32 anyway). Never Softmax: see
the module docstring."""


def _ours(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.name.startswith((PRE, POST))]


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Every tensor's element type, from the graph's declarations and ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({i.name: i.data_type for i in g.initializer})
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def softmax_fed_fp32(model: onnx.ModelProto, scoring: bool = False) -> list[str]:
    """Names of the Softmax nodes whose input is FP32 (or of unknown type), outside dfserve's own scoring graph
    unless `scoring`: the attention Softmaxes that would keep TensorRT from fusing attention."""
    types = _elem_types(model)
    return [
        node.name or f"Softmax#{i}"
        for i, node in enumerate(model.graph.node)
        if node.op_type == "Softmax"
        and (scoring or not node.name.startswith(POST))
        and types.get(node.input[0], onnx.TensorProto.UNDEFINED) != onnx.TensorProto.FLOAT16
    ]


def to_fp16(core: onnx.ModelProto, spec: ModelSpec, keep_fp32: tuple[str, ...] = FP16_KEEP_FP32_OPS) -> onnx.ModelProto:
    """The served FP16 graph: the classifier `core` in FP16 (FP32 at its boundary, `keep_fp32` operator types FP32
    behind casts), composed like the FP32 one. Refuses a result in which an attention Softmax is fed FP32."""
    import onnxslim
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        # the converter appends its boundary casts at the end of the node list: onnxslim puts it back in order
        converted = onnxslim.slim(convert_float_to_float16(core, keep_io_types=True, op_block_list=list(keep_fp32)))
    except Exception as exc:
        raise ExportError(f"FP16 conversion failed: {exc}") from exc
    served = compose_served_graph(converted, spec)
    if "Softmax" not in keep_fp32 and (fed := softmax_fed_fp32(served)):
        raise ExportError(
            f"the FP16 graph feeds {len(fed)} attention Softmax node(s) FP32 (first: {fed[0]}): TensorRT could not "
            "fuse that attention; report the checkpoint's architecture"
        )
    return served


def to_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="dfserve-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        try:
            quantize_dynamic(
                str(src),
                str(dst),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gemm"],
                nodes_to_exclude=_ours(model),
            )
            quantized = onnx.load(str(dst))
            onnx.checker.check_model(quantized)
        except Exception as exc:
            raise ExportError(f"INT8 quantization failed: {exc}") from exc
    return quantized


def convert(served: Path, core: Path, spec: ModelSpec, out: Path) -> Path:
    """Write the `spec.precision` version of the FP32 served graph (`served`, whose classifier alone is `core`)."""
    if spec.precision == "fp16":
        converted = to_fp16(onnx.load(str(core)), spec)
    elif spec.precision == "int8":
        converted = to_int8(onnx.load(str(served)))
    else:
        raise ValueError(f"no conversion to {spec.precision!r}")
    onnx.save(converted, str(out))
    return out
