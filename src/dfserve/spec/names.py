"""Every name that crosses a boundary between dfserve's areas, defined once.

File names inside a built repository, environment variables that hand settings to processes dfserve starts,
HTTP/gRPC header names, and the sample photographs. The build, the server launcher, the backends, the SDK and
the tests import them from here, so no area imports another area (the SDK never imports the server launcher)
just to learn a constant. This module imports only `typing`.
"""

from __future__ import annotations

from typing import Literal

# --- files of a built repository ---------------------------------------------------------------------------
SPEC_FILENAME = "dfserve.json"
"""The `ModelSpec` beside the models (also embedded in each config.pbtxt)."""
REPORT_FILENAME = "build_report.json"
"""The build's proof: parity figures, versions, timings."""
BUILD_MARKER_FILENAME = ".dfserve-build-in-progress"
"""Present while a build rewrites a repository, so that nothing mistakes a half-written one for a finished one."""
CONFIG_FILENAME = "config.pbtxt"
ONNX_FILENAME = "model.onnx"
PLAN_FILENAME = "model.plan"
PYTHON_FILENAME = "model.py"
LABELS_FILENAME = "labels.txt"
WARMUP_DIR = "warmup"
WARMUP_IMAGE = "image.bin"
DEFAULT_REPOSITORY = "model_repository"
"""Where `dfserve build` writes and `dfserve serve` serves, relative to the working directory."""
SPEC_PARAMETER = "dfserve_spec"
"""The config.pbtxt parameter that carries the spec as JSON."""

# --- environment variables -------------------------------------------------------------------------------
PYTHONPATH_ENV = "DFSERVE_PYTHONPATH"
"""The import path handed to the Python backend stubs (which do not pass PYTHONPATH on)."""
TRITONSERVER_ENV = "DFSERVE_TRITONSERVER"
"""A tritonserver binary to use instead of nvidia-pytriton's."""
ADMIN_KEY_ENV = "DFSERVE_ADMIN_KEY"
"""The admin key for the restricted APIs; read from the environment so it never appears on a command line."""
ORT_THREADS_ENV = "DFSERVE_ORT_THREADS"
"""ONNX Runtime intra-op threads inside the `vit` Python backend."""
TORCH_COMPILE_ENV = "DFSERVE_TORCH_COMPILE"
"""torch.compile mode for the torch engine inside the `vit` Python backend (unset: eager)."""
TIMING_CACHE_ENV = "DFSERVE_TRT_TIMING_CACHE"

# --- headers ---------------------------------------------------------------------------------------------
ADMIN_KEY_HEADER = "dfserve-admin-key"
"""The header whose value unlocks Triton's restricted APIs (repository, shared memory, logging, trace)."""
GRPC_RESTRICTED_HEADER_PREFIX = "triton-grpc-protocol-"
"""Triton prefixes restricted-API headers with this on gRPC."""

# --- image files ----------------------------------------------------------------------------------------
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
"""What a folder search picks up (classify, eval, verify, load-test payloads)."""

# --- sample photographs ----------------------------------------------------------------------------------
SAMPLE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "retina",
    "camera",
    "immunohistochemistry",
    "hubble_deep_field",
)
"""The photographs shipped in src/dfserve/photos/ (`dfserve.samples`): the build's parity set, verify, the demo."""

Mode = Literal["file", "pixels"]
"""How a caller sends an image: the encoded file to the ensemble, or preprocessed pixels to the engine."""
MODES: tuple[Mode, ...] = ("file", "pixels")
