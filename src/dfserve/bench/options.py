"""The options of `dfserve bench`, apart from the bench itself so that building the CLI parser (which reads their
defaults) imports neither NumPy nor Pillow: `dfserve --help` stays fast and works in an SDK-only install."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dfserve.errors import BenchError

GOAL_SERVED_RATIO = 0.95
"""Served `vit` against raw ONNX Runtime in the same process: what serving may cost (the bench and the tune)."""
GOAL_INT8_OVER_FP32 = 1.5
"""Served INT8 against served FP32 on a CPU with VNNI or AMX."""


@dataclass
class BenchOptions:
    model: str | None = None
    """Checkpoint folder or hub id for the pipeline (and the builds); None: the default model's architecture with
    random weights, saved as a checkpoint folder in the output."""
    repository: Path | None = None
    """An already built FP32 repository (python or container target): skips its build."""
    int8_repository: Path | None = None
    """An already built INT8 repository: skips its build."""
    random_weights: bool = False
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)
    seconds: float = 2.5
    """Length of each timed window (one variant at one level in one round)."""
    rounds: int = 3
    pipeline_batch: int = 8
    memory_batches: tuple[int, ...] = (1, 8)
    repeats: int = 2
    """Repetitions of the preprocessing section."""
    images: Path | None = None
    image_count: int = 8
    out: Path | None = None
    parity_photos: int = 4

    def __post_init__(self) -> None:
        for name in ("rounds", "repeats", "image_count", "pipeline_batch"):
            if getattr(self, name) < 1:
                raise BenchError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        if self.seconds <= 0:
            raise BenchError(f"seconds must be positive, got {self.seconds}")
        if not self.concurrency or min(self.concurrency) < 1:
            raise BenchError(f"concurrency levels must be positive, got {self.concurrency}")
        self.concurrency = tuple(sorted(set(self.concurrency)))
