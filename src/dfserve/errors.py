"""The root of dfserve's exceptions.

    DfserveError
    ├── dfserve.export.errors.BuildError            checkpoint, export, parity, repository writing
    ├── dfserve.triton.server.ServerError                  starting and supervising tritonserver
    ├── dfserve.config.IncompatibleSpecError        a spec of another format major, or another dfserve's backends
    ├── dfserve.preprocessing.InvalidImageError     not an image we can classify (also a ValueError)
    └── dfserve.client.DfserveClientError          everything an SDK caller catches

The CLI prints a `DfserveError` as one line (no traceback) and exits with its `exit_code`.
"""

from __future__ import annotations


class DfserveError(Exception):
    """Base of every error dfserve raises on purpose; the message is meant for a person."""

    exit_code: int = 1
