"""Load-test and benchmark errors: each names the problem in one line for the person running the command.

LoadtestError
├── PayloadError          no usable images in the folder given, or a payload that cannot be built
├── TargetError           the server cannot be reached or serves no dfserve model
├── LocustRunError        Locust itself failed (bad option, crashed, wrote no statistics)
├── BenchError            a benchmark section could not run
└── SoakError             a soak that cannot start or cannot be judged (bad options, no answer at all)
"""

from __future__ import annotations

from dfserve.errors import DfserveError


class LoadtestError(DfserveError):
    """Base of load-test and benchmark errors."""


class PayloadError(LoadtestError):
    pass


class TargetError(LoadtestError):
    pass


class LocustRunError(LoadtestError):
    pass


class BenchError(LoadtestError):
    pass


class SoakError(LoadtestError):
    """A soak that cannot start or cannot be judged (bad options, an unreachable server)."""
