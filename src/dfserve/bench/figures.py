"""What a GPU figure is, said with it, and the figures that are not to be reported.

Every figure of the GPU benches carries a label naming what ran (PyTorch eager, PyTorch compiled, TensorRT, served
through Triton), in which precision, on which device, and whether the weights are random. Figures that cannot be
what they claim are flagged and left out of the tables:

- compiled figures flat across batch sizes far below eager (the H200 run's `torch.compile` sat at about 2,100
  images/s from batch 8 to 128 while eager grew to 7,247): recompiles or graph breaks, not a measurement of the
  compiled engine;
- a series that does not grow from batch 1-2 to a batch 16× larger: something other than the engine bounds it;
- FP16 on a CPU: `half` is for CUDA only; a CPU "FP16" figure measures PyTorch's slow half-precision CPU kernels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

BEHIND_EAGER = 0.5
"""A compiled series is flagged when, from batch 8 up, it grows less than `MIN_GROWTH` while eager grows at least
twice as much, and ends below this share of eager."""
MIN_GROWTH = 1.5
"""Images/s must grow at least this much from batch <= 2 to a batch 16x larger."""


def label(kind: str, precision: str, device: str, random_weights: bool | None) -> str:
    """e.g. "TensorRT fp16, NVIDIA H100 80GB HBM3, random weights"."""
    weights = {True: "random weights", False: "trained weights", None: "weights as built"}[random_weights]
    return f"{kind} {precision}, {device}, {weights}"


def check_half(device: str, half: bool) -> None:
    """FP16 only where it is FP16 hardware arithmetic: refuse `half` on a CPU instead of measuring it silently."""
    if half and not device.startswith("cuda"):
        raise ValueError(f"FP16 is measured on CUDA devices only, not on {device!r} (use fp32 there)")


def flag_flat(values: Sequence[float], batches: Sequence[int], what: str) -> list[str]:
    """A flag when images/s do not grow from a batch of 1-2 to one 16x larger."""
    points = dict(zip(batches, values, strict=True))
    small = [b for b in points if b <= 2]
    if not small:
        return []
    low = min(small)
    large = [b for b in points if b >= 16 * low]
    if not large or points[low] <= 0:
        return []
    top = max(large)
    growth = points[top] / points[low]
    if growth >= MIN_GROWTH:
        return []
    return [
        f"{what}: images/s grow only {growth:.2f}x from batch {low} to {top} ({points[low]:,.0f} -> "
        f"{points[top]:,.0f}): bounded by something other than the engine; not reported"
    ]


def flag_compiled(compiled: Mapping[int, float], eager: Mapping[int, float]) -> list[str]:
    """A flag when compiled images/s stay flat from batch 8 up while eager's grow, ending far below eager."""
    common = sorted(b for b in compiled if b >= 8 and b in eager)
    if len(common) < 2:
        return []
    first, last = common[0], common[-1]
    compiled_growth = compiled[last] / compiled[first]
    eager_growth = eager[last] / eager[first]
    if (
        compiled_growth >= MIN_GROWTH
        or eager_growth < 2 * compiled_growth
        or compiled[last] >= BEHIND_EAGER * eager[last]
    ):
        return []
    return [
        f"compiled: flat at {compiled[first]:,.0f}-{compiled[last]:,.0f} images/s from batch {first} to {last} "
        f"while eager reaches {eager[last]:,.0f}: recompiles or graph breaks, not the engine; not reported"
    ]
