"""Locust users that call Triton with tritonclient: one client per user, over HTTP or gRPC.

Each request fires Locust's `request` event itself (as Locust's own clients do): request type, the model's
name, the time in milliseconds from `perf_counter`, the bytes of the answer, and the exception when it
failed. A failure is anything the server or the network did wrong: an error status, a timeout, an answer of
the wrong shape. Locust's control-flow exceptions (`StopUser`, `RescheduleTask`, `InterruptTaskSet`, and
gevent's `GreenletExit` when a user is stopped mid-request) pass through unrecorded: they are how Locust
steers users, not something the server did.

What to send is read from the server (the model's `dfserve_spec`) and prepared once per process, shared by
the users of that process (`Workload`); the tritonclient input objects are built once per user and reused.

`tritonclient.http` runs on geventhttpclient, which cooperates with Locust's gevent loop as it is. gRPC's
C core needs `grpc.experimental.gevent.init_gevent()` before any channel exists; `enable_grpc_gevent()` does
that and the locustfile calls it at import.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from time import perf_counter
from typing import Any, ClassVar

import numpy as np
from gevent import GreenletExit
from locust import User, task
from locust.exception import (
    InterruptTaskSet,
    LocustError,
    RescheduleTask,
    RescheduleTaskImmediately,
    ResponseError,
    StopTest,
    StopUser,
)

from dfserve.errors import EndpointError
from dfserve.loadtest.options import LoadSettings
from dfserve.measure.payloads import load_images, to_pixels
from dfserve.measure.target import Protocol, fetch_spec, make_client, split_host
from dfserve.spec.model import ModelSpec

CONTROL_FLOW: tuple[type[BaseException], ...] = (
    StopUser,
    StopTest,
    RescheduleTask,
    RescheduleTaskImmediately,
    InterruptTaskSet,
    GreenletExit,
)

_grpc_patched = False


def enable_grpc_gevent() -> None:
    """Let gRPC's C core run on gevent (required before the first gRPC channel in a Locust process)."""
    global _grpc_patched
    if not _grpc_patched:
        from grpc.experimental import gevent as grpc_gevent

        grpc_gevent.init_gevent()
        _grpc_patched = True


@dataclass(frozen=True)
class Workload:
    """What every user of one process sends: the target model, its tensor names and the prepared items."""

    spec: ModelSpec
    model: str
    input_name: str
    output_name: str
    datatype: str
    items: tuple[np.ndarray, ...]
    """BYTES: object arrays [1] holding one file each; UINT8: pixels [3,H,W]."""
    batch: int

    @classmethod
    def build(cls, spec: ModelSpec, settings: LoadSettings) -> Workload:
        images = load_images(settings.images or None, count=settings.image_count)
        names, models = spec.tensors, spec.models
        if settings.mode == "file":
            files = tuple(np.array([img.data], dtype=np.object_) for img in images)
            return cls(spec, models.ensemble, names.image, names.scores, "BYTES", files, settings.batch)
        pixels = tuple(to_pixels(images, spec, spec.resize_mode))
        return cls(spec, models.engine, names.pixels, names.scores, "UINT8", pixels, settings.batch)

    def batch_at(self, start: int) -> np.ndarray:
        n = len(self.items)
        return np.stack([self.items[(start + i) % n] for i in range(self.batch)])

    @property
    def classes(self) -> int:
        return len(self.spec.labels.names)


_workloads: dict[tuple[str, str, LoadSettings], Workload] = {}
_workload_lock = threading.Lock()  # gevent-patched under Locust: the first user prepares, the others wait


def workload_for(url: str, protocol: Protocol, ssl: bool, settings: LoadSettings) -> Workload:
    key = (url, protocol, settings)
    with _workload_lock:
        if key not in _workloads:
            client = make_client(url, protocol, ssl=ssl, timeout_s=settings.timeout)
            try:
                spec = fetch_spec(client, protocol, settings.model or None)
            finally:
                client.close()
            _workloads[key] = Workload.build(spec, settings)
        return _workloads[key]


class TritonUser(User):
    """Base of the Triton users; subclasses say which protocol and how to send."""

    abstract = True
    protocol: ClassVar[Protocol]
    request_type: ClassVar[str]

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.settings = LoadSettings.from_namespace(environment.parsed_options)
        if not self.host:
            raise LocustError(f"{type(self).__name__} needs a host: pass --host HOST:PORT ({self.protocol} endpoint)")
        try:
            self.url, _, self.ssl = split_host(self.host, self.protocol)
        except EndpointError as exc:
            raise LocustError(str(exc)) from exc
        self.client: Any = None
        self._outputs: list[Any] = []
        self.workload: Workload | None = None
        self._inputs: dict[int, list[Any]] = {}
        self._cursor = 0

    def wait_time(self) -> float:
        return self.settings.think_time

    def on_start(self) -> None:
        started = perf_counter()
        try:
            self.workload = workload_for(self.url, self.protocol, self.ssl, self.settings)
            self.client = make_client(self.url, self.protocol, ssl=self.ssl, timeout_s=self.settings.timeout)
        except CONTROL_FLOW:
            raise
        except Exception as exc:
            # recorded as a failed "setup" request; the first task then stops this user (StopUser raised from
            # on_start would also be logged by Locust as an error with a traceback)
            self.workload = None
            self._fire("setup", started, 0, exc)
            return
        self._cursor = id(self) % len(self.workload.items)  # users start at different images

    def on_stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    @task
    def infer(self) -> None:
        workload = self.workload
        if workload is None:
            raise StopUser()
        start_index = self._cursor % len(workload.items)
        self._cursor += workload.batch
        inputs = self._inputs.get(start_index)
        if inputs is None:
            inputs = self._inputs[start_index] = self._make_inputs(workload, workload.batch_at(start_index))
        started = perf_counter()
        length, error = 0, None
        try:
            scores, length = self._send(workload, inputs)
            expected = (workload.batch, workload.classes)
            if scores is None or scores.shape != expected:
                got = None if scores is None else scores.shape
                raise ResponseError(f"{workload.output_name} has shape {got}, expected {expected}")
        except CONTROL_FLOW:
            raise
        except Exception as exc:
            error = exc
        self._fire(workload.model, started, length, error)

    def _fire(self, name: str, started: float, length: int, exception: BaseException | None) -> None:
        self.environment.events.request.fire(
            request_type=self.request_type,
            name=name,
            response_time=(perf_counter() - started) * 1000.0,
            response_length=length,
            exception=exception,
            context={"batch": self.settings.batch, "mode": self.settings.mode},
        )

    def _make_inputs(self, workload: Workload, data: np.ndarray) -> list[Any]:
        raise NotImplementedError

    def _send(self, workload: Workload, inputs: list[Any]) -> tuple[np.ndarray | None, int]:
        raise NotImplementedError


class TritonHttpUser(TritonUser):
    """KServe v2 over HTTP/REST with binary tensors (tritonclient.http, on geventhttpclient)."""

    protocol = "http"
    request_type = "HTTP"

    def _make_inputs(self, workload: Workload, data: np.ndarray) -> list[Any]:
        import tritonclient.http as httpclient

        inp = httpclient.InferInput(workload.input_name, list(data.shape), workload.datatype)
        inp.set_data_from_numpy(data, binary_data=True)
        self._outputs = [httpclient.InferRequestedOutput(workload.output_name, binary_data=True)]
        return [inp]

    def _send(self, workload: Workload, inputs: list[Any]) -> tuple[np.ndarray | None, int]:
        result = self.client.infer(workload.model, inputs, outputs=self._outputs)
        scores = result.as_numpy(workload.output_name)
        return scores, int(scores.nbytes) if scores is not None else 0


class TritonGrpcUser(TritonUser):
    """KServe v2 over gRPC (tritonclient.grpc; needs `enable_grpc_gevent()` in the process)."""

    protocol = "grpc"
    request_type = "gRPC"

    def __init__(self, environment: Any) -> None:
        enable_grpc_gevent()  # before this user's first channel
        super().__init__(environment)

    def _make_inputs(self, workload: Workload, data: np.ndarray) -> list[Any]:
        import tritonclient.grpc as grpcclient

        inp = grpcclient.InferInput(workload.input_name, list(data.shape), workload.datatype)
        inp.set_data_from_numpy(data)
        self._outputs = [grpcclient.InferRequestedOutput(workload.output_name)]
        return [inp]

    def _send(self, workload: Workload, inputs: list[Any]) -> tuple[np.ndarray | None, int]:
        result = self.client.infer(workload.model, inputs, outputs=self._outputs, client_timeout=self.settings.timeout)
        return result.as_numpy(workload.output_name), int(result.get_response().ByteSize())
