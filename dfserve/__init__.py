"""dfserve: Triton-served inference for Hugging Face ViT-family image classifiers.

The bare install is the SDK (`Client`, `AsyncClient`); `dfserve[build]`, `[server]`, `[loadtest]` add the
build, the embedded server and the load tests.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
