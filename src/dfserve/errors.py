"""Every exception dfserve raises on purpose, in one tree per area, each under the area that raises it.

    DfserveError                         exit_code; the CLI prints the message as one line, no traceback
    ├── SpecError                        spec/: a served model's description or an address that cannot be used
    │   ├── IncompatibleSpecError        another format major, or another dfserve's backends (also a ValueError)
    │   └── EndpointError                an address that cannot be used as written (also a ValueError)
    ├── InvalidImageError                preprocessing: not an image we can classify (also a ValueError)
    │   ├── EmptyImageError, ImageTooLargeError, TooManyPixelsError
    │   ├── ExtremeAspectRatioError, UndecodableImageError
    │   └── UnsupportedFormatError, DecodeCostError   outside the format allowlist; decoding far too costly
    ├── EngineError                      engine/: running an engine on this host
    │   ├── TensorRTUnavailableError     TensorRT or the CUDA bindings not importable
    │   └── EngineCompatibilityError     a plan built for another TensorRT or GPU
    ├── BuildError                       export/: `dfserve build`
    │   ├── CheckpointError, ExportError, ParityError, OutputError
    │   ├── EngineBuildError             TensorRT refused the graph
│   └── DecodeChoiceError            `--decode gpu` where the build cannot decode on a GPU (exit 2)
    ├── ServerError                      triton/: starting and supervising tritonserver
    │   ├── TritonNotFoundError, ServerExitedError
    │   ├── ServerStartError
    │   │   └── PortTakenError
    │   └── ProxyError
    │       └── NginxNotFoundError
    ├── MeasureError                     measure/: what a measurement sends and aims at
    │   ├── PayloadError
    │   └── TargetError
    ├── LoadtestError                    loadtest/: `dfserve loadtest`
    │   └── LocustRunError
    ├── SoakError                        soak/: `dfserve soak`
    ├── BenchError                       bench/: `dfserve bench`
    │   ├── TrtexecError                 trtexec failed or printed no performance summary
    │   └── PerfAnalyzerError            perf_analyzer failed or printed no measurement
    ├── ScoreError                       score/: `dfserve score`
    │   ├── SourceError                  SOURCE cannot be read at all
    │   └── StoreError                   OUT cannot be used (another model's results, another run holding it)
    ├── QualityError                     quality/
    │   ├── VerifyError                  `dfserve verify` cannot compare
    │   └── EvalError                    `dfserve eval` cannot evaluate the folder
    └── dfserve.client.DfserveClientError   the SDK's own tree, in dfserve/client/_exceptions.py: what a caller
                                            of a running server catches, importable without the rest

Why one module: the areas sit in layers whose imports only run downward (pyproject.toml's import-linter
contract), and an error is often raised in one area and caught in another above it; at the bottom, every area
can raise and catch any of them without an upward import. The SDK keeps its tree beside its code because it is
a public API of its own.
"""

from __future__ import annotations


class DfserveError(Exception):
    """Base of every error dfserve raises on purpose; the message is meant for a person."""

    exit_code: int = 1


class UsageError(DfserveError):
    """Options that are each valid but do not go together (found after parsing): a usage error, exit 2."""

    exit_code = 2


class InvalidImageError(DfserveError, ValueError):
    """The input is not an image this service can classify. The message names the problem."""

    reason = "invalid_image"


class EmptyImageError(InvalidImageError):
    reason = "empty"


class ImageTooLargeError(InvalidImageError):
    """The encoded file exceeds the byte limit."""

    reason = "file_too_large"


class TooManyPixelsError(InvalidImageError):
    """The header announces more pixels than allowed (decompression-bomb guard)."""

    reason = "too_many_pixels"


class ExtremeAspectRatioError(InvalidImageError):
    """Longer side over shorter side above `Limits.max_aspect_ratio` (resizing cost guard)."""

    reason = "extreme_aspect_ratio"


class UndecodableImageError(InvalidImageError):
    """Not an image format Pillow knows, or a truncated/corrupt file."""

    reason = "undecodable"


class UnsupportedFormatError(InvalidImageError):
    """An image format outside the allowlist (`dfserve.preprocessing.ALLOWED_FORMATS`): never decoded."""

    reason = "unsupported_format"


class DecodeCostError(InvalidImageError):
    """A file whose decoding would cost far more than any real image of its size (e.g. a JPEG with thousands of
    progressive scans)."""

    reason = "decode_cost"


class SpecError(DfserveError):
    """Root of the spec area's errors."""


class EndpointError(SpecError, ValueError):
    """An address that cannot be used as written; the message says why."""


class IncompatibleSpecError(SpecError, ValueError):
    """A spec written in a format major version this dfserve cannot read, or by another dfserve version where
    the code must match (the Python backends)."""


class BuildError(DfserveError):
    """Base of build errors."""


class CheckpointError(BuildError):
    """The checkpoint cannot be found, read or served."""


class ExportError(BuildError):
    """The model cannot be exported to the served graph."""


class ParityError(BuildError):
    """The built graph or engine is further from the reference than its bar allows."""


class OutputError(BuildError):
    """The repository cannot be written where asked."""


class LoadtestError(DfserveError):
    """Root of `dfserve loadtest`'s errors."""


class MeasureError(DfserveError):
    """Root of the measuring instruments' errors (payloads, targets)."""


class PayloadError(MeasureError):
    """The images a measurement should send cannot be read or made."""


class TargetError(MeasureError):
    """The server a measurement aims at cannot be reached or does not serve a dfserve model."""


class LocustRunError(LoadtestError):
    """Locust failed or wrote no usable output."""


class BenchError(DfserveError):
    """Root of `dfserve bench`'s errors."""


class SoakError(DfserveError):
    """A soak that cannot start or cannot be judged (bad options, an unreachable server)."""


class ServerError(DfserveError):
    """Root of the errors raised while starting or supervising tritonserver."""


class TritonNotFoundError(ServerError):
    """No tritonserver binary could be found."""


class ServerStartError(ServerError):
    """tritonserver exited or did not become ready; the message carries the server's own reason."""


class ServerExitedError(ServerError):
    """A running tritonserver exited on its own."""


class PortTakenError(ServerStartError):
    """A port the server should bind is already in use by another process."""


class EngineError(DfserveError):
    """Root of the engine area's errors: what keeps an engine from running on this host."""


class TensorRTUnavailableError(EngineError):
    """TensorRT (or the CUDA runtime bindings) is not importable on this host."""


class EngineBuildError(BuildError):
    """TensorRT refused the ONNX graph or failed to build the plan."""


class EngineCompatibilityError(EngineError):
    """A plan was built for another TensorRT version or GPU than this host has."""


class ProxyError(ServerError):
    """nginx could not be found, configured or started."""


class NginxNotFoundError(ProxyError):
    """No nginx binary: the message says how to install one."""


class QualityError(DfserveError):
    """Root of the quality area's errors (verify, eval)."""


class VerifyError(QualityError):
    """The reference and the server cannot be compared (labels that differ, nothing to compare)."""


class EvalError(QualityError):
    """The folder cannot be evaluated (no label sub-folders, labels the model does not know, no images)."""


class DecodeChoiceError(BuildError):
    """`--decode gpu` asked of a build that cannot decode on a GPU (the ONNX Runtime engine, or a resize filter the
    device resize does not have). A usage error: the command line exits 2, as argparse does."""

    exit_code = 2


class ScoreError(DfserveError):
    """Root of `dfserve score`'s errors."""


class SourceError(ScoreError):
    """SOURCE cannot be read at all (missing, not a folder or manifest, an fsspec scheme not installed)."""


class StoreError(ScoreError):
    """OUT cannot be used: another model's results, another run holding it, not a dfserve score file."""


class PerfAnalyzerError(BenchError):
    """perf_analyzer failed or printed no measurement."""


class TrtexecError(BenchError):
    """trtexec failed or printed no performance summary (the message quotes its last lines)."""
