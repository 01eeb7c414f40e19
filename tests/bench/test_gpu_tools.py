"""The GPU benches' command lines and the parsing of trtexec's and perf_analyzer's output, against output recorded
in the tools' documented formats (tests/bench/data/README.md: the numbers there are not measurements), and the
rules that flag figures instead of reporting them. trtexec and perf_analyzer cannot run here (no GPU, no NVIDIA
containers): `measure` runs against a stand-in executable that checks its arguments and prints the recorded output.
"""

from __future__ import annotations

import base64
import json
import stat
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from dfserve.bench import perf_analyzer, trtexec
from dfserve.bench.figures import check_half, flag_compiled, flag_flat, label
from dfserve.preprocessing import preprocess_bytes
from dfserve.samples import photos
from dfserve.spec.model import ModelSpec
from tests.engines import write_plan_with_record

DATA = Path(__file__).with_name("data")


def test_trtexec_command_line_runs_the_plan_with_a_cuda_graph() -> None:
    cmd = trtexec.command("trtexec", Path("/models/vit/1/model.plan"), "pixels", (3, 384, 384), 64, seconds=10)
    assert cmd == [
        "trtexec",
        "--loadEngine=/models/vit/1/model.plan",
        "--shapes=pixels:64x3x384x384",
        "--useCudaGraph",
        "--useSpinWait",
        "--warmUp=1000",
        "--duration=10",
        "--percentile=50,99",
    ]


def test_trtexec_summary_is_parsed_into_images_per_second() -> None:
    result = trtexec.parse((DATA / "trtexec_b64.txt").read_text(), batch=64)
    assert result.qps == 179.962 and result.images_per_s == pytest.approx(179.962 * 64, abs=0.1)
    assert result.gpu_compute_median_ms == 5.54297 and result.latency_median_ms == 5.81787
    assert result.latency_p99_ms == 5.90332
    assert result.tensorrt == "10.5.0" and result.device == "NVIDIA H100 80GB HBM3"
    with pytest.raises(trtexec.TrtexecError, match=r"trtexec failed: .*Inference set up failed"):
        trtexec.parse((DATA / "trtexec_failed.txt").read_text(), batch=128)
    with pytest.raises(trtexec.TrtexecError, match="no 'Throughput"):
        trtexec.parse("[I] Engine loaded in 0.05 sec.\n", batch=1)


def test_trtexec_measure_checks_the_profile_and_runs_each_batch(tmp_path: Path) -> None:
    plan = tmp_path / "vit" / "1" / "model.plan"
    write_plan_with_record(plan)
    recorded = (DATA / "trtexec_b64.txt").read_text()
    fake = tmp_path / "trtexec"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys, re\n"
        "args = sys.argv[1:]\n"
        "assert '--useCudaGraph' in args and any(a.startswith('--loadEngine=') for a in args), args\n"
        "batch = re.search(r'--shapes=pixels:(\\d+)x', ' '.join(args)).group(1)\n"
        f"text = {recorded!r}\n"
        "print(text.replace('179.962 qps', f'{1000 / int(batch):.3f} qps' if batch != '64' else '179.962 qps'))\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    result = trtexec.measure(plan, [1, 32], seconds=1, trtexec=str(fake))
    assert [p["batch"] for p in result["points"]] == [1, 32]
    assert result["points"][0]["images_per_s"] == 1000.0  # qps × batch
    assert result["label"].startswith("TensorRT fp16, NVIDIA H100 80GB HBM3")
    assert result["flags"] == [] or "grow only" in result["flags"][0]
    with pytest.raises(trtexec.TrtexecError, match=r"outside the engine's profile 1\.\.32"):
        trtexec.measure(plan, [64], trtexec=str(fake))


def test_perf_analyzer_output_is_parsed_per_concurrency() -> None:
    [detector] = perf_analyzer.parse((DATA / "perf_analyzer_detector_c16.txt").read_text(), "detector")
    assert (detector.concurrency, detector.infer_per_s, detector.latency_p99_us) == (16, 1117.6, 19960.0)
    assert detector.latency_p50_us == 14102.0 and detector.latency_avg_us == 14311.0
    assert detector.average_batch == 1.0  # the ensemble's own counts: it runs every request alone
    [composed] = perf_analyzer.parse((DATA / "perf_analyzer_detector_c16.txt").read_text(), "detector", "vit")
    assert composed.average_batch == pytest.approx(16772 / 1291, abs=0.01)  # the batches vit formed under it
    [vit] = perf_analyzer.parse((DATA / "perf_analyzer_vit_c64.txt").read_text(), "vit")
    assert vit.infer_per_s == 6466.6 and vit.average_batch == pytest.approx(97031 / 2381, abs=0.01)
    summary_only = (
        "Inferences/Second vs. Client Average Batch Latency\n"
        "Concurrency: 2, throughput: 10.5 infer/sec, latency 190000 usec\n"
    )
    assert perf_analyzer.parse(summary_only, "vit")[0].infer_per_s == 10.5
    with pytest.raises(perf_analyzer.PerfAnalyzerError, match="Failed to obtain stable measurement"):
        perf_analyzer.parse((DATA / "perf_analyzer_failed.txt").read_text(), "vit")


@pytest.mark.slow
def test_perf_analyzer_inputs_are_real_jpegs_and_their_pixels(built_repo: Path, tmp_path: Path) -> None:
    spec = ModelSpec.load(built_repo)
    files = [data for _, data in photos()][:3]
    detector = perf_analyzer.input_data(spec.models.ensemble, spec, files)
    for entry, data in zip(detector["data"], files, strict=True):  # BYTES: 4-byte little-endian length, then the file
        assert base64.b64decode(entry["image"]["b64"]) == struct.pack("<I", len(data)) + data
    vit = perf_analyzer.input_data(spec.models.engine, spec, files)
    first = vit["data"][0]["pixels"]
    h, w = spec.input_hw
    expected = preprocess_bytes(files[0], spec.preprocessing, mode=spec.resize_mode)
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(first["b64"]), np.uint8).reshape(3, h, w), expected)
    data_path = tmp_path / "vit.json"
    data_path.write_text(json.dumps(vit))
    cmd = perf_analyzer.command("perf_analyzer", "detector", "triton:8001", data_path, spec, 16)
    assert cmd[:9] == ["perf_analyzer", "-m", "detector", "-u", "triton:8001", "-i", "grpc", "-b", "1"]
    assert cmd[cmd.index("--concurrency-range") + 1] == "16:16"
    assert cmd[cmd.index("--input-data") + 1] == str(data_path)
    with pytest.raises(ValueError, match="no input data for model 'other'"):
        perf_analyzer.input_data("other", spec, files)


def test_broken_figures_are_flagged_not_reported() -> None:
    # the H200 run (docs/benchmarks.md): compiled flat at ~2,100 while eager grew to 7,247
    eager = {1: 158, 8: 1899, 32: 6542, 128: 7247}
    compiled = {1: 658, 8: 1793, 32: 2161, 128: 2289}
    [flag] = flag_compiled(compiled, eager)
    assert "recompiles or graph breaks" in flag and "not reported" in flag
    assert flag_compiled({8: 1800, 32: 6000, 128: 7000}, eager) == []  # a compiled engine that scales
    assert flag_flat(list(eager.values()), list(eager), "eager") == []
    [flat] = flag_flat([900, 950, 960], [1, 16, 64], "TensorRT")
    assert "grow only 1.07x from batch 1 to 64" in flat
    with pytest.raises(ValueError, match="FP16 is measured on CUDA devices only"):
        check_half("cpu", half=True)
    check_half("cuda:0", half=True)
    check_half("cpu", half=False)
    assert label("PyTorch eager", "fp32", "cpu", random_weights=True) == "PyTorch eager fp32, cpu, random weights"
