"""`python -m dfserve.score.bench --url URL`: `dfserve score`'s images/s against `Client.classify_many` at the same
concurrency, on the same files and server, printing the ratio (the goal is at least 0.9).

`classify_many` holds every result in memory and writes nothing; `dfserve score` also hashes every file, walks
the folder, writes Parquet parts and merges them, so the ratio is the price of being resumable and streamed.
Both modes are measured: pixels (the client decodes and resizes; `dfserve score`'s default) and file (the server
does), each side in the same mode. The two sides run back to back in each round, in alternating order, and the
median of the per-round ratios is the figure, so that a neighbour's burst on a shared machine hits both sides
and decides nothing; client CPU per image is printed too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dfserve.client import Client
from dfserve.client._constants import DEFAULT_CONCURRENCY, DEFAULT_URL, Mode
from dfserve.score.run import score
from dfserve.score.sources import Source


@dataclass(frozen=True)
class ModeBench:
    """One mode's rounds: `dfserve score` and `classify_many` back to back, in alternating order."""

    mode: str
    score: list[float]
    """`dfserve score` images/s, one per round."""
    classify_many: list[float]
    cpu_ms_score: float
    """This process's CPU time per image (median over the rounds): steadier than images/s on a shared machine."""
    cpu_ms_classify_many: float

    @property
    def ratios(self) -> list[float]:
        """score / classify_many per round: the two ran back to back, so a neighbour's burst hits both."""
        return [a / b for a, b in zip(self.score, self.classify_many, strict=True)]

    @property
    def ratio(self) -> float:
        return float(np.median(self.ratios))

    def report(self) -> str:
        return (
            f"{self.mode} mode: dfserve score {np.median(self.score):.0f} images/s, classify_many "
            f"{np.median(self.classify_many):.0f} images/s; ratio median {self.ratio:.2f}x (per round "
            f"{', '.join(f'{r:.2f}' for r in self.ratios)}); client CPU per image: score {self.cpu_ms_score:.2f} ms, "
            f"classify_many {self.cpu_ms_classify_many:.2f} ms"
        )


@dataclass(frozen=True)
class ScoreBench:
    images: int
    concurrency: int
    modes: list[ModeBench]

    def report(self) -> str:
        head = f"{self.images} images, concurrency {self.concurrency}, {len(self.modes[0].score)} rounds (medians)"
        return "\n".join([head, *(m.report() for m in self.modes)])


def write_images(folder: Path, count: int, size: tuple[int, int] = (320, 240), seed: int = 0) -> list[Path]:
    """`count` JPEG photographs-sized files of smooth noise in 10 sub-folders."""
    rng = np.random.default_rng(seed)
    paths = []
    w, h = size
    for i in range(count):
        sub = folder / f"{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        path = sub / f"{i:06d}.jpg"
        Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR).save(path, quality=90)
        paths.append(path)
    return paths


def compare(
    url: str,
    folder: Path,
    concurrency: int = DEFAULT_CONCURRENCY,
    repeats: int = 5,
    modes: tuple[Mode, ...] = ("pixels", "file"),
) -> ScoreBench:
    """Time both sides on every image file of `folder`, per mode: one warm-up each (imports, connections, Arrow's
    first write), then `repeats` rounds, the order flipped every round so that drift favours neither."""

    paths = list(Source.open(str(folder)).inputs())
    results: list[ModeBench] = []
    with tempfile.TemporaryDirectory(prefix="dfserve-score-bench-") as tmp:
        runs = iter(range(1_000_000))

        def run_score(mode: Mode) -> tuple[float, float]:
            start, cpu_start = time.perf_counter(), time.process_time()
            out = Path(tmp) / f"run{next(runs)}.parquet"
            _, summary = score(str(folder), out, url, concurrency=concurrency, mode=mode, progress=False)
            return summary.rows / (time.perf_counter() - start), (time.process_time() - cpu_start) / summary.rows

        def run_many(mode: Mode) -> tuple[float, float]:
            with Client(url, mode=mode, pool_size=concurrency) as client:
                client.model_spec()
                start, cpu_start = time.perf_counter(), time.process_time()
                done = client.classify_many(paths, concurrency=concurrency)
                return len(done) / (time.perf_counter() - start), (time.process_time() - cpu_start) / len(done)

        for mode in modes:
            run_score(mode)  # warm-ups
            run_many(mode)
            timed: dict[str, list[tuple[float, float]]] = {"score": [], "many": []}
            for r in range(repeats):
                for side in ("score", "many") if r % 2 == 0 else ("many", "score"):
                    timed[side].append(run_score(mode) if side == "score" else run_many(mode))
            results.append(
                ModeBench(
                    mode,
                    [rate for rate, _ in timed["score"]],
                    [rate for rate, _ in timed["many"]],
                    float(np.median([c for _, c in timed["score"]])) * 1e3,
                    float(np.median([c for _, c in timed["many"]])) * 1e3,
                )
            )
    return ScoreBench(len(paths), concurrency, results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dfserve.score.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--folder", type=Path, default=None, help="images to score (default: generate --images)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--repeats", type=int, default=5, help="rounds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dfserve-score-images-") as tmp:
        folder = args.folder
        if folder is None:
            folder = Path(tmp)
            write_images(folder, args.images)
        print(compare(args.url, folder, args.concurrency, args.repeats).report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
