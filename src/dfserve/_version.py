"""The package version, alone in a module at the bottom of the layers: the spec records which dfserve built a
repository, and `dfserve --version` prints it. Keep it equal to `version` in pyproject.toml."""

__version__ = "0.1.0"
