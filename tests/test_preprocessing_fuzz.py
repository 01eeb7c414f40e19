"""Mutated real files of every format (tests/hostile.py) through every resize mode: the only outcomes are a
uint8 [3,H,W] array of the configured shape or an InvalidImageError, never another exception."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dfserve import preprocessing as P
from dfserve.spec.model import RESIZE_MODES, Limits, Preprocessing
from tests import hostile

PP = Preprocessing(resize="shortest_edge", size=64, crop=(56, 56), resample=3)
LIMITS = Limits(max_file_bytes=1 << 20, max_pixels=4_000_000)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("fmt", hostile.FORMATS)
def test_mutated_files_give_pixels_or_invalid_image_error(fmt: str) -> None:
    start, outcomes = time.monotonic(), {"ok": 0, "refused": 0}
    for i, data in enumerate(hostile.mutations(hostile.sample(fmt), seed=7, count=300)):
        for mode in RESIZE_MODES:
            try:
                out = P.preprocess_bytes(data, PP, LIMITS, mode)
            except P.InvalidImageError as exc:
                assert str(exc), f"{fmt} mutation {i} in {mode}: an error without a message"
                outcomes["refused"] += 1
                continue
            assert out.dtype == np.uint8 and out.shape == (3, 56, 56), f"{fmt} mutation {i} in {mode}"
            outcomes["ok"] += 1
    assert outcomes["refused"] > 0  # the corpus is hostile enough to be refused somewhere
    assert time.monotonic() - start < 60, "fuzz run past its safety bound"


def test_header_bomb_is_refused_quoting_the_configured_limit() -> None:
    with pytest.raises(P.TooManyPixelsError, match="4000000"):
        P.preprocess_bytes(hostile.png(3000, 3000, header_only=True), PP, LIMITS)
