"""The torch engine (`dfserve build --engine torch`) on a real tritonserver: the build's parity gate on every
test checkpoint, the served ensemble equal to the Transformers pipeline over HTTP and gRPC, and bad requests
failing alone in shared batches. On this CPU machine the engine runs on the CPU; the CUDA path is the same code
with another device (`python -m dfserve.bench.gpu` measures it on a GPU host)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from dfserve.errors import ParityError
from dfserve.export.checkpoint import load_model, resolve
from dfserve.export.parity import reference_scores, write_parity_images
from dfserve.export.pipeline import BuildOptions, build
from dfserve.spec.model import ModelSpec
from dfserve.spec.names import ONNX_FILENAME, PYTHON_FILENAME
from tests.checkpoints import make_checkpoint
from tests.conftest import TEST_BATCHING
from tests.triton.test_serving import _bad_inputs, _image_input

pytestmark = pytest.mark.slow

CHECKPOINTS = [("one", "shortest_edge"), ("two", "fixed"), ("five", "shortest_edge")]


def _build(root: Path, labels: str, policy: str, precision: str = "fp32") -> tuple[Path, Path]:
    folder = make_checkpoint(root / "ck", labels=labels, policy=policy)  # type: ignore[arg-type]
    repo = root / "repo"
    build(
        BuildOptions(
            out=repo, model=str(folder), batching=TEST_BATCHING, parity_photos=2, engine="torch", precision=precision
        )  # type: ignore[arg-type]
    )
    return folder, repo


@pytest.mark.parametrize(("labels", "policy"), CHECKPOINTS)
def test_torch_build_passes_parity_and_carries_its_weights(labels: str, policy: str, tmp_path: Path) -> None:
    folder, repo = _build(tmp_path, labels, policy)
    spec = ModelSpec.load(repo)
    assert (spec.engine, spec.precision) == ("torch", "fp32")
    report = json.loads((repo / "build_report.json").read_text())
    assert report["parity"]["max_abs_diff"] <= 1e-4 and report["parity"]["agreement"] == 1.0
    version = repo / "vit" / "1"
    assert {"config.json", "model.safetensors", PYTHON_FILENAME} <= {p.name for p in version.iterdir()}
    assert not (version / ONNX_FILENAME).exists()
    assert "dfserve.repository.backends.torch_engine" in (version / PYTHON_FILENAME).read_text()
    # the repository does not depend on the checkpoint folder
    assert (version / "model.safetensors").read_bytes() != b"" and str(folder) not in (
        version / "config.json"
    ).read_text()


def test_fp16_torch_build_goes_through_the_fp16_bar(tmp_path: Path) -> None:
    _, repo = _build(tmp_path, "five", "shortest_edge", precision="fp16")
    report = json.loads((repo / "build_report.json").read_text())
    assert report["precision"] == "fp16" and report["parity"]["bar"]["max_abs_diff"] == 1e-2
    assert report["parity"]["max_abs_diff"] <= 1e-2


def test_parity_gate_refuses_an_engine_beyond_its_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bar the engine cannot meet stops the build with the figures, before any repository is written."""
    from dfserve.export.policy import FIDELITY_BARS, FidelityBar

    monkeypatch.setitem(FIDELITY_BARS, "fp32", FidelityBar(max_abs_diff=0.0, min_agreement=1.0))
    with pytest.raises(ParityError, match="torch engine"):
        _build(tmp_path, "one", "shortest_edge")
    assert not (tmp_path / "repo" / "vit").exists()


@pytest.fixture(scope="module")
def torch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    from dfserve.triton.process import TritonServer

    folder, repo = _build(tmp_path_factory.mktemp("torch-served"), "one", "shortest_edge")
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0) as server:
        yield folder, server


def test_served_torch_engine_equals_the_pipeline_over_http_and_grpc(
    torch_server: tuple[Path, Any], tmp_path: Path, sample_images: dict[str, Path]
) -> None:
    folder, server = torch_server
    spec = ModelSpec.load(server.repository)
    paths = [*sample_images.values(), *write_parity_images(tmp_path, photos=0)]
    ckpt = resolve(str(folder))
    reference = reference_scores(ckpt, load_model(ckpt), spec, paths)
    http = httpclient.InferenceServerClient(server.http_url)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    for module, client in ((httpclient, http), (grpcclient, grpc)):
        served = np.stack(
            [client.infer("detector", [_image_input(module, p.read_bytes())]).as_numpy("scores")[0] for p in paths]
        )
        assert served.shape == reference.shape
        assert float(np.abs(served - reference).max()) <= 1e-4, module.__name__


def test_bad_requests_fail_alone_with_the_torch_engine(
    torch_server: tuple[Path, Any], sample_images: dict[str, Path]
) -> None:
    _, server = torch_server
    client = httpclient.InferenceServerClient(server.http_url)
    good = {n: p.read_bytes() for n, p in sample_images.items()}
    expected = {
        n: client.infer("detector", [_image_input(httpclient, d)]).as_numpy("scores")[0] for n, d in good.items()
    }
    bad = _bad_inputs()
    jobs = [("good", n, d) for n, d in good.items()] * 3 + [("bad", n, d) for n, (d, _) in bad.items()]

    def call(job: tuple[str, str, bytes]) -> tuple[str, str, Any]:
        kind, name, data = job
        local = httpclient.InferenceServerClient(server.http_url, network_timeout=120)
        try:
            return kind, name, local.infer("detector", [_image_input(httpclient, data)]).as_numpy("scores")[0]
        except InferenceServerException as exc:
            return kind, name, exc
        finally:
            local.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, jobs))
    for kind, name, result in results:
        if kind == "good":
            assert isinstance(result, np.ndarray), f"{name}: {result}"
            np.testing.assert_allclose(result, expected[name], atol=1e-6)
        else:
            assert isinstance(result, InferenceServerException) and result.status() == "400", name
            assert bad[name][1] in str(result), f"{name}: {result}"
    assert client.is_server_ready()
