"""Which operators the FP16 graph keeps in FP32, measured: the drift of each choice on one checkpoint.

    python -m dfserve.bench.fp16_variants --model ./ckpt            # a checkpoint folder (e.g. a sensitive head)

The measurement behind `dfserve.export.precision.FP16_KEEP_FP32_OPS`: the checkpoint's classifier is exported once,
converted to FP16 three ways (LayerNormalization and Softmax FP32, as before issue 24; LayerNormalization FP32 with
attention FP16, what the build writes; everything FP16), each composed into the served graph and run by ONNX
Runtime on the parity set, and compared with the Transformers pipeline and with the FP32 graph. Also printed: how
many attention Softmax nodes each variant feeds FP32 (0 is what lets TensorRT fuse attention).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from dfserve.export.checkpoint import load_model, resolve
from dfserve.export.fidelity import bar_for, compare
from dfserve.export.onnx_graph import export_onnx
from dfserve.export.parity import onnx_scores, parity_pixels, reference_scores, write_parity_images
from dfserve.export.pipeline import BuildOptions, build
from dfserve.export.precision import FP16_KEEP_FP32_OPS, softmax_fed_fp32, to_fp16

VARIANTS: dict[str, tuple[str, ...]] = {
    "LayerNormalization + Softmax FP32 (before issue 24)": ("LayerNormalization", "Softmax"),
    "what the build keeps FP32 (FP16_KEEP_FP32_OPS)": FP16_KEEP_FP32_OPS,
    "everything FP16": (),
}


def measure(model: str, photos: int = 8) -> dict[str, Any]:

    with tempfile.TemporaryDirectory(prefix="dfserve-fp16-variants-") as tmp_name:
        tmp = Path(tmp_name)
        spec = build(BuildOptions(out=tmp / "repository", model=model, parity_photos=photos)).spec
        ckpt = resolve(model)
        classifier = load_model(ckpt)
        fp32, core = tmp / "fp32.onnx", tmp / "core.onnx"
        export_onnx(classifier, spec, fp32, core_path=core)
        images = write_parity_images(tmp / "parity", photos=photos, seed=0)
        names = [p.name for p in images]
        reference = reference_scores(ckpt, classifier, spec, images)
        pixels = parity_pixels(spec, images, spec.resize_mode)
        fp32_scores = onnx_scores(fp32, spec, pixels)
        rows: dict[str, dict[str, Any]] = {}
        for name, keep in VARIANTS.items():
            graph = to_fp16(onnx.load(str(core)), spec, keep)
            path = tmp / f"variant{len(rows)}.onnx"
            onnx.save(graph, str(path))
            scores = onnx_scores(path, spec, pixels)
            vs_ref, vs_fp32 = compare(reference, scores, spec.labels, names), compare(fp32_scores, scores, spec.labels)
            rows[name] = {
                "keep_fp32": list(keep),
                "vs_reference": vs_ref.as_report(),
                "vs_fp32_max_abs_diff": vs_fp32.max_abs_diff,
                "passes_fp16_bar": not vs_ref.problems(bar_for("fp16")),
                "attention_softmax_fed_fp32": len(softmax_fed_fp32(graph)),
            }
    return {"model": model, "images": len(names), "variants": rows}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m dfserve.bench.fp16_variants",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="checkpoint folder or hub id")
    p.add_argument("--parity-photos", type=int, default=8)
    p.add_argument("--out", type=Path, default=None, help="also write the figures here as JSON")
    args = p.parse_args(argv)
    result = measure(args.model, args.parity_photos)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['model']}: {result['images']} parity images, max |Δscore| against the Transformers pipeline")
    for name, row in result["variants"].items():
        ref = row["vs_reference"]
        print(
            f"  {name:<52} {ref['max_abs_diff']:.2e} ({ref['flips']} flips; vs FP32 {row['vs_fp32_max_abs_diff']:.2e}; "
            f"attention Softmax fed FP32: {row['attention_softmax_fed_fp32']}; "
            f"{'passes' if row['passes_fp16_bar'] else 'FAILS'} the FP16 bar)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
