"""The GPU measurement's host description and its Markdown report (`python -m dfserve.bench.gpu`)."""

from __future__ import annotations

import os
import platform
from typing import Any

from dfserve.bench.torch_served import table


def host_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_cores": os.cpu_count(),
        "device": device,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except Exception:  # pragma: no cover
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["compute_capability"] = f"{props.major}.{props.minor}"
        info["cuda"] = torch.version.cuda
    return info


def markdown(result: dict[str, Any]) -> str:
    host = result["host"]
    lines = [
        f"# dfserve GPU measurement: {host.get('gpu', host['device'])}",
        "",
        f"Model: {result['model']['source']} (head scale {result['model']['head_scale']}), input "
        f"{result['model']['input']}; torch {host['torch']}, Python {host['python']}, {host['cpu_cores']} CPU cores. "
        f"Total {result['elapsed_s']} s.",
        "",
    ]
    sec = result["sections"]
    ceiling = sec.get("ceiling", {})
    if ceiling.get("eager"):
        reported = ceiling.get("compiled_reported", False)
        compiled = {p["batch"]: p for p in ceiling.get("compiled", [])} if reported else {}
        labels = ceiling.get("labels", {})
        lines += [
            "## 1. Engine ceiling (images/s, " + ceiling.get("precision", "") + "): PyTorch, not TensorRT",
            "",
            f"eager: {labels.get('eager', '?')}; compiled: "
            + (labels.get("compiled", "not run") if reported else "not reported (see the flags below)"),
            "",
            "| batch | eager | compiled |",
            "| ---: | ---: | ---: |",
        ]
        for p in ceiling["eager"]:
            c = compiled.get(p["batch"])
            lines.append(
                f"| {p['batch']} | {p['images_per_s']:.0f} | {c['images_per_s']:.0f} |"
                if c
                else f"| {p['batch']} | {p['images_per_s']:.0f} | |"
            )
        lines += [""] + [f"- {n}" for n in ceiling.get("notes", [])]
        lines += [f"- FLAGGED: {f}" for f in ceiling.get("flags", [])] + [""]
    drift = sec.get("drift", {})
    if drift.get("candidates"):
        lines += [
            f"## 2. Drift against {drift['reference']} ({drift['images']} parity images, "
            f"reference scores {drift['reference_score_range']})",
            "",
            "| engine | max abs diff | flips | low-margin flips | passes bar |",
            "| --- | ---: | ---: | ---: | --- |",
        ]
        for name, d in drift["candidates"].items():
            lines.append(
                f"| {name} | {d['max_abs_diff']:.2e} | {d['flips']} | {d['low_margin_flips']} | {d['passes_bar']} |"
            )
        lines.append("")
    prep = sec.get("preprocessing", {})
    if prep.get("modes"):
        lines += [
            f"## 3. Server-side preprocessing ({prep['jpeg']}, {prep['cores']} cores)",
            "",
            "| mode | one core | all cores |",
            "| --- | ---: | ---: |",
        ]
        for mode, m in prep["modes"].items():
            lines.append(f"| {mode} | {m['one_core_images_per_s']} | {m['all_cores_images_per_s']} |")
        lines.append("")
    dec = sec.get("gpu_decode", {})
    lines.append("## 4. GPU decoding and resizing")
    lines.append("")
    if dec.get("decode"):
        px, sc = dec["pixels_vs_exact"], dec["scores_vs_exact"]
        lines += [
            f"{dec['jpeg']}, batch {dec['batch']}: decode {dec['decode']['images_per_s']:.0f} images/s, "
            f"decode + resize + crop {dec['decode_resize_crop']['images_per_s']:.0f} images/s. "
            f"Pixels against exact: max {px['max_abs']}, mean {px['mean_abs']}, {px['share_differing']:.1%} differ; "
            f"scores: max |Δ| {sc['max_abs_diff']:.2e}, {sc['flips']} flips.",
            "",
        ]
    served = sec.get("served", {})
    if served.get("served"):
        lines += ["## 5. Served through Triton", "", table(served)]
    for name, body in sec.items():
        if "skipped" in body or "error" in body:
            lines.append(f"- {name}: {body.get('skipped') or body.get('error')}")
    return "\n".join(lines) + "\n"
