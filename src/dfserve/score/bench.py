"""`python -m dfserve.score.bench --url URL`: `dfserve score`'s images/s against `Client.classify_many` at the same
concurrency, on the same files and server, printing the ratio (the goal is at least 0.9).

`classify_many` holds every result in memory and writes nothing; `dfserve score` also hashes every file, walks
the folder, writes Parquet parts and merges them, so the ratio is the price of being resumable and streamed.
Both sides run in pixels mode (the client decodes and resizes), and `classify_many` in file mode (the server
does) is printed for reference. The runs alternate, `repeats` times each, and the best of each side counts, so
that a neighbour's burst on a shared machine does not decide the figure.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dfserve.client._constants import DEFAULT_CONCURRENCY, DEFAULT_URL


@dataclass(frozen=True)
class ScoreBench:
    images: int
    concurrency: int
    score: float
    """`dfserve score` images/s (best run)."""
    classify_many_pixels: float
    classify_many_file: float
    cpu_ms_score: float
    """This process's CPU time per image (least over the runs): steadier than images/s on a shared machine."""
    cpu_ms_pixels: float

    @property
    def ratio(self) -> float:
        return self.score / self.classify_many_pixels

    def report(self) -> str:
        return (
            f"{self.images} images, concurrency {self.concurrency}: dfserve score {self.score:.0f} images/s, "
            f"classify_many (pixels) {self.classify_many_pixels:.0f} images/s, "
            f"classify_many (file) {self.classify_many_file:.0f} images/s; "
            f"ratio score / classify_many (pixels) = {self.ratio:.2f}x; "
            f"client CPU per image: score {self.cpu_ms_score:.2f} ms, "
            f"classify_many (pixels) {self.cpu_ms_pixels:.2f} ms"
        )


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


def compare(url: str, folder: Path, concurrency: int = DEFAULT_CONCURRENCY, repeats: int = 3) -> ScoreBench:
    """Time both sides `repeats` times, alternating, on every image file of `folder`."""
    from dfserve.client import Client
    from dfserve.score.run import score
    from dfserve.score.sources import Source

    paths = list(Source.open(str(folder)).inputs())
    best = {"score": 0.0, "pixels": 0.0, "file": 0.0}
    cpu = {"score": float("inf"), "pixels": float("inf"), "file": float("inf")}
    with tempfile.TemporaryDirectory(prefix="dfserve-score-bench-") as tmp:
        for r in range(repeats):
            for mode in ("pixels", "file"):
                with Client(url, mode=mode, pool_size=concurrency) as client:
                    client.model_spec()
                    start, cpu_start = time.perf_counter(), time.process_time()
                    results = client.classify_many(paths, concurrency=concurrency)
                    best[mode] = max(best[mode], len(results) / (time.perf_counter() - start))
                    cpu[mode] = min(cpu[mode], (time.process_time() - cpu_start) / len(results) * 1e3)
            out = Path(tmp) / f"run{r}.parquet"
            start, cpu_start = time.perf_counter(), time.process_time()
            _, summary = score(str(folder), out, url, concurrency=concurrency, progress=False)
            best["score"] = max(best["score"], summary.rows / (time.perf_counter() - start))
            cpu["score"] = min(cpu["score"], (time.process_time() - cpu_start) / summary.rows * 1e3)
    return ScoreBench(len(paths), concurrency, best["score"], best["pixels"], best["file"], cpu["score"], cpu["pixels"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dfserve.score.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--folder", type=Path, default=None, help="images to score (default: generate --images)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--repeats", type=int, default=3)
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
