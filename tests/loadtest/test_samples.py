"""Request-level figures from every request's sample: percentiles on raw latencies, the stop at the end of a run
left out, a caution where a figure rests on few requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dfserve.loadtest.report import points_from_samples
from dfserve.loadtest.samples import MIN_SAMPLES_FOR_P99, SampleWriter, latency_figures, read_samples


def test_writer_and_reader_round_trip_and_skip_a_cut_line(tmp_path: Path) -> None:
    writer = SampleWriter(tmp_path)
    writer(response_time=12.5)
    writer(response_time=30.0, exception=RuntimeError("x"))
    writer.close()
    (tmp_path / "samples-99999.csv").write_text("1700000000.0,5.0,0\n1700000001.0,7")  # killed mid-line
    samples = read_samples(tmp_path)
    assert samples is not None
    assert sorted(samples.latencies_ms.tolist()) == [5.0, 12.5, 30.0]
    assert samples.failed.sum() == 1 and samples.ok_latencies_ms.tolist() in ([5.0, 12.5], [12.5, 5.0])
    assert read_samples(tmp_path / "none") is None


def test_percentiles_are_nearest_rank_on_the_raw_samples_with_a_caution_when_few() -> None:
    many = latency_figures(np.arange(1, 1001, dtype=float))
    assert (many["p50_ms"], many["p90_ms"], many["p99_ms"]) == (500.0, 900.0, 990.0)
    assert "caution" not in many
    few = latency_figures(np.array([10.0, 20.0, 300.0]))
    assert few["p99_ms"] == 300.0 and few["samples"] == 3
    assert f"fewer than {MIN_SAMPLES_FOR_P99}" in few["caution"]


def test_points_per_user_count_leave_out_the_ramp_down(tmp_path: Path) -> None:
    # 2 users for seconds 0-9, 4 users for 10-19, then Locust stops them (2, 0) at 20-21
    history = [(1000.0 + s, 2 if s < 10 else 4 if s < 20 else 2 if s == 20 else 0) for s in range(22)]
    ends, lat = [], []
    for s in range(10):
        for k in range(5):  # 5 req/s at 2 users, ~10 ms
            ends.append(1000.0 + s + 0.1 * k), lat.append(10.0 + k)
    for s in range(10, 20):
        for k in range(8):  # 8 req/s at 4 users, ~20 ms
            ends.append(1000.0 + s + 0.1 * k), lat.append(20.0 + k)
    for k in range(3):  # the last requests, answered slowly while users stop: not a "2 users" figure
        ends.append(1020.2 + 0.1 * k), lat.append(500.0)
    lines = "".join(f"{e},{v},0\n" for e, v in zip(ends, lat, strict=True))
    (tmp_path / "samples-1.csv").write_text(lines)
    samples = read_samples(tmp_path)
    assert samples is not None
    points = {p.users: p for p in points_from_samples(samples, history)}
    assert set(points) == {2, 4}
    assert points[2].rps == 5.0 and points[2].p99_ms == 14.0 and points[2].requests == 50
    assert points[4].rps == 8.0 and points[4].p99_ms == 27.0
    assert all(p.caution for p in points.values())  # 50 and 80 requests: rough p99s, said so
