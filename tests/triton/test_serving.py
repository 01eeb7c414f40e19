"""The served repository on a real tritonserver: parity with the Transformers pipeline through the ensemble,
per-request errors inside shared dynamic batches, batching statistics and metrics."""

from __future__ import annotations

import io
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from dfserve.export.checkpoint import load_model, resolve
from dfserve.export.fidelity import bar_for, compare
from dfserve.export.parity import reference_scores, write_parity_images
from dfserve.export.pipeline import BuildOptions, build
from dfserve.spec.model import ModelSpec
from tests.checkpoints import make_checkpoint
from tests.conftest import TEST_BATCHING

pytestmark = pytest.mark.slow


def _image_input(module: Any, data: bytes) -> Any:
    inp = module.InferInput("image", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[data]], dtype=object))
    return inp


def _detect(client: httpclient.InferenceServerClient, data: bytes) -> np.ndarray:
    return client.infer("detector", [_image_input(httpclient, data)]).as_numpy("scores")[0]


def _bad_inputs() -> dict[str, tuple[bytes, str]]:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, "JPEG")
    jpeg = buf.getvalue()
    bomb = io.BytesIO()
    Image.new("1", (10_000, 6_000)).save(bomb, "PNG")  # 60 Mpx in ~8 KB: above the 50 Mpx limit
    big = jpeg + b"\x00" * (32 * 1024 * 1024)
    strip = io.BytesIO()
    Image.new("L", (1, 5_000_000), 128).save(strip, "PNG", optimize=True)  # ~20 KB that once cost 7.7 GB
    return {
        "extreme_aspect": (strip.getvalue(), "aspect ratio of 5000000:1"),
        "empty": (b"", "empty image"),
        "truncated": (jpeg[: len(jpeg) // 2], "truncated or corrupt"),
        "corrupt": (jpeg[:200] + b"\x13" * 300 + jpeg[500:], "corrupt"),
        "not_an_image": (b"%PDF-1.4 definitely not a picture", "not an image"),
        "bomb": (bomb.getvalue(), "refused before decoding"),
        "too_large": (big, "above the limit"),
    }


def test_bad_requests_fail_alone_inside_shared_batches(triton_server: Any, sample_images: dict[str, Path]) -> None:
    """Good and bad requests are sent concurrently so they share dynamic batches; each bad one gets its own
    400 naming its problem, each good one its correct scores, and the server stays ready."""
    client = httpclient.InferenceServerClient(triton_server.http_url, concurrency=4)
    good = {name: path.read_bytes() for name, path in sample_images.items()}
    expected = {name: _detect(client, data) for name, data in good.items()}
    bad = _bad_inputs()
    jobs: list[tuple[str, str, bytes]] = [("good", n, d) for n, d in good.items()] * 4
    jobs += [("bad", n, d) for n, (d, _) in bad.items()] * 2
    order = np.random.default_rng(0).permutation(len(jobs))

    def call(job: tuple[str, str, bytes]) -> tuple[str, str, Any]:
        kind, name, data = job
        local = httpclient.InferenceServerClient(triton_server.http_url, network_timeout=120)
        try:
            return kind, name, _detect(local, data)
        except InferenceServerException as exc:
            return kind, name, exc
        finally:
            local.close()

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(call, [jobs[i] for i in order]))

    for kind, name, result in results:
        if kind == "good":
            assert isinstance(result, np.ndarray), f"{name}: {result}"
            np.testing.assert_allclose(result, expected[name], atol=1e-6)
        else:
            assert isinstance(result, InferenceServerException), f"{name} was accepted"
            assert result.status() == "400", f"{name}: {result.status()} {result}"
            assert bad[name][1] in str(result), f"{name}: {result}"
    assert client.is_server_ready()


def test_grpc_reports_invalid_argument(triton_server: Any) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    with pytest.raises(InferenceServerException) as info:
        client.infer("detector", [_image_input(grpcclient, b"GIF89a-broken")])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "not an image" in str(info.value)


@pytest.mark.parametrize(
    ("dtype", "shape", "message"),
    [("FP32", [1, 3, 32, 32], "data-type"), ("UINT8", [1, 3, 16, 32], "shape"), ("UINT8", [1, 32, 32, 3], "shape")],
)
def test_engine_rejects_wrong_tensors(triton_server: Any, dtype: str, shape: list[int], message: str) -> None:
    client = httpclient.InferenceServerClient(triton_server.http_url)
    inp = httpclient.InferInput("pixels", shape, dtype)
    inp.set_data_from_numpy(np.zeros(shape, dtype=np.float32 if dtype == "FP32" else np.uint8))
    with pytest.raises(InferenceServerException) as info:
        client.infer("vit", [inp])
    assert info.value.status() == "400" and message in str(info.value)
    assert client.is_server_ready()


def test_classification_extension_returns_named_labels(triton_server: Any, sample_images: dict[str, Path]) -> None:
    client = httpclient.InferenceServerClient(triton_server.http_url)
    out = httpclient.InferRequestedOutput("scores", class_count=2)
    result = client.infer("detector", [_image_input(httpclient, sample_images["chelsea"].read_bytes())], outputs=[out])
    entries = [e.decode().split(":") for e in result.as_numpy("scores")[0]]
    assert {name for _, _, name in entries} == {"real", "fake"}
    assert abs(sum(float(score) for score, _, _ in entries) - 1.0) < 1e-5


def test_requests_are_batched_and_metrics_answer(triton_server: Any, sample_images: dict[str, Path]) -> None:
    client = httpclient.InferenceServerClient(triton_server.http_url)
    before = client.get_inference_statistics("vit")["model_stats"][0]
    data = sample_images["astronaut"].read_bytes()

    def call(_: int) -> None:
        local = httpclient.InferenceServerClient(triton_server.http_url)
        _detect(local, data)
        local.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(call, range(64)))
    deadline = time.monotonic() + 10
    while True:  # Triton updates the statistics just after it answers: the last response may be ahead of them
        after = client.get_inference_statistics("vit")["model_stats"][0]
        if after["inference_count"] - before["inference_count"] >= 64 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 64 and executions < inferences, (inferences, executions)

    with urllib.request.urlopen(f"http://{triton_server.metrics_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert 'nv_inference_request_success{model="detector"' in text
    assert 'nv_inference_exec_count{model="vit"' in text


@pytest.fixture(
    scope="module",
    params=[
        ("one", "shortest_edge", 1.0),
        ("two", "fixed", 1.0),
        ("five", "shortest_edge", 1.0),
        ("one", "shortest_edge", 30.0),  # a head 30x more sensitive: scores spread over (0, 1)
        ("five", "fixed", 10.0),
    ],
    ids=lambda p: f"{p[0]}-{p[1]}-x{p[2]:g}",
)
def served_checkpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Any, float]]:
    from dfserve.triton.process import TritonServer

    labels, policy, head_scale = request.param
    root = tmp_path_factory.mktemp(f"{labels}-{policy}")
    folder = make_checkpoint(root / "ck", labels=labels, policy=policy, head_scale=head_scale)
    build(BuildOptions(out=root / "repo", model=str(folder), batching=TEST_BATCHING, parity_photos=1))
    with TritonServer(root / "repo", http_port=0, grpc_port=0, metrics_port=0) as server:
        yield folder, server, head_scale


def _detect_grpc(client: grpcclient.InferenceServerClient, data: bytes) -> np.ndarray:
    return client.infer("detector", [_image_input(grpcclient, data)]).as_numpy("scores")[0]


def test_detector_matches_the_transformers_pipeline(
    served_checkpoint: tuple[Path, Any, float], tmp_path: Path, sample_images: dict[str, Path]
) -> None:
    """Real photographs and the awkward cases (grey, CMYK, 16-bit, palette, RGBA, EXIF-rotated) through the
    served ensemble of a default (exact) build equal the Transformers pipeline on the original checkpoint, over
    HTTP and gRPC, also for heads sensitive enough that a pixel of resize drift would show."""
    folder, server, head_scale = served_checkpoint
    spec = ModelSpec.load(server.repository)
    assert spec.resize_mode == "exact"
    paths = [*sample_images.values(), *write_parity_images(tmp_path, photos=0)]
    ckpt = resolve(str(folder))
    reference = reference_scores(ckpt, load_model(ckpt), spec, paths)
    http = httpclient.InferenceServerClient(server.http_url)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    for served in (
        np.stack([_detect(http, p.read_bytes()) for p in paths]),
        np.stack([_detect_grpc(grpc, p.read_bytes()) for p in paths]),
    ):
        assert served.shape == reference.shape == (len(paths), len(spec.labels.names))
        drift = compare(reference, served, spec.labels, [p.name for p in paths])
        assert drift.passes(bar_for("fp32")), drift
    if head_scale > 1:  # the sensitive heads really spread the scores
        assert float(np.ptp(reference, axis=0).max()) > 0.2, reference
