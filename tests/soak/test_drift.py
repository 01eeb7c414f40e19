"""The soak's arithmetic on given numbers: durations, warm-up, percent change, the fitted slope, the verdict."""

from __future__ import annotations

import pytest

from dfserve.measure.closedloop import Outcome
from dfserve.measure.stats import parse_duration, percentile
from dfserve.soak.drift import drift, fitted_slope, parse_warmup, percent_change
from dfserve.soak.windows import Totals, Window, judge, make_window, totals

MIB = 2**20


@pytest.mark.parametrize(("text", "seconds"), [("600", 600), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("2.5s", 2.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "-5", "0", "m", "nan"])
def test_bad_durations_are_named(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_warmup_as_share_or_duration() -> None:
    assert parse_warmup("10%", 600) == 60
    assert parse_warmup("60s", 600) == 60
    assert parse_warmup("0", 600) == 0
    with pytest.raises(ValueError, match="share"):
        parse_warmup("100%", 600)
    with pytest.raises(ValueError, match="percentage"):
        parse_warmup("x%", 600)


def test_percent_change() -> None:
    assert percent_change(200.0, 210.0) == pytest.approx(5.0)
    assert percent_change(200.0, 190.0) == pytest.approx(-5.0)
    assert percent_change(0.0, 10.0) is None


def test_slope_of_a_line_and_of_noise_around_it() -> None:
    times = [0.0, 10.0, 20.0, 30.0]
    assert fitted_slope(times, [100.0, 102.0, 104.0, 106.0]) == pytest.approx(0.2)
    # the same line with one noisy window: the slope barely moves, the end-to-end change does
    assert fitted_slope(times, [100.0, 102.0, 104.0, 112.0]) == pytest.approx(0.38)
    assert fitted_slope([5.0], [1.0]) is None
    assert fitted_slope([5.0, 5.0], [1.0, 2.0]) is None
    with pytest.raises(ValueError):
        fitted_slope([1.0], [1.0, 2.0])


def test_drift_of_a_leak() -> None:
    # 1000 MiB growing 1 MiB a minute, sampled every 30 s for 10 minutes
    times = [30.0 * i for i in range(21)]
    values = [1000.0 + t / 60 for t in times]
    d = drift(times, values)
    assert d is not None
    assert d.first == 1000.0 and d.last == 1010.0 and d.windows == 21
    assert d.change_pct == pytest.approx(1.0)
    assert d.fitted_change_pct == pytest.approx(1.0)
    assert d.slope_per_hour == pytest.approx(60.0)
    assert drift([], []) is None
    single = drift([1.0], [5.0])
    assert single is not None and single.slope_per_hour is None and single.change_pct == 0.0


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


def _window(index: int, rss_mib: float, *, warmup: bool = False, failed: int = 0) -> Window:
    outcomes = [Outcome(0.0, 0.1)] * 10 + [Outcome(0.0, 0.1, "ServerUnavailableError", "x")] * failed
    from dfserve.measure.processes import ProcessMemory, TreeMemory

    memory = [TreeMemory(alive=True, processes=(ProcessMemory(1, "tritonserver", int(rss_mib * MIB)),))]
    return make_window(index, index * 10.0, index * 10.0 + 10, warmup, outcomes, 0, memory)


def _totals(windows: list[Window]) -> Totals:
    outcomes = [Outcome(0.0, 0.1)] * sum(w.ok for w in windows)
    outcomes += [Outcome(0.0, 0.1, "ServerUnavailableError", "x")] * sum(w.failed for w in windows)
    return totals(windows, outcomes, len(outcomes), 0, 10.0 * len(windows))


def test_verdict_growth_is_measured_after_the_warmup() -> None:
    # the warm-up doubles memory (loading, first batches): not judged; after it, +4 % passes a 5 % bar
    windows = [_window(0, 500, warmup=True), _window(1, 1000), _window(2, 1020), _window(3, 1040)]
    verdict = judge(windows, _totals(windows), 5.0, memory_measured=True)
    assert verdict.passed, verdict.problems
    assert verdict.memory_growth is not None and verdict.memory_growth.change_pct == pytest.approx(4.0)
    failing = judge(windows, _totals(windows), 3.0, memory_measured=True)
    assert not failing.passed
    assert "memory grew 4.0%" in failing.problems[0] and "--max-growth 3%" in failing.problems[0]


def test_verdict_names_failed_requests_and_unmeasured_memory() -> None:
    windows = [_window(0, 1000), _window(1, 1000, failed=2), _window(2, 1000)]
    total = _totals(windows)
    assert total.sent == total.ok + total.failed == 32
    verdict = judge(windows, total, 5.0, memory_measured=False)
    assert verdict.problems == ["2 of 32 requests failed (2 ServerUnavailableError)"]
    assert any("not measured" in n for n in verdict.notes)


def test_hung_requests_count_as_failures() -> None:
    outcomes = [Outcome(0.0, 0.1)] * 5
    total = totals([], outcomes, 7, 2, 10.0)
    assert total.failed == 2 and total.errors == {"Hung": 2} and total.sent == total.ok + total.failed


def test_an_interrupted_run_or_a_failing_ramp_does_not_pass() -> None:
    windows = [_window(0, 1000), _window(1, 1000), _window(2, 1000)]
    assert judge(windows, _totals(windows), 5.0, memory_measured=True).passed
    interrupted = judge(windows, _totals(windows), 5.0, memory_measured=True, interrupted_at=31.4)
    assert interrupted.problems == ["interrupted after 31s: not a full soak"]
    ramp = judge(windows, _totals(windows), 5.0, memory_measured=True, ramp_failed=3)
    assert ramp.problems == ["3 requests failed during the ramp that looked for the knee"]
