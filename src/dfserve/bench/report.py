"""The bench's markdown tables and plot, drawn from its JSON (so a saved bench.json can be re-rendered)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MIB = 2**20


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _load(values: list[float] | None) -> str:
    return "/".join(f"{v:.1f}" for v in values) if values else "?"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" ---: " for _ in header) + "|"]
    lines += ["| " + " | ".join(_f(v) for v in row) + " |" for row in rows]
    return lines


def render_markdown(data: dict[str, Any]) -> str:
    m, ratios, goals = data["model"], data["ratios"], data["goals"]
    raw, served, prep = data["raw"], data["served"], data["preprocessing"]
    recheck = raw["recheck"]
    smallest_idle = min((r["idle_bytes"] for r in data["memory"]), default=0)
    weights = "random weights" if m["random_weights"] else "trained weights"
    out = [
        f"# dfserve bench: {m['architecture']} {m['input_hw'][0]}x{m['input_hw'][1]} ({weights}), "
        f"max batch {m['max_batch']}",
        "",
        f"{data['machine']['cpus']} CPUs, {data['machine']['platform']}; {data['repeats']} timed repetitions per "
        f"point after one warm-up; {len(data['images'])} images. Served figures go through dfserve's SDK over HTTP. "
        f"Load average at start {_load(data['machine'].get('load_average_at_start'))}, at the end "
        f"{_load(data['machine'].get('load_average_at_end'))}: on a shared machine wall-clock figures move with "
        "what else runs, CPU seconds per image much less.",
        "",
        "## Headline",
        "",
        *_table(
            ["figure", "value", "goal", "met"],
            [
                ["raw engine, best images/s", raw["best_images_per_s"], "", ""],
                [f"raw engine again at the end (batch {recheck['batch']})", recheck["images_per_s"], "", ""],
                ["served vit, best images/s", served["vit"]["best_images_per_s"], "", ""],
                ["served / raw", ratios["served_over_raw"], ">= 0.9", goals["served_vit_ge_0.9x_raw"]],
                ["served / raw measured again at the end", ratios["served_over_raw_recheck"], "", ""],
                [
                    "CPU s per image: raw / served (server side)",
                    ratios["raw_cpu_over_served_cpu_per_image"],
                    "",
                    "",
                ],
                ["detector (JPEG files) / raw", ratios["detector_over_raw"], "", ""],
                [
                    "preprocessing box / Transformers",
                    ratios.get("box_over_reference"),
                    ">= 1.5",
                    goals["preprocessing_box_ge_1.5x_transformers"],
                ],
                ["preprocessing exact / Transformers", ratios.get("exact_over_reference"), "", ""],
                ["preprocessing draft / Transformers", ratios.get("draft_over_reference"), "(opt-in)", ""],
            ],
        ),
        "",
        "## 1. Raw engine (ONNX Runtime in process)",
        "",
        *_table(
            ["batch", "images/s", "latency ms", "CPU s / image"],
            [[r["batch"], r["images_per_s"], r["latency_ms"], f"{r['cpu_s_per_image']:.3g}"] for r in raw["rows"]],
        ),
        "",
        "## 2. Served engine (`vit`, uint8 pixels, one image per request)",
        "",
        *_table(
            [
                "concurrency",
                "requests",
                "images/s",
                "served / raw best",
                "server CPU s / image",
                "client CPU s / image",
            ],
            _served_rows(served["vit"]["rows"], raw["best_images_per_s"]),
        ),
        "",
        "## 3. Whole ensemble (`detector`, JPEG files)",
        "",
        *_table(
            ["concurrency", "requests", "images/s", "/ raw best", "server CPU s / image", "client CPU s / image"],
            _served_rows(served["detector"]["rows"], raw["best_images_per_s"]),
        ),
        "",
        "## 4. Preprocessing from the same JPEG bytes (one core)",
        "",
        f"Reference: {prep['reference']}.",
        "",
        *_table(
            [
                "method",
                "images/s",
                "mean ms",
                "speed-up",
                "max pixel diff",
                "pixels differing",
                "max score diff",
                "top-1 changed",
            ],
            [
                [
                    name,
                    row["images_per_s"],
                    row["mean_ms"],
                    row["speedup"],
                    row.get("max_pixel_diff", 0),
                    f"{100 * row.get('pixels_differing', 0.0):.2f} %",
                    f"{row['max_score_diff']:.2e}" if "max_score_diff" in row else "-",
                    f"{row['top1_changed']}/{row['images_scored']}" if "top1_changed" in row else "-",
                ]
                for name, row in prep["methods"].items()
            ],
        ),
        "",
        "## 5. Triton statistics (per request, ms)",
        "",
        *_table(
            [
                "section",
                "model",
                "requests",
                "executions",
                "avg batch",
                "queue",
                "compute input",
                "compute infer",
                "compute output",
            ],
            [
                [
                    section,
                    model,
                    s["requests"],
                    s["executions"],
                    s["avg_batch"],
                    s["queue_ms"],
                    s["compute_input_ms"],
                    s["compute_infer_ms"],
                    s["compute_output_ms"],
                ]
                for section in ("vit", "detector")
                for model, s in served[section]["triton"].items()
            ],
        ),
        "",
        "### Server memory (tritonserver + Python stubs, RSS)",
        "",
        "`vit` warms up at batch 1 and at its max batch when it loads, so the engine's memory for full batches is "
        "already held at idle: the growth with the max batch size shows in the idle column.",
        "",
        *_table(
            [
                "max batch",
                "processes",
                "idle MiB",
                "idle above smallest MiB",
                "under load MiB",
                "load - idle MiB",
                "avg batch formed",
            ],
            [
                [
                    r["max_batch"],
                    r.get("processes"),
                    r["idle_bytes"] / MIB,
                    (r["idle_bytes"] - smallest_idle) / MIB,
                    r["load_bytes"] / MIB,
                    r["growth_bytes"] / MIB,
                    r["avg_batch"],
                ]
                for r in data["memory"]
            ],
        ),
        "",
        f"Sections took (s): {data['timings_s']}.",
        "",
    ]
    return "\n".join(out)


def plot_bench(data: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def log2_axis(ax: Any, values: list[int]) -> None:
        ax.set_xscale("log", base=2)
        ax.set_xticks(values, [str(v) for v in values])
        ax.minorticks_off()

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), dpi=100)
    raw, served = data["raw"], data["served"]
    ax = axes[0][0]
    ax.plot([r["batch"] for r in raw["rows"]], [r["images_per_s"] for r in raw["rows"]], "o-")
    ax.set(title="1. raw engine (ONNX Runtime)", xlabel="batch size", ylabel="images/s", ylim=(0, None))
    log2_axis(ax, [r["batch"] for r in raw["rows"]])

    ax = axes[0][1]
    for key, label in (("vit", "served vit (pixels)"), ("detector", "detector (JPEG files)")):
        rows = served[key]["rows"]
        ax.plot([r["concurrency"] for r in rows], [r["images_per_s"] for r in rows], "o-", label=label)
    ax.axhline(raw["best_images_per_s"], color="grey", linestyle="--", label="raw best")
    ax.axhline(0.9 * raw["best_images_per_s"], color="grey", linestyle=":", label="0.9 x raw (goal)")
    ax.set(title="2-3. served through Triton", xlabel="concurrent requests", ylabel="images/s")
    log2_axis(ax, sorted({r["concurrency"] for k in ("vit", "detector") for r in served[k]["rows"]}))
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)

    ax = axes[1][0]
    methods = data["preprocessing"]["methods"]
    names = list(methods)
    ax.bar(names, [methods[n]["images_per_s"] for n in names], color=["grey"] + ["tab:blue"] * (len(names) - 1))
    ax.set(title="4. preprocessing, one core", ylabel="images/s")
    for i, n in enumerate(names):
        ax.annotate(f"{methods[n]['speedup']:.2f}x", (i, methods[n]["images_per_s"]), ha="center", va="bottom")

    ax = axes[1][1]
    mem = data["memory"]
    xs = range(len(mem))
    ax.bar([x - 0.2 for x in xs], [r["idle_bytes"] / MIB for r in mem], width=0.4, label="idle")
    ax.bar([x + 0.2 for x in xs], [r["load_bytes"] / MIB for r in mem], width=0.4, label="under load")
    ax.set_xticks(list(xs), [str(r["max_batch"]) for r in mem])
    ax.set(title="5. server RSS (tritonserver + stubs)", xlabel="max batch size", ylabel="MiB")
    ax.legend(fontsize=8)

    m = data["model"]
    size = f"{m['input_hw'][0]}x{m['input_hw'][1]}"
    fig.suptitle(f"dfserve bench: {m['architecture']} {size}, {data['machine']['cpus']} CPUs")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _served_rows(rows: list[dict[str, Any]], raw_best: float) -> list[list[Any]]:
    """Table rows of a served section: throughput, its ratio to the raw engine's best, CPU per image."""
    return [
        [
            r["concurrency"],
            r["requests"],
            r["images_per_s"],
            r["images_per_s"] / raw_best if raw_best else None,
            f"{r['server_cpu_s_per_image']:.3g}",
            f"{r['client_cpu_s_per_image']:.3g}",
        ]
        for r in rows
    ]
