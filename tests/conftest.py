"""Shared fixtures: a real checkpoint made at test time, a real build of it, a real Triton server.

Everything here is the real component: the build runs the ONNX export and the parity proof, the server is
the `tritonserver` binary that nvidia-pytriton ships, started by `dfserve.triton.process.TritonServer` on free ports.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfserve.spec.model import Batching, ModelSpec
from tests.checkpoints import make_checkpoint

logging.getLogger("transformers").setLevel(logging.ERROR)

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
TEST_BATCHING = Batching(
    max_batch_size=8,
    preferred_batch_sizes=(4, 8),
    max_queue_delay_us=20_000,
    engine_instances=1,
    preprocess_instances=1,
    preprocess_max_batch_size=8,
)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One logit (served as [real, fake]), CLIP-style shortest edge + centre crop, 32x32 input."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "one-logit", labels="one", policy="shortest_edge")


@pytest.fixture(scope="session")
def built_repo(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository built by the real `dfserve build` pipeline for the embedded server."""
    from dfserve.export.pipeline import BuildOptions, build

    out = tmp_path_factory.mktemp("repo") / "repository"
    build(BuildOptions(out=out, model=str(tiny_checkpoint), batching=TEST_BATCHING, parity_photos=4))
    return out


@pytest.fixture(scope="session")
def built_spec(built_repo: Path) -> ModelSpec:
    return ModelSpec.load(built_repo)


@pytest.fixture(scope="session")
def triton_server(built_repo: Path) -> Iterator[object]:
    """A real tritonserver process serving `built_repo` on free ports, stopped at the end of the session."""
    from dfserve.triton.process import TritonServer

    server = TritonServer(built_repo, http_port=0, grpc_port=0, metrics_port=0, allow_shared_memory=True)
    server.start(timeout=240)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sample_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real photographs shipped by scikit-image, as JPEG files (and one PNG)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    out: dict[str, Path] = {}
    for name in PHOTOS:
        img = Image.fromarray(getattr(data, name)())
        path = folder / (f"{name}.png" if name == "coffee" else f"{name}.jpg")
        img.save(path, quality=90)
        out[name] = path
    return out


def jpeg_bytes(arr: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.hookimpl(tryfirst=True)  # before -m/-k deselect anything
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests import collection

    collection.record(config, items)
    if not _timm_imports():
        skip = pytest.mark.skip(reason="needs timm + torchvision: `make test-timm` runs it (and `make test` runs that)")
        for item in items:
            if item.get_closest_marker("timm") is not None:
                item.add_marker(skip)


def _timm_imports() -> bool:
    """timm imports torchvision at import time, which fails beside the CPU torch wheel of the main environment."""
    try:
        import timm  # noqa: F401
    except Exception:
        return False
    return True


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests import collection

    collection.check(session)
