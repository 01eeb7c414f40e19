"""The root of dfserve's exceptions.

    DfserveError
    ├── dfserve.errors.BuildError            checkpoint, export, parity, repository writing
    ├── dfserve.errors.ServerError                  starting and supervising tritonserver
    ├── dfserve.errors.IncompatibleSpecError        a spec of another format major, or another dfserve's backends
    ├── dfserve.errors.InvalidImageError     not an image we can classify (also a ValueError)
    └── dfserve.client.DfserveClientError          everything an SDK caller catches

The CLI prints a `DfserveError` as one line (no traceback) and exits with its `exit_code`.
"""

from __future__ import annotations


class DfserveError(Exception):
    """Base of every error dfserve raises on purpose; the message is meant for a person."""

    exit_code: int = 1


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


class EndpointError(DfserveError, ValueError):
    """An address that cannot be used as written; the message says why."""


class IncompatibleSpecError(DfserveError, ValueError):
    """A spec written in a format major version this dfserve cannot read, or by another dfserve version where
    the code must match (the Python backends)."""


class BuildError(DfserveError):
    """Base of build errors."""


class CheckpointError(BuildError):
    pass


class ExportError(BuildError):
    pass


class ParityError(BuildError):
    pass


class OutputError(BuildError):
    pass


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


class TensorRTUnavailableError(BuildError):
    """TensorRT (or the CUDA runtime bindings) is not importable on this host."""


class EngineBuildError(BuildError):
    """TensorRT refused the ONNX graph or failed to build the plan."""


class EngineCompatibilityError(BuildError):
    """A plan was built for another TensorRT version or GPU than this host has."""
