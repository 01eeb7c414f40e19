"""Build errors: each one names the problem in one line, for a person watching `dfserve build`.

BuildError
├── CheckpointError       missing or corrupt files, unreachable hub, unsupported architecture or processor
├── ExportError           ONNX export or graph composition failed
├── ParityError           the built model disagrees with the reference beyond the tolerance
└── OutputError           the output folder cannot be written
"""

from __future__ import annotations

from dfserve.errors import DfserveError


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
