"""Locust load shapes: constant users, and a step ramp that finds the knee.

One shape class serves both (`--dfserve-shape constant|step`), because Locust takes the first shape class it
finds in a locustfile and builds it before the command line is parsed; the choice is read at each tick. The
shape also picks the User class of the protocol asked for (`--dfserve-protocol`), so the same locustfile can
hold HTTP and gRPC users without spawning both. In distributed mode the shape runs on the master only.

Importing this module imports Locust, which monkey-patches the process for gevent: only locustfiles and
Locust subprocesses import it.
"""

from __future__ import annotations

from typing import Any

from locust import LoadTestShape

from dfserve.loadtest.options import LoadSettings
from dfserve.loadtest.ramp import StepRamp, write_steps
from dfserve.measure.knee import StepFigures


def classes_for_protocol(user_classes: list[type[Any]], protocol: str) -> list[type[Any]] | None:
    """The User classes of `protocol` among those Locust runs; None (all of them) when the command line named
    classes of another protocol explicitly."""
    chosen = [cls for cls in user_classes if getattr(cls, "protocol", None) == protocol]
    return chosen or None


class DfserveShape(LoadTestShape):
    """`constant`: Locust's --users at --spawn-rate until --run-time. `step`: see `dfserve.loadtest.ramp`."""

    use_common_options = True

    def __init__(self, settings: LoadSettings | None = None) -> None:
        super().__init__()
        self._given = settings
        self._settings = settings
        self._ramp: StepRamp | None = None

    @property
    def settings(self) -> LoadSettings:
        if self._settings is None:
            assert self.runner is not None
            self._settings = LoadSettings.from_namespace(self.runner.environment.parsed_options)
        return self._settings

    def reset_time(self) -> None:
        super().reset_time()
        # a test (re)started from the web UI starts a fresh ramp with the settings the form holds now
        self._ramp = None
        self._settings = self._given

    def tick(self) -> tuple[int, float, list[type[Any]] | None] | None:
        assert self.runner is not None
        env = self.runner.environment
        opts = env.parsed_options
        users = int(getattr(opts, "num_users", None) or 1)
        rate = float(getattr(opts, "spawn_rate", None) or 1)
        run_time = getattr(opts, "run_time", None)
        classes = classes_for_protocol(env.user_classes, self.settings.protocol)
        if run_time and self.get_run_time() >= run_time:
            return None
        if self.settings.shape == "constant":
            return users, rate, classes
        ramp = self._ramp or self._new_ramp(users)
        target = ramp.tick(self.get_run_time(), self.get_current_user_count(), self.runner.stats.total)
        if target is None:
            return None
        return target, rate, classes

    def _new_ramp(self, users: int) -> StepRamp:
        s = self.settings

        def on_step(steps: list[StepFigures]) -> None:
            if s.steps_file:
                write_steps(s.steps_file, steps, s.min_gain, {"mode": s.mode, "protocol": s.protocol, "batch": s.batch})

        self._ramp = StepRamp(
            step_users=s.step_users,
            max_users=s.max_users or users,
            step_time=s.step_time,
            warmup=s.step_warmup,
            min_gain=s.min_gain,
            patience=s.patience,
            on_step=on_step,
        )
        return self._ramp
