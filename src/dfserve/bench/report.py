"""The bench's markdown tables and plot, drawn from its JSON (so a saved bench.json can be re-rendered)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dfserve.bench.options import GOAL_SERVED_RATIO

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


def _cpu(machine: dict[str, Any]) -> str:
    cpu = machine.get("cpu")  # absent from bench.json files written before the host record
    return f"{cpu['model']}: {', '.join(cpu['isa']) or 'no listed instruction sets'}" if cpu else "CPU not recorded"


def _met(goal: dict[str, Any]) -> str:
    if goal["met"] is None:
        return "reported"
    return "met" if goal["met"] else "NOT MET"


MIN_ROUNDS = 3
"""Fewer rounds than this: a median of one or two windows, and no spread worth the name."""
MIN_LATENCIES = 100
"""A p99 from fewer latencies than this is the largest one or two of them, not a percentile."""


def cautions(data: dict[str, Any]) -> list[str]:
    """Where the figures are rough: few rounds, or a p99 resting on few latencies (served variants: one per
    image; raw ONNX Runtime and the pipeline: one per call of `level` images)."""
    out = []
    if data["rounds"] < MIN_ROUNDS:
        out.append(
            f"{data['rounds']} round(s) of {data['seconds']} s per variant and level: medians of so few windows "
            f"are rough and the round-to-round spread is barely measured (use --rounds {MIN_ROUNDS} or more)."
        )
    thin = [
        f"{name} at {row['level']}"
        for name, v in data["variants"].items()
        for row in v["rows"]
        if (row["images"] // row["level"] if v["kind"] in ("raw", "pipeline") else row["images"]) < MIN_LATENCIES
    ]
    if thin:
        out.append(
            f"the p99 of {', '.join(thin)} rests on fewer than {MIN_LATENCIES} latencies: read it as the slowest "
            "few calls, not a percentile (longer --seconds or more --rounds)."
        )
    return out


def render_markdown(data: dict[str, Any]) -> str:
    m, ratios, variants = data["model"], data["ratios"], data["variants"]
    prep = data["preprocessing"]
    weights = "random weights" if m["random_weights"] else f"the weights of {m.get('checkpoint', 'the checkpoint')}"
    levels = data["concurrency"]
    out = [
        f"# dfserve bench: {m['architecture']} {m['input_hw'][0]}x{m['input_hw'][1]} ({weights})",
        "",
        f"{data['machine']['cpus']} CPUs ({_cpu(data['machine'])}), {data['machine']['platform']}; "
        f"{data['rounds']} alternating rounds of "
        f"{data['seconds']} s windows per variant and level; {len(data['images'])} JPEG files, the same for every "
        f"variant. Transformers pipeline at batch size 1 and {m['pipeline_batch']}, its best used. Served figures "
        "go through dfserve's SDK over HTTP. Load average at start "
        f"{_load(data['machine'].get('load_average_at_start'))}, at the end "
        f"{_load(data['machine'].get('load_average_at_end'))}: on a shared machine wall-clock figures move with "
        "what else runs (alternation spreads that over all variants), CPU seconds per image much less.",
        "",
        *[f"**Caution:** {text}" for text in cautions(data)],
        *([""] if cautions(data) else []),
        "## Goals",
        "",
        *_table(
            ["goal", "value", "target", "result"],
            [[g["goal"], g["value"], f">= {g['target']}" if g["target"] else "", _met(g)] for g in data["goals"]],
        ),
        "",
        "## Side by side (each variant at its best level)",
        "",
        "Level: concurrent requests for served variants, batch size for raw ONNX Runtime and the pipeline. "
        "Resident memory: the server's process tree for served variants (peak; FP32 and INT8 each have their own "
        "server, holding `preprocess` and `vit`), what loading added to this process for in-process ones.",
        "",
        *_table(
            [
                "variant",
                "level",
                "images/s",
                "p50 ms",
                "p99 ms",
                "CPU s / image",
                "resident MiB",
                "x pipeline",
                "x raw",
            ],
            [
                [
                    name,
                    v["best_level"],
                    v["best_images_per_s"],
                    best["p50_ms"],
                    best["p99_ms"],
                    f"{best['cpu_s_per_image']:.3g}",
                    v["memory_bytes"] / MIB,
                    ratios["over_pipeline"].get(name),
                    ratios["over_raw"].get(name),
                ]
                for name, v in variants.items()
                for best in [next(r for r in v["rows"] if r["level"] == v["best_level"])]
            ],
        ),
        "",
        "## Throughput by concurrency (images/s; raw ONNX Runtime and the pipeline: batch = concurrency)",
        "",
        *_table(
            ["concurrency", *variants, "vit/raw FP32", "vit/raw INT8"],
            [
                [
                    c,
                    *[_level(variants[n], c) for n in variants],
                    ratios["vit_over_raw_by_concurrency"]["fp32"].get(str(c)),
                    ratios["vit_over_raw_by_concurrency"]["int8"].get(str(c)),
                ]
                for c in levels
            ],
        ),
        "",
        "vit/raw at concurrency c divides by the best raw batch size up to c (c single-image requests can at most "
        "form batches of c).",
        "",
        "## Latency by concurrency (p50 / p99 ms per request; raw and pipeline: per call)",
        "",
        *_table(
            ["concurrency", *variants],
            [[c, *[_latency(variants[n], c) for n in variants]] for c in levels],
        ),
        "",
        "## Server memory per max batch size (tritonserver + Python stubs, RSS)",
        "",
        "`vit` warms up at batch 1 and at its max batch when it loads, so the engine's memory for full batches is "
        "already held at idle.",
        "",
        *_table(
            [
                "precision",
                "max batch",
                "processes",
                "idle MiB",
                "under load MiB",
                "load - idle MiB",
                "avg batch formed",
            ],
            [
                [
                    r["precision"],
                    r["max_batch"],
                    r.get("processes"),
                    r["idle_bytes"] / MIB,
                    r["load_bytes"] / MIB,
                    r["growth_bytes"] / MIB,
                    r["avg_batch"],
                ]
                for r in data["memory"]
            ],
        ),
        "",
        "## Serving settings of the two repositories",
        "",
        *_table(
            [
                "precision",
                "max batch",
                "queue delay us",
                "preferred",
                "vit instances",
                "ORT threads",
                "preprocess instances",
            ],
            [
                [
                    p,
                    b["max_batch_size"],
                    b["max_queue_delay_us"],
                    ",".join(map(str, b["preferred_batch_sizes"])) or "none",
                    b["engine_instances"],
                    b.get("engine_threads", 0) or "default",
                    b["preprocess_instances"],
                ]
                for p, b in m["batching"].items()
            ],
        ),
        "",
        "## Triton statistics over the rounds (per request, ms)",
        "",
        *_table(
            [
                "precision",
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
                    precision,
                    model,
                    s["requests"],
                    s["executions"],
                    s["avg_batch"],
                    s["queue_ms"],
                    s["compute_input_ms"],
                    s["compute_infer_ms"],
                    s["compute_output_ms"],
                ]
                for precision, models in data["triton"].items()
                for model, s in models.items()
            ],
        ),
        "",
        "## Preprocessing from the same JPEG bytes (one core)",
        "",
        f"Reference: {prep['reference']}. Goal: box >= 1.5x the reference: "
        f"{'met' if data['preprocessing_goal']['met'] else 'NOT MET'}.",
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
        f"Sections took (s): {data['timings_s']}.",
        "",
    ]
    return "\n".join(out)


def _row(variant: dict[str, Any], level: int) -> dict[str, Any] | None:
    return next((r for r in variant["rows"] if r["level"] == level), None)


def _level(variant: dict[str, Any], level: int) -> float | None:
    row = _row(variant, level)
    return row["images_per_s"] if row else None


def _latency(variant: dict[str, Any], level: int) -> str:
    row = _row(variant, level)
    return f"{row['p50_ms']:.0f} / {row['p99_ms']:.0f}" if row else "-"


STYLE = {"raw": ":", "vit": "-", "detector": "--"}
MARKER = {"raw": "^", "vit": "o", "detector": "s"}
COLOUR = {"fp32": "tab:blue", "int8": "tab:orange"}


def plot_bench(data: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = data["concurrency"]

    def log2_axis(ax: Any, values: list[int]) -> None:
        ax.set_xscale("log", base=2)
        ax.set_xticks(values, [str(v) for v in values])
        ax.minorticks_off()

    fig, axes = plt.subplots(2, 2, figsize=(12, 9), dpi=100)
    variants = data["variants"]
    ax = axes[0][0]
    for name, v in variants.items():
        if v["kind"] == "pipeline":
            ax.axhline(
                v["best_images_per_s"],
                color="grey",
                linestyle="-.",
                label=f"Transformers pipeline (batch {v['best_level']})",
            )
            continue
        rows = v["rows"]
        medians = [r["images_per_s"] for r in rows]
        spread = [  # the slowest and fastest round around the median: how much the machine moved
            [m - min(r.get("rounds") or [m]) for m, r in zip(medians, rows, strict=True)],
            [max(r.get("rounds") or [m]) - m for m, r in zip(medians, rows, strict=True)],
        ]
        ax.errorbar(
            [r["level"] for r in rows],
            medians,
            yerr=spread,
            capsize=3,
            marker=MARKER[v["kind"]],
            linestyle=STYLE[v["kind"]],
            color=COLOUR[v["precision"]],
            label=name + (" (batch = concurrency)" if v["kind"] == "raw" else ""),
        )
    ax.set(
        title="throughput (median of rounds; bars: slowest to fastest)",
        xlabel="concurrent requests (raw: batch size)",
        ylabel="images/s (log scale)",
    )
    log2_axis(ax, levels)
    ax.set_yscale("log")  # the variants span a decade and more: a linear axis flattens the slow ones
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)

    ax = axes[0][1]
    for precision, by_c in data["ratios"]["vit_over_raw_by_concurrency"].items():
        items = sorted((int(c), r) for c, r in by_c.items())
        ax.plot(
            [c for c, _ in items], [r for _, r in items], "o-", color=COLOUR[precision], label=f"vit / raw {precision}"
        )
    ax.axhline(GOAL_SERVED_RATIO, color="grey", linestyle=":", label=f"goal {GOAL_SERVED_RATIO}")
    ax.set(title="served vit / raw ONNX Runtime", xlabel="concurrent requests", ylabel="ratio")
    log2_axis(ax, levels)
    ax.legend(fontsize=8)

    ax = axes[1][0]
    mem = data["memory"]
    xs = range(len(mem))
    ax.bar([x - 0.2 for x in xs], [r["idle_bytes"] / MIB for r in mem], width=0.4, label="idle")
    ax.bar([x + 0.2 for x in xs], [r["load_bytes"] / MIB for r in mem], width=0.4, label="under load")
    ax.set_xticks(list(xs), [f"{r['precision']}\nmb {r['max_batch']}" for r in mem])
    ax.set(title="server RSS per max batch size", ylabel="MiB")
    ax.set_ylim(0, max([r["load_bytes"] / MIB for r in mem] + [1.0]) * 1.25)  # room for the legend above the bars
    ax.legend(fontsize=8, loc="upper right", ncol=2)

    ax = axes[1][1]
    methods = data["preprocessing"]["methods"]
    names = list(methods)
    ax.bar(names, [methods[n]["images_per_s"] for n in names], color=["grey"] + ["tab:blue"] * (len(names) - 1))
    ax.set(title="preprocessing, one core", ylabel="images/s")
    for i, n in enumerate(names):
        ax.annotate(f"{methods[n]['speedup']:.2f}x", (i, methods[n]["images_per_s"]), ha="center", va="bottom")

    m = data["model"]
    size = f"{m['input_hw'][0]}x{m['input_hw'][1]}"
    fig.suptitle(
        f"dfserve bench: {m['architecture']} {size}, {data['machine']['cpus']} CPUs, "
        f"{data['rounds']} alternating rounds"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
