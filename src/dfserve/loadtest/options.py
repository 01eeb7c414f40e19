"""The locustfile's own settings, declared once: as Locust custom arguments, as environment variables, and as
the command-line flags `dfserve loadtest` passes to the Locust subprocess.

This module does not import Locust (importing Locust monkey-patches the whole process for gevent), so the
`dfserve` CLI and the tests can use it freely.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Any, Literal

from dfserve.errors import LoadtestError
from dfserve.spec.endpoints import PROTOCOLS, Protocol
from dfserve.spec.names import MODES, Mode

Shape = Literal["constant", "step"]
SHAPES: tuple[Shape, ...] = ("constant", "step")


@dataclass(frozen=True)
class LoadSettings:
    """What the Locust users and the load shape need beyond Locust's own options."""

    mode: Mode = "file"
    """file: encoded images to the ensemble; pixels: preprocessed uint8 tensors to the engine."""
    protocol: Protocol = "http"
    images: str = ""
    """Folder of image files; empty: generated images at realistic sizes and JPEG qualities."""
    image_count: int = 8
    """How many images to generate when no folder is given."""
    batch: int = 1
    """Images per request (the server's dynamic batcher merges requests on its own)."""
    model: str = ""
    """Model whose config carries the spec; empty: the names a fresh build uses, then the repository index."""
    timeout: float = 60.0
    """Seconds a request may take before it counts as a failure."""
    think_time: float = 0.0
    """Seconds each user waits between requests (0: closed loop, each user sends back to back)."""
    shape: Shape = "constant"
    step_users: int = 2
    """Users added at each step of the step ramp."""
    step_time: float = 15.0
    """Seconds each step lasts once its users are all running."""
    step_warmup: float = 3.0
    """Seconds at the start of a step that are not measured (queues settle)."""
    max_users: int = 0
    """Ceiling of the step ramp; 0: Locust's --users."""
    min_gain: float = 0.25
    """A step 'grows' when throughput rises by at least this fraction of the relative rise in users."""
    patience: int = 2
    """The ramp stops after this many steps in a row that do not grow."""
    steps_file: str = ""
    """Where the step ramp writes its per-step figures (JSON); empty: nowhere."""
    samples_dir: str = ""
    """Where each Locust process writes every request's end time, latency and outcome (`loadtest.samples`);
    empty: nowhere."""

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.protocol not in PROTOCOLS:
            problems.append(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.shape not in SHAPES:
            problems.append(f"shape must be one of {', '.join(SHAPES)}, got {self.shape!r}")
        for name in ("image_count", "batch", "step_users", "patience"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("timeout", "step_time"):
            if float(getattr(self, name)) <= 0:
                problems.append(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("think_time", "step_warmup", "min_gain"):
            if float(getattr(self, name)) < 0:
                problems.append(f"{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if self.max_users < 0:
            problems.append(f"max-users must not be negative, got {self.max_users}")
        if self.step_warmup >= self.step_time:
            problems.append(f"step-warmup ({self.step_warmup}s) must be shorter than step-time ({self.step_time}s)")
        if problems:
            raise LoadtestError("; ".join(problems))

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace | None) -> LoadSettings:
        """Read the `dfserve_*` attributes Locust parsed (missing ones keep their defaults)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = getattr(ns, f"dfserve_{f.name}", None) if ns is not None else None
            if value is not None:
                values[f.name] = value
        return cls(**values)

    def to_locust_args(self) -> list[str]:
        """The flags that reproduce these settings on a Locust command line."""
        args: list[str] = []
        for f in fields(self):
            args += [_flag(f.name), str(getattr(self, f.name))]
        return args


def _flag(name: str) -> str:
    return "--dfserve-" + name.replace("_", "-")


def _env(name: str) -> str:
    return "DFSERVE_" + name.upper()


_CHOICES: dict[str, tuple[str, ...]] = {"mode": MODES, "protocol": PROTOCOLS, "shape": SHAPES}
_HELP: dict[str, str] = {
    "mode": "file: image files to the ensemble; pixels: uint8 tensors to the engine",
    "protocol": "http or grpc (the User class of that protocol is spawned)",
    "images": "folder of images to send (default: generated photo-like JPEGs)",
    "image_count": "number of images to generate when no folder is given",
    "batch": "images per request",
    "model": "model whose config carries the dfserve spec (default: found automatically)",
    "timeout": "request timeout in seconds (a slower answer is a failure)",
    "think_time": "seconds each user waits between requests (0: closed loop)",
    "shape": "constant: --users for --run-time; step: add --dfserve-step-users every --dfserve-step-time",
    "step_users": "users added per step of the ramp",
    "step_time": "seconds per step (measured after its users are running)",
    "step_warmup": "seconds at the start of each step left out of its figures",
    "max_users": "ceiling of the ramp (0: --users)",
    "min_gain": "a step grows when throughput rises by this fraction of the rise in users",
    "patience": "stop the ramp after this many steps that do not grow",
    "steps_file": "write the ramp's per-step figures to this JSON file",
    "samples_dir": "write every request's end time, latency and outcome to CSV files in this folder",
}


def add_locust_arguments(parser: Any) -> None:
    """Register the settings on Locust's argument parser (`@events.init_command_line_parser`).

    Each also reads an environment variable (DFSERVE_MODE, DFSERVE_PROTOCOL, DFSERVE_IMAGES, DFSERVE_SHAPE, ...),
    which is how a docker-compose service or a Kubernetes pod sets them.
    """
    defaults = LoadSettings()
    for f in fields(LoadSettings):
        default = getattr(defaults, f.name)
        kwargs: dict[str, Any] = {
            "default": default,
            "type": type(default) if not isinstance(default, str) else str,
            "help": _HELP[f.name],
            "env_var": _env(f.name),
            "include_in_web_ui": f.name in ("mode", "batch", "images"),
        }
        if f.name in _CHOICES:
            kwargs["choices"] = _CHOICES[f.name]
        parser.add_argument(_flag(f.name), **kwargs)


__all__ = ["SHAPES", "LoadSettings", "Shape", "add_locust_arguments"]
