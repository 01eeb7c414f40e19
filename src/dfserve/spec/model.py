"""The one typed description of a served model.

Every fact that more than one component needs lives here exactly once: tensor and model names, the
preprocessing policy, the labels, batch sizes and instance counts. The build derives a `ModelSpec` from the
checkpoint, writes it next to the model repository (``dfserve.json``) and into every generated
``config.pbtxt`` (parameter ``dfserve_spec``), so the server backends and the SDK read the same values that
the ONNX graph was built from, instead of repeating constants of their own.

This module imports only pydantic: the SDK depends on it, and the SDK must not pull torch.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dfserve._version import __version__
from dfserve.errors import IncompatibleSpecError
from dfserve.spec.names import REPORT_FILENAME, SPEC_FILENAME, SPEC_PARAMETER

__all__ = ["REPORT_FILENAME", "SPEC_FILENAME", "SPEC_PARAMETER"]

Precision = Literal["fp32", "fp16", "int8"]
"""The arithmetic the served engine runs in. Every precision below FP32 passes a fidelity gate at build time."""
Engine = Literal["onnx", "tensorrt", "torch"]
"""What runs the `vit` model: an ONNX graph (ONNX Runtime), a TensorRT plan, or PyTorch."""
ResizeMode = Literal["exact", "box", "draft"]
"""How `dfserve.preprocessing` resizes (see that module): exact is pixel-identical to Transformers."""
RESIZE_MODES: tuple[ResizeMode, ...] = ("exact", "box", "draft")
DEFAULT_RESIZE_MODE: ResizeMode = "exact"
"""A forensic detector reads fine detail: the default is the reference's own pixels. `box` and `draft` are
opt-in speed modes whose cost on the checkpoint being built is in its build report."""
Decode = Literal["cpu", "gpu"]
"""Where the server decodes and resizes image files: `cpu` is `dfserve.preprocessing` (exact); `gpu` decodes JPEGs
on the engine's device (nvJPEG) and resizes there, a shortcut whose drift every build measures (docs/gpu.md)."""
DECODES: tuple[Decode, ...] = ("cpu", "gpu")
DEFAULT_DECODE: Decode = "cpu"


# Pillow's resampling filter codes, which is also how Transformers' processors store `resample`.
RESAMPLE_NAMES: dict[int, str] = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorNames(_Frozen):
    """Names shared by the ONNX graph, the Triton configs, the backends and the SDK."""

    image: str = "image"
    """Encoded image file (BYTES [1]): input of `preprocess` and of the ensemble."""
    pixels: str = "pixels"
    """Resized and cropped image (UINT8 [3,H,W]): output of `preprocess`, input of the engine."""
    scores: str = "scores"
    """Class probabilities (FP32 [K]): output of the engine and of the ensemble."""


class ModelNames(_Frozen):
    """Names of the models in the Triton repository."""

    engine: str = "vit"
    preprocess: str = "preprocess"
    ensemble: str = "detector"


# Processors whose policy (resize, optional centre crop, rescale, normalise) this project reproduces exactly,
# with the meaning of a bare integer `size` for each.
SUPPORTED_PROCESSORS: dict[str, str] = {
    "ViTImageProcessor": "fixed",
    "ViTFeatureExtractor": "fixed",
    "DeiTImageProcessor": "fixed",
    "CLIPImageProcessor": "shortest_edge",
    "CLIPFeatureExtractor": "shortest_edge",
    "BitImageProcessor": "shortest_edge",
}


class Preprocessing(_Frozen):
    """The checkpoint's image-processor policy, reduced to what produces the uint8 pixels and the graph's
    normalisation.

    Two resize policies exist in Transformers' processors: `fixed` (``ViTImageProcessor``: resize straight to
    height x width) and `shortest_edge` (``CLIPImageProcessor`` and kin: scale the shorter side, keep the aspect
    ratio). Either may be followed by a centre crop.
    """

    resize: Literal["fixed", "shortest_edge"]
    size: tuple[int, int] | int
    """(height, width) for `fixed`; the target length of the shorter edge for `shortest_edge`."""
    crop: tuple[int, int] | None = None
    """(height, width) of the centre crop, or None when the processor does not crop."""
    resample: int = Field(default=2, ge=0, le=5)
    """Pillow filter code (2 bilinear, 3 bicubic, ...)."""
    crop_rounding: Literal["floor", "round"] = "floor"
    """Where an odd margin puts the centre crop: `floor` is Transformers' ``(h - ch) // 2``; `round` is
    torchvision's ``CenterCrop`` (``int(round((h - ch) / 2))``, half to even), which timm's eval transform uses."""
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @model_validator(mode="after")
    def _check_size(self) -> Preprocessing:
        if self.resize == "fixed" and not isinstance(self.size, tuple):
            raise ValueError("a fixed resize needs size=(height, width)")
        if self.resize == "shortest_edge" and not isinstance(self.size, int):
            raise ValueError("a shortest-edge resize needs size=<int>")
        if self.resize == "shortest_edge" and self.crop is None:
            raise ValueError("a shortest-edge resize without a centre crop gives no fixed input size")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")
        return self

    @property
    def output_hw(self) -> tuple[int, int]:
        """(height, width) of the pixels the engine receives."""
        if self.crop is not None:
            return self.crop
        assert isinstance(self.size, tuple)
        return self.size

    @property
    def resample_name(self) -> str:
        return RESAMPLE_NAMES[self.resample]

    @classmethod
    def from_processor_config(cls, cfg: dict[str, Any]) -> Preprocessing:
        """Read a Transformers ``preprocessor_config.json``.

        Raises ValueError naming the field when the policy is one this project does not reproduce exactly.
        """
        kind = str(cfg.get("image_processor_type", cfg.get("feature_extractor_type", ""))).removesuffix("Fast")
        if kind and kind not in SUPPORTED_PROCESSORS:
            raise ValueError(
                f"image processor {kind} is not supported; supported: {', '.join(sorted(SUPPORTED_PROCESSORS))}"
            )
        if cfg.get("do_resize", True) is False:
            raise ValueError(f"{kind or 'processor'} with do_resize=false has no fixed input size")
        raw_size = cfg.get("size", 224)
        if isinstance(raw_size, int) and SUPPORTED_PROCESSORS.get(kind) == "shortest_edge":
            raw_size = {"shortest_edge": raw_size}
        size = _parse_size(raw_size)
        crop: tuple[int, int] | None = None
        if cfg.get("do_center_crop", "crop_size" in cfg and "CLIP" in kind):
            crop_cfg = _parse_size(cfg.get("crop_size", 224))
            crop = (crop_cfg, crop_cfg) if isinstance(crop_cfg, int) else crop_cfg
        resize: Literal["fixed", "shortest_edge"]
        if isinstance(size, int):
            resize = "shortest_edge"
            if crop is None:
                raise ValueError("size.shortest_edge without do_center_crop gives no fixed input size")
        else:
            resize = "fixed"
        mean = cfg.get("image_mean", [0.5, 0.5, 0.5])
        std = cfg.get("image_std", [0.5, 0.5, 0.5])
        return cls(
            resize=resize,
            size=size,
            crop=crop,
            resample=int(cfg.get("resample", 2)),
            do_rescale=bool(cfg.get("do_rescale", True)),
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
            do_normalize=bool(cfg.get("do_normalize", True)),
            mean=_triple(mean, "image_mean"),
            std=_triple(std, "image_std"),
        )


def _parse_size(value: Any) -> tuple[int, int] | int:
    """Transformers' `size` field: an int, {"height", "width"}, {"shortest_edge"} or a legacy pair."""
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return (int(value["height"]), int(value["width"]))
        if "shortest_edge" in value:
            if value.get("longest_edge") is not None:
                raise ValueError("size.longest_edge is not supported (no fixed input size)")
            return int(value["shortest_edge"])
    if isinstance(value, list | tuple) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    raise ValueError(f"unsupported preprocessor size {value!r}")


def _triple(values: Any, name: str) -> tuple[float, float, float]:
    if isinstance(values, int | float):
        values = [values] * 3
    if len(values) != 3:
        raise ValueError(f"{name} must have 3 values (RGB), got {values!r}")
    return (float(values[0]), float(values[1]), float(values[2]))


class Labels(_Frozen):
    """What the scores mean. A single-logit detector is served as two classes [negative, positive]."""

    names: tuple[str, ...]
    activation: Literal["sigmoid", "softmax"]
    num_logits: int = Field(ge=1)

    @model_validator(mode="after")
    def _check(self) -> Labels:
        if self.activation == "sigmoid" and (self.num_logits != 1 or len(self.names) != 2):
            raise ValueError("sigmoid labels are one logit served as two names [negative, positive]")
        if self.activation == "softmax" and len(self.names) != self.num_logits:
            raise ValueError("softmax labels need one name per logit")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"label names must be unique: {self.names}")
        for name in self.names:
            # labels.txt holds one name per line: a newline would shift every later class (Triton's
            # classification output would then name the wrong class)
            if not name.strip() or any(ord(c) < 32 or ord(c) == 127 for c in name):
                raise ValueError(f"label name {name!r} is empty or contains a control character (e.g. a newline)")
        return self

    @property
    def positive(self) -> str | None:
        """The positive class of a single-logit detector (e.g. `fake`), else None."""
        return self.names[1] if self.activation == "sigmoid" else None


class Batching(_Frozen):
    """Dynamic batching and instance counts for the models Triton serves."""

    max_batch_size: int = Field(default=32, ge=1, le=1024)
    preferred_batch_sizes: tuple[int, ...] = ()
    """Empty by default: with preferred sizes Triton sends a batch as soon as one is reached and the queue delay
    never applies (Triton's docs reserve them for engines with several optimisation profiles)."""
    max_queue_delay_us: int = Field(default=2000, ge=0)
    engine_instances: int = Field(default=1, ge=1)
    preprocess_instances: int = Field(default=2, ge=1)
    preprocess_max_batch_size: int = Field(default=32, ge=1)
    preprocess_threads: int = Field(default=0, ge=0)
    """Decoding threads inside each `preprocess` instance (added in format 1.3); 0: min(4, the host's cores).
    Pillow releases the GIL while it decodes and resizes, so one instance decodes a dynamic batch on several
    cores, and a host needs a few instances (processes, each with its /dev/shm regions) instead of one per core."""
    engine_threads: int = Field(default=0, ge=0)
    """ONNX Runtime intra-op threads per `vit` instance; 0: ONNX Runtime's default (one per core). With several
    instances, or `preprocess` instances decoding beside it, fewer threads keep them from fighting for cores."""
    engine_inter_op_threads: int = Field(default=0, ge=0)
    """ONNX Runtime inter-op threads (used only by its parallel execution mode); 0: ONNX Runtime's default."""
    max_queue_size: int = Field(default=256, ge=0)
    """Load shedding (added in format 1.3): requests that may wait in each batching model's queue (`vit` and
    `preprocess` each); one more is refused at once (HTTP 503, gRPC UNAVAILABLE) instead of waiting behind the
    others, so overload costs refusals a client can retry elsewhere, not unbounded latency. 0: unbounded."""
    queue_timeout_us: int = Field(default=0, ge=0)
    """A request that has waited this long in a queue is refused (Triton's REJECT timeout action); 0: no timeout."""

    MIN_DELAY_WITH_QUEUE_BOUND_US: ClassVar[int] = 100
    """Triton 2.51's dynamic batcher with a bounded queue and a queue delay of 0 or 1 µs stalls requests for about
    0.5 s at a time (measured with one client and with sixteen; 100 µs and more do not), so a bound needs at least
    this delay. Unbatched CPU serving (delay 0) therefore leaves its queue unbounded."""

    @field_validator("preferred_batch_sizes")
    @classmethod
    def _sorted(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(set(v)))

    @model_validator(mode="after")
    def _check(self) -> Batching:
        too_big = [b for b in self.preferred_batch_sizes if b > self.max_batch_size or b < 1]
        if too_big:
            raise ValueError(f"preferred batch sizes {too_big} exceed max_batch_size {self.max_batch_size}")
        self.check_queue_bound()
        return self

    def check_queue_bound(self) -> None:
        """A ValueError naming the fix when `max_queue_size` is set with a queue delay Triton stalls on."""
        if self.max_queue_size and self.max_queue_delay_us < self.MIN_DELAY_WITH_QUEUE_BOUND_US:
            raise ValueError(
                f"max_queue_size {self.max_queue_size} needs max_queue_delay_us >= "
                f"{self.MIN_DELAY_WITH_QUEUE_BOUND_US} (got {self.max_queue_delay_us}): Triton stalls a bounded queue "
                "with a shorter delay; set max_queue_size 0 for an unbounded queue"
            )

    def preferred_for(self, max_batch: int) -> tuple[int, ...]:
        return tuple(b for b in self.preferred_batch_sizes if b <= max_batch)


REQUEST_HEADROOM_BYTES = 1024 * 1024
"""Room around a request's payload for its headers, JSON or protobuf framing and tensor length prefixes."""


class Limits(_Frozen):
    """Bounds on what one request may ask the server to decode."""

    max_file_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    max_pixels: int = Field(default=50_000_000, ge=1)
    """Refused before decoding: guards against decompression bombs."""
    max_aspect_ratio: float = Field(default=100.0, ge=1.0)
    """Longer side over shorter side, refused before decoding (added in format 1.1). Resizing works through an
    intermediate image of (output side × input side) pixels, so a 1 × 5,000,000 strip costs gigabytes however
    small its file is. With this bound, an image inside `max_pixels` (decoding peaks, measured at 49 MP, at 8 bytes
    per pixel for an RGB JPEG, 11.5 for CMYK, 15.5 for a lossless WebP: docs/reliability.md) resizes
    through an intermediate of at most sqrt(max_pixels × max_aspect_ratio) × output side pixels (70,711 × 440 ≈
    31 M at the defaults) into a resized image of at most output side² × max_aspect_ratio pixels (19 M for a
    440 shortest edge), before the crop."""


class GpuServing(_Frozen):
    """How `vit` is served on a GPU (the `tensorrt` target): the one place for the GPU settings, kept apart from
    `Batching`, whose defaults are tuned for CPUs. The build folds these into the spec's `Batching` for GPU targets
    (`for_gpu`), so the embedded spec and config.pbtxt agree.

    Why these values: one instance leaves the GPU idle while Triton gathers the next batch and copies it in, so two
    instances overlap one batch's copies and batching with the other's compute. Without preferred batch sizes the
    dynamic batcher waits up to `max_queue_delay_us` and, under load, sends `max_batch_size`; that is the batch the
    engine's optimisation profile is tuned for (`opt_batch`). CUDA graphs remove the per-kernel launch cost (a ViT
    is hundreds of short kernels), which matters most for the small batches of light load. Triton's TensorRT backend
    runs a batch with a graph only if a graph spec's batch size equals it, or if the batch lies between a spec's
    `graph_lower_bound` and its batch size (the graph then runs the spec's batch, the rows beyond the request's
    uninitialised and discarded: harmless for a ViT, whose images never mix); `graph_ranges` gives every size
    1..max a graph that way, wasting at most 2× compute below 16 (where launch overhead, not compute, is the cost)
    and at most 1.5× above. Each graph costs GPU memory per instance, so not every size gets its own. Decoding on
    the server is CPU-bound (about 70 images/s per core against thousands per second on the GPU), so `preprocess`
    gets one instance per core of the host unless told otherwise.
    """

    engine_instances: int = Field(default=2, ge=1)
    preprocess_instances: int | None = Field(default=None, ge=1)
    """None: one per CPU core of the build host (`os.cpu_count()`). Containers re-decide it where they serve, from the
    CPUs they may use (`dfserve serve --preprocess-instances auto`, dfserve.triton.sizing)."""
    max_batch_size: int = Field(default=64, ge=1, le=1024)
    """`vit`'s max batch (and the engine profile's max and opt) on a GPU: the PyTorch FP16 engine on an H200 still
    gained from 32 (6,542 images/s) to 64 (about 7,300) and no more beyond (docs/benchmarks.md); to be confirmed for
    the TensorRT engine with `python -m dfserve.bench.trtexec` at batch 32/64/128 (docs/gpu.md)."""
    cuda_graph_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 24, 32, 48, 64)
    """Batch sizes Triton's TensorRT backend captures CUDA graphs for (those above max_batch_size are dropped; the
    max batch is always added); each covers the sizes down to the previous one's + 1 (`graph_ranges`)."""
    builder_optimization_level: int = Field(default=3, ge=0, le=5)
    """TensorRT's builder optimisation level: 3 is its own default; 4-5 search longer for kernels (builds take
    several times as long). Set here explicitly so the build record says which was used."""

    @field_validator("cuda_graph_batch_sizes")
    @classmethod
    def _positive_sorted(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(b < 1 for b in v):
            raise ValueError(f"CUDA graph batch sizes must be positive, got {list(v)}")
        return tuple(sorted(set(v)))

    def graph_batch_sizes(self, max_batch: int) -> tuple[int, ...]:
        return tuple(sorted({b for b in self.cuda_graph_batch_sizes if b <= max_batch} | {max_batch}))

    def graph_ranges(self, max_batch: int) -> tuple[tuple[int, int], ...]:
        """(lower bound, batch size) of each CUDA graph: contiguous, together every batch 1..`max_batch`."""
        sizes = self.graph_batch_sizes(max_batch)
        return tuple((low + 1, size) for low, size in zip((0, *sizes), sizes, strict=False))

    @staticmethod
    def opt_batch(batching: Batching) -> int:
        """The batch the dynamic batcher forms under load: without preferred sizes it fills `max_batch_size`."""
        return max(batching.preferred_batch_sizes, default=batching.max_batch_size)

    def for_gpu(self, batching: Batching, cores: int | None = None) -> Batching:
        """`batching` as served on a GPU: no preferred sizes (the queue delay applies), GPU engine instances, and
        `preprocess` instances from `preprocess_instances` or else the host's cores."""
        count = self.preprocess_instances or cores or os.cpu_count() or 1
        return batching.model_copy(
            update={
                "preferred_batch_sizes": (),
                "engine_instances": self.engine_instances,
                "preprocess_instances": count,
            }
        )


SPEC_FORMAT_VERSION = "1.5"
"""The spec's format, major.minor. A minor bump only adds fields, which older readers ignore (with one log
line); a major bump changes meaning, and readers of another major refuse the spec naming both versions.
1.2: Batching.engine_threads and engine_inter_op_threads; 1.3: Batching.max_queue_size and queue_timeout_us;
1.4: ModelSpec.decode and Batching.preprocess_threads; 1.5: ModelSpec.build_host."""


def _format_tuple(version: str) -> tuple[int, int]:
    try:
        major, minor = version.split(".")[:2]
        return int(major), int(minor)
    except ValueError as exc:
        raise IncompatibleSpecError(f"unreadable spec format version {version!r}") from exc


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model class of a field annotated `Model` or `Model | None`, else None."""
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _drop_unknown(model: type[BaseModel], data: Any, path: str, dropped: list[str]) -> Any:
    """`data` without the keys `model` (and its nested models) does not declare: a newer minor format's."""
    if not isinstance(data, dict):
        return data
    out = {}
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            dropped.append(f"{path}{key}")
            continue
        nested = _model_of(field.annotation)
        if nested is not None:
            value = _drop_unknown(nested, value, f"{path}{key}.", dropped)
        out[key] = value
    return out


class BuildHost(_Frozen):
    """The CPU a repository was built and measured on (added in format 1.4): written by `dfserve build` for the
    ONNX Runtime targets, compared with the serving CPU by `dfserve serve` (`dfserve.engine.cpu.compare_hosts`).

    A reduced precision's speed depends on the CPU's instructions (INT8: VNNI or AMX; 1.88x FP32 with AVX-512 VNNI,
    1.01x with AVX2 only), so the speed-up is only known for the CPU it was measured on."""

    cpu_model: str
    arch: str = ""
    """`platform.machine()`: x86_64, aarch64."""
    isa: tuple[str, ...] = ()
    """The instruction sets of `dfserve.engine.cpu.KNOWN_ISA` that the CPU has (Linux's flag names)."""
    cores: int = Field(default=1, ge=1)
    """Cores the build could use (affinity and cgroup quota)."""
    measured: dict[str, float] = {}
    """Served precision against FP32 on this CPU, the same graph and threads, images/s over images/s:
    `int8_over_fp32` at batch 1 (a lone request), `int8_over_fp32_batch8` at the served max batch when it is
    larger. Empty for an FP32 build."""


class ModelSpec(_Frozen):
    """Everything the serving stack needs to know about one built model."""

    format_version: str = SPEC_FORMAT_VERSION
    """The format this spec was written in (see SPEC_FORMAT_VERSION)."""
    dfserve_version: str = __version__
    """The dfserve that built the repository: its Python backends run only under the same version."""
    source: str
    """Hub id or local folder the checkpoint came from."""
    revision: str | None = None
    architecture: str = "ViTForImageClassification"
    random_weights: bool = False
    labels: Labels
    preprocessing: Preprocessing
    batching: Batching = Batching()
    limits: Limits = Limits()
    tensors: TensorNames = TensorNames()
    models: ModelNames = ModelNames()
    onnx_opset: int = Field(default=18, ge=17)
    engine: Engine = "onnx"
    """What runs `vit` (added in format 1.1)."""
    precision: Precision = "fp32"
    """The arithmetic `vit` runs in; `FIDELITY_BARS[precision]` is the bar it passed (added in format 1.1)."""
    resize_mode: ResizeMode = DEFAULT_RESIZE_MODE
    """How `dfserve.preprocessing` resizes on the server and in the SDK's local mode (see that module)."""
    decode: Decode = DEFAULT_DECODE
    """Where the served `detector` decodes and resizes files (added in format 1.4; older specs read as `cpu`):
    `gpu` on the engine's device, with the exact CPU path as the per-image fallback. The SDK's local mode and the
    `preprocess` model always use the exact CPU path."""
    build_host: BuildHost | None = None
    """The CPU the build ran and measured its precision on (added in format 1.5); None for TensorRT and torch
    builds, and for repositories built before 1.4."""

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.preprocessing.output_hw

    @property
    def max_request_bytes(self) -> int:
        """The largest request body worth receiving: one file at `limits.max_file_bytes`, or a full batch of
        uint8 pixels for the engine, plus framing. Triton 2.51 has no option to bound a body, so the reverse proxy
        (`dfserve.triton.proxy`) refuses anything larger before Triton copies it into the backend."""
        height, width = self.input_hw
        pixels_batch = self.batching.max_batch_size * 3 * height * width
        return max(self.limits.max_file_bytes, pixels_batch) + REQUEST_HEADROOM_BYTES

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """Read a spec written by this or another dfserve: a newer minor format's unknown fields are dropped
        (logged once), another major format is refused naming both versions."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise IncompatibleSpecError("a model spec must be a JSON object")
        theirs = str(data.get("format_version", "1.0"))
        their_major = _format_tuple(theirs)[0]
        our_major = _format_tuple(SPEC_FORMAT_VERSION)[0]
        if their_major != our_major:
            raise IncompatibleSpecError(
                f"model spec format {theirs} (written by dfserve {data.get('dfserve_version', '?')}) cannot be "
                f"read by dfserve {__version__}, which reads format {our_major}.x; "
                "install a matching dfserve or rebuild the repository"
            )
        dropped: list[str] = []
        data = _drop_unknown(cls, data, "", dropped)
        if dropped:
            _log_newer_once(theirs, dropped)
        return cls.model_validate(data)

    def require_same_dfserve(self, what: str) -> None:
        """Refuse to run code of this dfserve against a repository built by another version."""
        if self.dfserve_version != __version__:
            raise IncompatibleSpecError(
                f"{what} was built by dfserve {self.dfserve_version}, but dfserve {__version__} is installed "
                f"here; install dfserve=={self.dfserve_version} or rebuild with this version"
            )

    def save(self, directory: Path) -> Path:
        path = Path(directory) / SPEC_FILENAME
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, directory: Path) -> ModelSpec:
        return cls.from_json((Path(directory) / SPEC_FILENAME).read_text())


def spec_from_model_config(config: Mapping[str, Any]) -> ModelSpec | None:
    """The spec a build embedded in a model's config (parameter `dfserve_spec`), however it was fetched: Triton's
    JSON over HTTP, gRPC's `{"config": ...}` wrapper, or the backend's own config. None when there is none; a
    ValueError (IncompatibleSpecError, pydantic's) when it cannot be read. The SDK, the load tests and the
    backends all read the spec here."""
    cfg = config.get("config", config)
    entry = (cfg.get("parameters") or {}).get(SPEC_PARAMETER)
    text = (entry.get("string_value") or entry.get("stringValue")) if isinstance(entry, Mapping) else None
    return ModelSpec.from_json(text) if text else None


_warned_formats: set[str] = set()


def _log_newer_once(version: str, dropped: list[str]) -> None:
    if version in _warned_formats:
        return
    _warned_formats.add(version)
    logging.getLogger(__name__).warning(
        "model spec format %s is newer than this dfserve's %s; ignoring fields it does not know: %s",
        version,
        SPEC_FORMAT_VERSION,
        ", ".join(dropped),
    )
