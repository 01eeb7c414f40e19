"""dfserve's locustfile: Triton users over HTTP and gRPC, and the constant / step-ramp load shape.

Run it with plain Locust (the web UI, headless, or distributed: see loadtest/README.md), or through
`dfserve loadtest`, which runs it headless and writes the reports. Settings are Locust custom arguments
(`--dfserve-mode file|pixels`, `--dfserve-protocol http|grpc`, `--dfserve-images DIR`,
`--dfserve-shape constant|step`, ...; `locust -f locustfile.py --help` lists them) or the matching environment
variables (DFSERVE_MODE, DFSERVE_PROTOCOL, DFSERVE_IMAGES, DFSERVE_SHAPE, ...).

Example:
    locust -f loadtest/locustfile.py --headless --host 127.0.0.1:8000 -u 8 -r 4 -t 60s --dfserve-mode file
"""

from __future__ import annotations

from typing import Any

from locust import events

from dfserve.loadtest.options import add_locust_arguments
from dfserve.loadtest.samples import record_samples
from dfserve.loadtest.shapes import DfserveShape
from dfserve.loadtest.users import TritonGrpcUser, TritonHttpUser, enable_grpc_gevent

enable_grpc_gevent()

__all__ = ["DfserveShape", "TritonGrpcUser", "TritonHttpUser"]


@events.init_command_line_parser.add_listener
def _dfserve_arguments(parser: Any) -> None:
    add_locust_arguments(parser)


@events.init.add_listener
def _dfserve_samples(environment: Any, **_: Any) -> None:
    """Every request's latency to a CSV per process, where `--dfserve-samples-dir` names a folder."""
    folder = getattr(environment.parsed_options, "dfserve_samples_dir", "")
    is_master = type(environment.runner).__name__ == "MasterRunner"  # workers send the requests, not the master
    if folder and not is_master:
        record_samples(environment, folder)
