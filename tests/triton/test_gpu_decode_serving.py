"""`dfserve build --engine torch --decode gpu` on a real tritonserver: the build measures the GPU decode path's
drift and records it, the served `detector` (one batched decode + engine model) answers within the decode bar of
the Transformers pipeline, bad files fail alone with a 400 inside shared batches, and `dfserve verify` holds the
deployment to the decode bar. On this CPU machine the decoder runs with device `cpu` (the same code as on a GPU;
without torchvision, Pillow decodes the JPEGs, see dfserve.engine.gpu_decode)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from dfserve.cli import main
from dfserve.errors import ParityError
from dfserve.export.checkpoint import load_model, resolve
from dfserve.export.parity import reference_scores, write_parity_images
from dfserve.export.pipeline import BuildOptions, build
from dfserve.export.policy import FIDELITY_BARS, FidelityBar
from dfserve.repository.configs import read_config
from dfserve.spec.model import SPEC_FORMAT_VERSION, ModelSpec
from tests.checkpoints import make_checkpoint
from tests.conftest import TEST_BATCHING
from tests.triton.test_serving import _bad_inputs, _image_input


def _build(root: Path, head_scale: float = 20.0) -> tuple[Path, Path]:
    folder = make_checkpoint(root / "ck", labels="one", policy="shortest_edge", head_scale=head_scale)
    repo = root / "repo"
    build(
        BuildOptions(out=repo, model=str(folder), batching=TEST_BATCHING, parity_photos=2, engine="torch", decode="gpu")
    )
    return folder, repo


def test_decode_gpu_with_the_onnx_engine_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["build", "--model", str(tmp_path / "nowhere"), "--decode", "gpu", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "--decode gpu needs a GPU engine" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_decode_gpu_with_tensorrt_is_refused_until_the_dali_wiring_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["build", "--model", str(tmp_path), "--engine", "tensorrt", "--decode", "gpu", "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "DALI" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_decode_gate_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FIDELITY_BARS, "decode_gpu", FidelityBar(max_abs_diff=0.0, min_agreement=1.0))
    with pytest.raises(ParityError, match="--decode gpu is too far"):
        _build(tmp_path)
    assert not (tmp_path / "repo" / "detector").exists()


@pytest.fixture(scope="module")
def decode_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    from dfserve.triton.process import TritonServer

    folder, repo = _build(tmp_path_factory.mktemp("gpu-decode"))
    with TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0) as server:
        yield folder, server


@pytest.mark.slow
def test_build_records_the_decode_drift_and_writes_one_detector_model(decode_server: tuple[Path, Any]) -> None:
    _, server = decode_server
    repo = Path(server.repository)
    spec = ModelSpec.load(repo)
    assert (spec.decode, spec.engine, spec.format_version) == ("gpu", "torch", SPEC_FORMAT_VERSION)
    report = json.loads((repo / "build_report.json").read_text())
    entry = report["decode_gpu"]
    assert report["decode"] == "gpu" and entry["device"] == "cpu" and entry["passes"]
    assert entry["max_abs_diff"] <= 1e-2 and entry["flips"] == 0 and entry["agreement"] == 1.0
    assert "photo_astronaut.jpg" in entry["decoded_on_device"] and "webp_333x222.webp" in entry["fallback_to_cpu"]
    detector = read_config(repo / "detector")
    assert detector.backend == "python" and detector.output[0].label_filename == "labels.txt"
    assert read_config(repo / "vit").input[0].name == "pixels"  # the pixels entry point stays for the SDK


@pytest.mark.slow
def test_served_detector_is_within_the_decode_bar_of_the_pipeline(
    decode_server: tuple[Path, Any], tmp_path: Path, sample_images: dict[str, Path]
) -> None:
    folder, server = decode_server
    spec = ModelSpec.load(server.repository)
    paths = [*sample_images.values(), *write_parity_images(tmp_path, photos=0)]
    ckpt = resolve(str(folder))
    reference = reference_scores(ckpt, load_model(ckpt), spec, paths)
    client = httpclient.InferenceServerClient(server.http_url)
    served = np.stack(
        [client.infer("detector", [_image_input(httpclient, p.read_bytes())]).as_numpy("scores")[0] for p in paths]
    )
    assert float(np.abs(served - reference).max()) <= FIDELITY_BARS["decode_gpu"].max_abs_diff
    assert ((served[:, 1] >= 0.5) == (reference[:, 1] >= 0.5)).all()
    assert float(reference[:, 1].std()) > 0.05  # a head that spreads scores, so drift would show
    # the classification extension answers with the labels
    out = httpclient.InferRequestedOutput("scores", class_count=1)
    top = client.infer("detector", [_image_input(httpclient, paths[0].read_bytes())], outputs=[out]).as_numpy("scores")
    assert top[0][0].decode().split(":")[-1] in spec.labels.names


@pytest.mark.slow
def test_bad_files_fail_alone_inside_gpu_batches(
    decode_server: tuple[Path, Any], sample_images: dict[str, Path]
) -> None:
    _, server = decode_server
    client = httpclient.InferenceServerClient(server.http_url)
    good = {n: p.read_bytes() for n, p in sample_images.items()}
    expected = {
        n: client.infer("detector", [_image_input(httpclient, d)]).as_numpy("scores")[0] for n, d in good.items()
    }
    bad = _bad_inputs()
    jobs = [("good", n, d) for n, d in good.items()] * 3 + [("bad", n, d) for n, (d, _) in bad.items()]
    order = np.random.default_rng(0).permutation(len(jobs))

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
        results = list(pool.map(call, [jobs[i] for i in order]))
    for kind, name, result in results:
        if kind == "good":
            assert isinstance(result, np.ndarray), f"{name}: {result}"
            np.testing.assert_allclose(result, expected[name], atol=1e-5)
        else:
            assert isinstance(result, InferenceServerException) and result.status() == "400", name
            assert bad[name][1] in str(result), f"{name}: {result}"
    # one request carrying a good and a bad file is refused naming the bad item; the server stays ready
    inp = httpclient.InferInput("image", [2, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[next(iter(good.values()))], [bad["not_an_image"][0]]], dtype=object))
    with pytest.raises(InferenceServerException, match=r"not an image.*\(batch item 1\)"):
        client.infer("detector", [inp])
    assert client.is_server_ready()


@pytest.mark.slow
def test_verify_holds_a_gpu_decoding_deployment_to_the_decode_bar(decode_server: tuple[Path, Any]) -> None:
    from dfserve.quality.verify import verify

    folder, server = decode_server
    result = verify(server.http_url, str(folder))
    assert result.bar_name == "fp32+decode_gpu" and result.bar["max_abs_diff"] == 1e-2
    assert result.passed, result.problems
