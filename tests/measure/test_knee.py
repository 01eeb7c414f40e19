"""The knee of a step ramp and the ramp's state machine, on figures shaped like real closed-loop runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dfserve.loadtest.ramp import StepRamp, read_steps, write_steps
from dfserve.measure.knee import StepFigures, find_knee, grows, steps_past_knee
from dfserve.measure.stats import histogram_percentile


def step(users: int, rps: float, p50: float = 10.0) -> StepFigures:
    return StepFigures(users, 10.0, int(rps * 10), 0, rps, p50, p50 * 1.5, p50 * 2)


def test_knee_is_where_throughput_stops_growing() -> None:
    # latency flat and throughput proportional up to 6 users, then throughput flat and latency rising
    ramp = [step(2, 20, 100), step(4, 40, 100), step(6, 58, 103), step(8, 60, 133), step(10, 61, 164)]
    knee = find_knee(ramp)
    assert knee is not None and knee.users == 6 and knee.saturated
    assert steps_past_knee(ramp) == 2


def test_one_noisy_step_is_not_taken_for_the_knee() -> None:
    ramp = [step(2, 20), step(4, 25), step(6, 60), step(8, 62)]  # 4 users was a bad sample
    knee = find_knee(ramp)
    assert knee is not None and knee.users == 6


def test_a_ramp_that_never_saturates_says_so() -> None:
    knee = find_knee([step(2, 20), step(4, 40), step(6, 60)])
    assert knee is not None and knee.users == 6 and not knee.saturated
    assert steps_past_knee([step(2, 20), step(4, 40)]) == 0


def test_no_throughput_no_knee() -> None:
    assert find_knee([]) is None
    assert find_knee([StepFigures(2, 10, 0, 0, 0.0, 0, 0, 0)]) is None


def test_growth_is_relative_to_the_rise_in_users() -> None:
    assert grows(step(4, 40), step(6, 46))  # +50 % users, +15 % throughput >= 0.25 * 50 %
    assert not grows(step(4, 40), step(6, 44))  # +10 % < 12.5 %


def test_percentile_of_a_histogram() -> None:
    hist = {10: 50, 20: 40, 100: 10}
    assert histogram_percentile(hist, 0.5) == 10
    assert histogram_percentile(hist, 0.9) == 20
    assert histogram_percentile(hist, 0.99) == 100
    assert histogram_percentile({}, 0.5) == 0.0


@dataclass
class Totals:
    """The three cumulative figures the ramp reads from Locust's `stats.total`."""

    num_requests: int = 0
    num_failures: int = 0
    response_times: dict[int, int] = field(default_factory=dict)

    def add(self, n: int, ms: int) -> None:
        self.num_requests += n
        self.response_times[ms] = self.response_times.get(ms, 0) + n


def test_step_ramp_measures_each_step_after_its_users_run_and_stops_past_the_knee(tmp_path: Path) -> None:
    written: list[int] = []
    ramp = StepRamp(
        step_users=2, max_users=20, step_time=5, warmup=1, patience=1, on_step=lambda s: written.append(len(s))
    )
    stats = Totals()
    now, users, targets = 0.0, 0, []
    capacity = 60.0  # requests/s the fake server sustains: users/0.1 s until then
    while (target := ramp.tick(now, users, stats)) is not None:
        targets.append(target)
        users = min(users + 1, target)  # spawning one user per second
        rate = min(users / 0.1, capacity)
        stats.add(int(rate), int(1000 * users / rate))
        now += 1.0
    assert [s.users for s in ramp.steps] == [2, 4, 6, 8]
    assert ramp.steps[0].rps == pytest.approx(20, rel=0.01) and ramp.steps[-1].rps == pytest.approx(60, rel=0.01)
    assert ramp.steps[0].p50_ms == 100 and ramp.steps[-1].p50_ms == 133
    assert written == [1, 2, 3, 4]
    assert 2 in targets and 8 in targets and 10 not in targets
    write_steps(tmp_path / "steps.json", ramp.steps, 0.25)
    assert read_steps(tmp_path / "steps.json") == ramp.steps
    assert json.loads((tmp_path / "steps.json").read_text())["knee"]["users"] == 6


def test_step_ramp_refuses_a_warmup_longer_than_the_step() -> None:
    with pytest.raises(ValueError, match="warm-up"):
        StepRamp(step_users=1, max_users=2, step_time=2, warmup=2)
