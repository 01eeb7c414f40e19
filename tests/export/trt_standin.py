"""A recording stand-in of the `tensorrt` module and of cuda-python's runtime bindings: only the subset
`dfserve.export.tensorrt` calls, strict where the real API is strict.

TensorRT cannot be installed on these machines, so this is what the contract tests run `build_engine` and
`run_engine` against. It is not a mock of answers: the "engine" it builds is the ONNX graph it was given, run by
ONNX Runtime on the CPU behind emulated device memory, and its inspector reports each node's output type from the
graph (as a strongly typed engine must). What it checks, each as the real API would fail:

- enum arguments must be members of the right enum (`trt.MemoryPoolType.WORKSPACE`, not an int); a member name that
  TensorRT 10 does not have is an AttributeError, as on the real module;
- argument types: flags and sizes are ints, tensor names are str, shapes are tuples of ints, the stream given to
  `execute_async_v3` is an int handle, device pointers are ints;
- attributes: setting a builder-config or inspector attribute the TensorRT 10 API does not have is an
  AttributeError (pybind objects have no __dict__);
- strong typing: `set_flag` of a precision flag, or layer precision, on a strongly typed network is refused;
- call order: parse before build, profile shapes before `add_optimization_profile`, input shape and all tensor
  addresses before `execute_async_v3`, the host-to-device copy before execution, the stream synchronised before
  the device-to-host copy, memory freed once.

The inspector fuses attention as TensorRT 10's MHA fusion does: a MatMul → Softmax → MatMul chain whose tensors are
all FP16 is reported as one layer named like TensorRT's fused kernels (`_gemm_mha_v2_myl0_<n>`, its ONNX layers in
"Metadata"); anything else (a Softmax fed FP32 by casts) stays separate layers. `StandIn(fuse_attention=False)` is a
release whose fuser misses the pattern.

Every call is appended to `StandIn.calls` as (object, method, args) so tests can check the sequence.
Names and signatures follow NVIDIA's TensorRT 10 Python API documentation (docs.nvidia.com/deeplearning/tensorrt,
Core/Builder, Core/BuilderConfig, Core/EngineInspector, Core/ExecutionContext) and cuda-python's
`cuda.bindings.runtime` (calls return a tuple whose first item is a `cudaError_t`).
"""

from __future__ import annotations

import ctypes
import enum
import io
import json
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

MAGIC = b"STANDIN-PLAN\n"


class StandInError(AssertionError):
    """A call the real API would refuse (wrong type, wrong order, not allowed on a strongly typed network)."""


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise StandInError(message)


def _enum(value: Any, cls: type[enum.Enum], what: str) -> None:
    _need(isinstance(value, cls), f"{what} must be a {cls.__name__} member, got {value!r}")


def _int(value: Any, what: str) -> None:
    _need(isinstance(value, int) and not isinstance(value, bool), f"{what} must be an int, got {type(value).__name__}")


def _shape(value: Any, what: str) -> tuple[int, ...]:
    _need(
        isinstance(value, tuple | list) and all(isinstance(d, int) for d in value),
        f"{what} must be a tuple of ints, got {value!r}",
    )
    return tuple(value)


class _Strict:
    """Attributes outside `_settable` cannot be set, like pybind11 objects without a __dict__."""

    _settable: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name not in self._settable:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        object.__setattr__(self, name, value)


def _module(name: str) -> types.ModuleType:
    """A module with a spec, so `importlib.util.find_spec` (which other libraries call) accepts it."""
    import importlib.machinery

    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module


# --- enums (TensorRT 10 member names) ---------------------------------------------------------------------------


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1


class ProfilingVerbosity(enum.IntEnum):
    LAYER_NAMES_ONLY = 0
    NONE = 1
    DETAILED = 2


class HardwareCompatibilityLevel(enum.IntEnum):
    NONE = 0
    AMPERE_PLUS = 1


class LayerInformationFormat(enum.IntEnum):
    ONELINE = 0
    JSON = 1


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 1
    OBEY_PRECISION_CONSTRAINTS = 7
    BF16 = 13


ONNX_TO_TRT = {
    onnx.TensorProto.FLOAT: DataType.FLOAT,
    onnx.TensorProto.FLOAT16: DataType.HALF,
    onnx.TensorProto.UINT8: DataType.UINT8,
    onnx.TensorProto.INT8: DataType.INT8,
    onnx.TensorProto.INT32: DataType.INT32,
    onnx.TensorProto.INT64: DataType.INT64,
    onnx.TensorProto.BOOL: DataType.BOOL,
    onnx.TensorProto.BFLOAT16: DataType.BF16,
}
FORMAT_NAMES = {
    DataType.FLOAT: "Row major linear FP32 format",
    DataType.HALF: "Row major linear FP16 format",
    DataType.UINT8: "Row major linear UInt8 format",
    DataType.INT8: "Row major linear Int8 format",
    DataType.INT32: "Row major linear Int32 format",
    DataType.INT64: "Row major linear Int64 format",
    DataType.BOOL: "Row major linear Bool format",
    DataType.BF16: "Row major linear BF16 format",
}
NUMPY = {
    DataType.FLOAT: np.float32,
    DataType.HALF: np.float16,
    DataType.UINT8: np.uint8,
    DataType.INT8: np.int8,
    DataType.INT32: np.int32,
    DataType.INT64: np.int64,
    DataType.BOOL: np.bool_,
}


@dataclass
class StandIn:
    """One stand-in TensorRT (of `version`) and CUDA runtime (with `gpus`), recording calls."""

    version: str = "10.5.0"
    strongly_typed_member: bool = True
    fuse_attention: bool = True
    """Whether the builder fuses MatMul → Softmax → MatMul when all three are FP16 (TensorRT 10's MHA fusion rule);
    False: a release whose fuser misses the pattern (every attention block stays unfused)."""
    gpus: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {
                "name": b"NVIDIA H100 80GB HBM3" + b"\0" * 11,
                "major": 9,
                "minor": 0,
                "pciDomainID": 0,
                "pciBusID": 0x65,
                "pciDeviceID": 0,
                "uuid": bytes(range(16)),
            }
        ]
    )
    calls: list[tuple[str, str, tuple[Any, ...]]] = field(default_factory=list)
    device: dict[int, bytearray] = field(default_factory=dict)
    freed: list[int] = field(default_factory=list)
    streams: dict[int, str] = field(default_factory=dict)
    """Live CUDA streams by handle: "idle", "busy" (work queued) or "synced"."""

    def record(self, obj: str, method: str, *args: Any) -> None:
        self.calls.append((obj, method, args))

    def methods(self) -> list[str]:
        return [f"{obj}.{method}" for obj, method, _ in self.calls]

    # --- the modules ---------------------------------------------------------------------------------------------

    def tensorrt(self) -> types.ModuleType:
        m = _module("tensorrt")
        m.__version__ = self.version  # type: ignore[attr-defined]
        standin = self
        for cls in (DataType, MemoryPoolType, ProfilingVerbosity, HardwareCompatibilityLevel, LayerInformationFormat):
            setattr(m, cls.__name__, cls)
        m.BuilderFlag = BuilderFlag  # type: ignore[attr-defined]
        if self.strongly_typed_member:
            m.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag  # type: ignore[attr-defined]
        else:
            m.NetworkDefinitionCreationFlag = enum.IntEnum(  # type: ignore[attr-defined]
                "NetworkDefinitionCreationFlag", {"PREFER_AOT_PYTHON_PLUGINS": 2}
            )

        class Logger:
            class Severity(enum.IntEnum):
                INTERNAL_ERROR = 0
                ERROR = 1
                WARNING = 2
                INFO = 3
                VERBOSE = 4

            WARNING = Severity.WARNING

            def __init__(self, severity: Any) -> None:
                _enum(severity, Logger.Severity, "Logger(min_severity)")
                standin.record("Logger", "__init__", severity)

        def nptype(dtype: Any) -> type:
            _enum(dtype, DataType, "nptype(trt_type)")
            return NUMPY[dtype]

        m.Logger = Logger  # type: ignore[attr-defined]
        m.nptype = nptype  # type: ignore[attr-defined]
        m.Builder = lambda logger: _Builder(standin, logger, Logger)  # type: ignore[attr-defined]
        m.OnnxParser = lambda network, logger: _Parser(standin, network, logger, Logger)  # type: ignore[attr-defined]
        m.Runtime = lambda logger: _Runtime(standin, logger, Logger)  # type: ignore[attr-defined]
        return m

    def cuda_modules(self) -> dict[str, types.ModuleType]:
        """`cuda`, `cuda.bindings` and `cuda.bindings.runtime`, for sys.modules."""
        rt = _runtime_module(self)
        bindings = _module("cuda.bindings")
        bindings.runtime = rt  # type: ignore[attr-defined]
        cuda = _module("cuda")
        cuda.bindings = bindings  # type: ignore[attr-defined]
        return {"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": rt}

    @property
    def strongly_typed_default(self) -> bool:
        return int(self.version.split(".")[0]) >= 11


# --- builder side ------------------------------------------------------------------------------------------------


def _check_logger(logger: Any, logger_cls: type) -> None:
    _need(isinstance(logger, logger_cls), f"expected a trt.Logger, got {type(logger).__name__}")


class _Network(_Strict):
    def __init__(self, standin: StandIn, flags: int) -> None:
        self._standin = standin
        strongly = bool(flags & (1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        self._strongly_typed = strongly or standin.strongly_typed_default
        self._model: onnx.ModelProto | None = None


class _Parser(_Strict):
    def __init__(self, standin: StandIn, network: Any, logger: Any, logger_cls: type) -> None:
        _need(isinstance(network, _Network), "OnnxParser(network, logger): network must be an INetworkDefinition")
        _check_logger(logger, logger_cls)
        self._standin, self._network, self._errors = standin, network, []
        standin.record("OnnxParser", "__init__")

    def parse_from_file(self, model: Any) -> bool:
        _need(isinstance(model, str), f"parse_from_file(model: str), got {type(model).__name__}")
        self._standin.record("OnnxParser", "parse_from_file", model)
        try:
            self._network._model = onnx.load(model)
            onnx.checker.check_model(self._network._model)
        except Exception as exc:
            self._errors.append(f"ModelImporter: {exc}")
            return False
        return True

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> str:
        _int(index, "get_error(index)")
        return self._errors[index]


class _Profile(_Strict):
    def __init__(self, standin: StandIn) -> None:
        self._standin, self._shapes = standin, {}

    def set_shape(self, input: Any, min: Any, opt: Any, max: Any) -> None:
        _need(isinstance(input, str), "set_shape(input: str, ...)")
        lo, mid, hi = (_shape(s, f"set_shape {n}") for s, n in ((min, "min"), (opt, "opt"), (max, "max")))
        _need(len(lo) == len(mid) == len(hi), "set_shape: min/opt/max must have the same rank")
        _need(all(a <= b <= c for a, b, c in zip(lo, mid, hi, strict=True)), "set_shape: needs min <= opt <= max")
        self._standin.record("IOptimizationProfile", "set_shape", input, lo, mid, hi)
        self._shapes[input] = (lo, mid, hi)


class _TimingCache(_Strict):
    def __init__(self, blob: bytes) -> None:
        self._blob = blob

    def serialize(self) -> memoryview:
        return memoryview(b"STANDIN-CACHE" + self._blob[13:] + b".")


class _Config(_Strict):
    _settable = frozenset({"builder_optimization_level", "profiling_verbosity", "hardware_compatibility_level"})

    def __init__(self, standin: StandIn, network_holder: list[_Network]) -> None:
        self._standin = standin
        self._profiles: list[_Profile] = []
        self._pools: dict[MemoryPoolType, int] = {}
        self._flags: set[BuilderFlag] = set()
        self._cache: _TimingCache | None = None
        # TensorRT's defaults, set without recording a call
        object.__setattr__(self, "builder_optimization_level", 3)
        object.__setattr__(self, "profiling_verbosity", ProfilingVerbosity.LAYER_NAMES_ONLY)
        object.__setattr__(self, "hardware_compatibility_level", HardwareCompatibilityLevel.NONE)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "builder_optimization_level":
            _int(value, name)
            _need(0 <= value <= 5, f"{name} must be 0..5, got {value}")
        elif name == "profiling_verbosity":
            _enum(value, ProfilingVerbosity, name)
        elif name == "hardware_compatibility_level":
            _enum(value, HardwareCompatibilityLevel, name)
        if not name.startswith("_"):
            self._standin.record("IBuilderConfig", f"{name}=", value)
        super().__setattr__(name, value)

    def set_memory_pool_limit(self, pool: Any, pool_size: Any) -> None:
        _enum(pool, MemoryPoolType, "set_memory_pool_limit(pool)")
        _int(pool_size, "set_memory_pool_limit(pool_size)")
        self._standin.record("IBuilderConfig", "set_memory_pool_limit", pool, pool_size)
        self._pools[pool] = pool_size

    def set_flag(self, flag: Any) -> None:
        _enum(flag, BuilderFlag, "set_flag(flag)")
        self._standin.record("IBuilderConfig", "set_flag", flag)
        self._flags.add(flag)

    def add_optimization_profile(self, profile: Any) -> int:
        _need(isinstance(profile, _Profile), "add_optimization_profile(profile: IOptimizationProfile)")
        _need(bool(profile._shapes), "add_optimization_profile: the profile has no shapes (set_shape first)")
        self._standin.record("IBuilderConfig", "add_optimization_profile")
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def create_timing_cache(self, serialized_timing_cache: Any) -> _TimingCache:
        _need(isinstance(serialized_timing_cache, bytes | bytearray | memoryview), "create_timing_cache(buffer)")
        self._standin.record("IBuilderConfig", "create_timing_cache", bytes(serialized_timing_cache))
        return _TimingCache(bytes(serialized_timing_cache))

    def set_timing_cache(self, cache: Any, ignore_mismatch: Any) -> bool:
        _need(isinstance(cache, _TimingCache), "set_timing_cache(cache: ITimingCache, ignore_mismatch: bool)")
        _need(isinstance(ignore_mismatch, bool), "set_timing_cache: ignore_mismatch must be a bool")
        self._standin.record("IBuilderConfig", "set_timing_cache", ignore_mismatch)
        if cache._blob and not cache._blob.startswith(b"STANDIN-CACHE"):
            return False  # another GPU's or TensorRT's cache
        self._cache = cache
        return True

    def get_timing_cache(self) -> _TimingCache:
        _need(self._cache is not None, "get_timing_cache: no timing cache was set")
        assert self._cache is not None
        return self._cache


class _Builder(_Strict):
    def __init__(self, standin: StandIn, logger: Any, logger_cls: type) -> None:
        _check_logger(logger, logger_cls)
        self._standin = standin
        standin.record("Builder", "__init__")

    def create_network(self, flags: Any = 0) -> _Network:
        _int(flags, "create_network(flags)")
        self._standin.record("Builder", "create_network", flags)
        return _Network(self._standin, flags)

    def create_builder_config(self) -> _Config:
        self._standin.record("Builder", "create_builder_config")
        return _Config(self._standin, [])

    def create_optimization_profile(self) -> _Profile:
        self._standin.record("Builder", "create_optimization_profile")
        return _Profile(self._standin)

    def build_serialized_network(self, network: Any, config: Any) -> memoryview | None:
        _need(isinstance(network, _Network), "build_serialized_network(network: INetworkDefinition, config)")
        _need(isinstance(config, _Config), "build_serialized_network(network, config: IBuilderConfig)")
        _need(network._model is not None, "build_serialized_network: the network is empty (parse the ONNX first)")
        precision = {BuilderFlag.FP16, BuilderFlag.BF16, BuilderFlag.INT8, BuilderFlag.OBEY_PRECISION_CONSTRAINTS}
        if network._strongly_typed:
            _need(
                not (config._flags & precision),
                f"precision flags {sorted(f.name for f in config._flags & precision)} are not allowed on a strongly "
                "typed network",
            )
        _need(len(config._profiles) == 1, "the network has a dynamic input: exactly one optimisation profile needed")
        assert network._model is not None
        graph = network._model.graph
        inputs = [i.name for i in graph.input if i.name not in {init.name for init in graph.initializer}]
        _need(set(config._profiles[0]._shapes) == set(inputs), f"the profile must cover the inputs {inputs}")
        self._standin.record("Builder", "build_serialized_network")
        header = {
            "profile": {k: [list(s) for s in v] for k, v in config._profiles[0]._shapes.items()},
            "verbosity": config.profiling_verbosity.name,
            "strongly_typed": network._strongly_typed,
        }
        return memoryview(MAGIC + json.dumps(header).encode() + b"\n" + network._model.SerializeToString())


# --- runtime side ------------------------------------------------------------------------------------------------


class _Runtime(_Strict):
    def __init__(self, standin: StandIn, logger: Any, logger_cls: type) -> None:
        _check_logger(logger, logger_cls)
        self._standin = standin
        standin.record("Runtime", "__init__")

    def deserialize_cuda_engine(self, serialized_engine: Any) -> _Engine | None:
        _need(isinstance(serialized_engine, bytes | bytearray | memoryview), "deserialize_cuda_engine(buffer)")
        data = bytes(serialized_engine)
        self._standin.record("Runtime", "deserialize_cuda_engine")
        if not data.startswith(MAGIC):
            return None
        header, model = data[len(MAGIC) :].split(b"\n", 1)
        return _Engine(self._standin, json.loads(header), onnx.load_model_from_string(model))


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    out = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    out.update({i.name: i.data_type for i in g.initializer})
    return out


class _Engine(_Strict):
    def __init__(self, standin: StandIn, header: dict[str, Any], model: onnx.ModelProto) -> None:
        self._standin, self._header, self._model = standin, header, model
        self._elem = _types(model)
        self._inputs = [i.name for i in model.graph.input]
        self._outputs = [o.name for o in model.graph.output]

    def get_tensor_dtype(self, name: Any) -> DataType:
        _need(isinstance(name, str), "get_tensor_dtype(name: str)")
        _need(name in self._inputs + self._outputs, f"get_tensor_dtype: no I/O tensor {name!r}")
        return ONNX_TO_TRT[self._elem[name]]

    def create_execution_context(self) -> _Context:
        self._standin.record("ICudaEngine", "create_execution_context")
        return _Context(self._standin, self)

    def create_engine_inspector(self) -> _Inspector:
        self._standin.record("ICudaEngine", "create_engine_inspector")
        return _Inspector(self._standin, self)


class _Context(_Strict):
    def __init__(self, standin: StandIn, engine: _Engine) -> None:
        self._standin, self._engine = standin, engine
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}

    def set_input_shape(self, name: Any, shape: Any) -> bool:
        _need(isinstance(name, str), "set_input_shape(name: str, shape)")
        dims = _shape(shape, "set_input_shape(shape)")
        _need(name in self._engine._inputs, f"set_input_shape: {name!r} is not an input")
        lo, _, hi = self._engine._header["profile"][name]
        self._standin.record("IExecutionContext", "set_input_shape", name, dims)
        if not all(a <= d <= b for a, d, b in zip(lo, dims, hi, strict=True)):
            return False
        self._shapes[name] = dims
        return True

    def get_tensor_shape(self, name: Any) -> tuple[int, ...]:
        _need(isinstance(name, str), "get_tensor_shape(name: str)")
        _need(set(self._shapes) == set(self._engine._inputs), "get_tensor_shape before every input shape is set")
        batch = next(iter(self._shapes.values()))[0]
        out = next(o for o in self._engine._model.graph.output if o.name == name)
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in out.type.tensor_type.shape.dim]
        return tuple(dims)

    def set_tensor_address(self, name: Any, memory: Any) -> bool:
        _need(isinstance(name, str), "set_tensor_address(name: str, memory: int)")
        _int(memory, "set_tensor_address(memory)")
        _need(memory in self._standin.device, f"set_tensor_address: {memory:#x} is not device memory")
        self._standin.record("IExecutionContext", "set_tensor_address", name)
        self._addresses[name] = memory
        return True

    def execute_async_v3(self, stream_handle: Any) -> bool:
        _int(stream_handle, "execute_async_v3(stream_handle)")
        _need(stream_handle in self._standin.streams, "execute_async_v3: not a live CUDA stream handle")
        e = self._engine
        _need(set(self._shapes) == set(e._inputs), "execute_async_v3 before set_input_shape of every input")
        _need(set(self._addresses) == set(e._inputs + e._outputs), "execute_async_v3 before every tensor address")
        self._standin.record("IExecutionContext", "execute_async_v3", stream_handle)
        import onnxruntime as ort

        feeds = {}
        for name in e._inputs:
            dtype = NUMPY[ONNX_TO_TRT[e._elem[name]]]
            buf = self._standin.device[self._addresses[name]]
            feeds[name] = np.frombuffer(bytes(buf), dtype=dtype).reshape(self._shapes[name])
        session = ort.InferenceSession(e._model.SerializeToString(), providers=["CPUExecutionProvider"])
        for name, value in zip(e._outputs, session.run(e._outputs, feeds), strict=True):
            raw = np.ascontiguousarray(value).tobytes()
            target = self._standin.device[self._addresses[name]]
            _need(len(raw) == len(target), f"output {name!r} needs {len(raw)} bytes, has {len(target)}")
            target[:] = raw
        self._standin.streams[stream_handle] = "busy"
        return True


class _Inspector(_Strict):
    _settable = frozenset({"execution_context", "error_recorder"})

    def __init__(self, standin: StandIn, engine: _Engine) -> None:
        self._standin, self._engine = standin, engine
        object.__setattr__(self, "execution_context", None)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "execution_context":
            _need(isinstance(value, _Context), "execution_context must be an IExecutionContext")
            self._standin.record("EngineInspector", "execution_context=")
        super().__setattr__(name, value)

    def get_engine_information(self, format: Any) -> str:
        _enum(format, LayerInformationFormat, "get_engine_information(format)")
        self._standin.record("EngineInspector", "get_engine_information", format)
        e = self._engine
        if e._header["verbosity"] != "DETAILED":
            return json.dumps({"Layers": [n.name for n in e._model.graph.node], "Bindings": e._inputs + e._outputs})
        concrete = getattr(self, "execution_context", None) is not None

        def tensor(name: str) -> dict[str, Any]:
            fmt = FORMAT_NAMES.get(ONNX_TO_TRT.get(self._engine._elem.get(name, 0), DataType.FLOAT), "Unknown")
            return {
                "Name": name,
                "Location": "Device",
                "Format/Datatype": fmt if concrete else "N/A due to dynamic shapes",
            }

        nodes = list(e._model.graph.node)
        fused = _attention_triples(e._model, e._elem) if self._standin.fuse_attention else {}
        layers: list[dict[str, Any]] = []
        for i, node in enumerate(nodes):
            if id(node) in fused:
                first, softmax, second = fused[id(node)]
                if node is not softmax:
                    continue  # the MatMuls are inside the fused kernel
                layers.append(
                    {  # as TensorRT 10 names a fused attention kernel of a Myelin subgraph
                        "Name": f"_gemm_mha_v2_myl0_{i}",
                        "LayerType": "kgen",
                        "Inputs": [tensor(x) for x in [*first.input, second.input[1]] if x],
                        "Outputs": [tensor(y) for y in second.output],
                        "TacticName": "",
                        "TacticValue": "0x0000000000000000",
                        "Metadata": "".join(f"[ONNX Layer: {n.name}]" for n in (first, softmax, second)),
                    }
                )
                continue
            layers.append(
                {
                    "Name": node.name or f"{node.op_type}_{i}",
                    "LayerType": "Myelin" if node.op_type in ("MatMul", "LayerNormalization") else "PointWiseV2",
                    "Inputs": [tensor(x) for x in node.input if x],
                    "Outputs": [tensor(y) for y in node.output],
                    "TacticName": f"standin_{node.op_type.lower()}_kernel",
                    "TacticValue": f"0x{i:016x}",
                    "Metadata": f"[ONNX Layer: {node.name}]",
                }
            )
        return json.dumps({"Layers": layers, "Bindings": e._inputs + e._outputs})


def _attention_triples(model: onnx.ModelProto, elem: dict[str, int]) -> dict[int, tuple[Any, Any, Any]]:
    """MatMul → Softmax → MatMul chains whose tensors are all FP16 (TensorRT's MHA fusion pattern), by id() of each
    of the three nodes."""
    produced = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    half = onnx.TensorProto.FLOAT16
    out: dict[int, tuple[Any, Any, Any]] = {}
    for softmax in model.graph.node:
        if softmax.op_type != "Softmax":
            continue
        first = produced.get(softmax.input[0])
        after = consumers.get(softmax.output[0], [])
        if first is None or first.op_type != "MatMul" or len(after) != 1 or after[0].op_type != "MatMul":
            continue
        second = after[0]
        tensors = [*first.input, softmax.input[0], softmax.output[0], *second.input, *second.output]
        if all(elem.get(t) == half for t in tensors):
            for node in (first, softmax, second):
                out[id(node)] = (first, softmax, second)
    return out


# --- cuda.bindings.runtime ---------------------------------------------------------------------------------------


def _runtime_module(standin: StandIn) -> types.ModuleType:
    rt = _module("cuda.bindings.runtime")

    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorInvalidValue = 1
        cudaErrorNoDevice = 100

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToHost = 0
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class cudaStream_t:
        def __init__(self, handle: int) -> None:
            self._handle = handle

        def __int__(self) -> int:
            return self._handle

    class cudaUUID_t:
        def __init__(self, raw: bytes) -> None:
            self.bytes = raw

    streams = standin.streams
    next_pointer = [0x7F0000000000]

    def ok(*values: Any) -> tuple[Any, ...]:
        return (cudaError_t.cudaSuccess, *values)

    def cudaGetDeviceCount() -> tuple[Any, ...]:
        standin.record("cudart", "cudaGetDeviceCount")
        if not standin.gpus:
            return (cudaError_t.cudaErrorNoDevice, 0)
        return ok(len(standin.gpus))

    def cudaGetDeviceProperties(device: Any) -> tuple[Any, ...]:
        _int(device, "cudaGetDeviceProperties(device)")
        standin.record("cudart", "cudaGetDeviceProperties", device)
        if not 0 <= device < len(standin.gpus):
            return (cudaError_t.cudaErrorInvalidValue, None)
        g = dict(standin.gpus[device])
        g["uuid"] = cudaUUID_t(g["uuid"])
        return ok(types.SimpleNamespace(**g))

    def cudaStreamCreate() -> tuple[Any, ...]:
        handle = 0x5000 + len(streams) + 1
        streams[handle] = "idle"
        standin.record("cudart", "cudaStreamCreate")
        return ok(cudaStream_t(handle))

    def _stream(stream: Any, what: str) -> int:
        _need(isinstance(stream, cudaStream_t), f"{what} takes the cudaStream_t, got {type(stream).__name__}")
        _need(int(stream) in streams, f"{what}: unknown or destroyed stream")
        return int(stream)

    def cudaStreamSynchronize(stream: Any) -> tuple[Any, ...]:
        streams[_stream(stream, "cudaStreamSynchronize")] = "synced"
        standin.record("cudart", "cudaStreamSynchronize")
        return ok()

    def cudaStreamDestroy(stream: Any) -> tuple[Any, ...]:
        del streams[_stream(stream, "cudaStreamDestroy")]
        standin.record("cudart", "cudaStreamDestroy")
        return ok()

    def cudaMalloc(size: Any) -> tuple[Any, ...]:
        _int(size, "cudaMalloc(size)")
        pointer = next_pointer[0]
        next_pointer[0] += max(size, 1) + 256
        standin.device[pointer] = bytearray(size)
        standin.record("cudart", "cudaMalloc", size)
        return ok(pointer)

    def cudaFree(pointer: Any) -> tuple[Any, ...]:
        _int(pointer, "cudaFree(devPtr)")
        _need(pointer in standin.device, f"cudaFree: {pointer:#x} is not allocated (double free?)")
        del standin.device[pointer]
        standin.freed.append(pointer)
        standin.record("cudart", "cudaFree")
        return ok()

    def cudaMemcpy(dst: Any, src: Any, count: Any, kind: Any) -> tuple[Any, ...]:
        for value, what in ((dst, "dst"), (src, "src"), (count, "count")):
            _int(value, f"cudaMemcpy({what})")
        _enum(kind, cudaMemcpyKind, "cudaMemcpy(kind)")
        standin.record("cudart", "cudaMemcpy", kind)
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            _need(dst in standin.device and len(standin.device[dst]) >= count, "cudaMemcpy: bad device destination")
            standin.device[dst][:count] = ctypes.string_at(src, count)
        elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
            _need(src in standin.device and len(standin.device[src]) >= count, "cudaMemcpy: bad device source")
            _need("busy" not in streams.values(), "device-to-host copy before the stream is synchronised")
            ctypes.memmove(dst, bytes(standin.device[src][:count]), count)
        else:
            raise StandInError(f"cudaMemcpy kind {kind.name} is not used by dfserve")
        return ok()

    for fn in (
        cudaGetDeviceCount,
        cudaGetDeviceProperties,
        cudaStreamCreate,
        cudaStreamSynchronize,
        cudaStreamDestroy,
        cudaMalloc,
        cudaFree,
        cudaMemcpy,
    ):
        setattr(rt, fn.__name__, fn)
    rt.cudaError_t = cudaError_t  # type: ignore[attr-defined]
    rt.cudaMemcpyKind = cudaMemcpyKind  # type: ignore[attr-defined]
    return rt


def plan_header(plan: bytes) -> dict[str, Any]:
    """What the stand-in's 'plan' records about its build (tests read it)."""
    assert plan.startswith(MAGIC)
    return dict(json.loads(io.BytesIO(plan[len(MAGIC) :]).readline()))
