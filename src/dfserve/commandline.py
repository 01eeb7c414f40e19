"""What every command's parser shares: argument types and the message for a missing extra. Kept at the bottom of
the package so that each area's `cli` module can use it without importing the `dfserve` command itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

from pydantic import BaseModel, TypeAdapter, ValidationError


def missing_extra_message(command: str, package: str | None) -> str:
    """One line naming the extra to install; plain text (no console markup, which would eat `[build]`)."""
    extra = COMMAND_EXTRAS.get(command, "all")
    install = f"pip install 'dfserve[{extra}]'" if extra else "pip install dfserve"
    return f"error: `dfserve {command}` needs the package {package!r}, which is not installed; run: {install}"


def constrained(model: type[BaseModel], field: str, parse: Callable[[str], Any] = int) -> Callable[[str], Any]:
    """An argparse type that holds a flag to the same bounds as the config field it sets (`Field(ge=1)` on
    `Batching.max_batch_size`, say), so a bad value is a usage error naming the flag (exit 2) before any work,
    never a validation traceback from deep in the build. One source for each bound: the typed config."""
    info = model.model_fields[field]
    annotated = Annotated.__class_getitem__((info.annotation, *info.metadata))  # type: ignore[attr-defined]
    adapter: TypeAdapter[Any] = TypeAdapter(annotated)

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {_article(parse)}") from None
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"].removeprefix("Input ").replace("Input should", "should")
            raise argparse.ArgumentTypeError(f"{text} {reason[0].lower()}{reason[1:]}") from None

    convert.__name__ = getattr(parse, "__name__", "value")  # argparse names the type in its messages
    return convert


def _article(parse: Callable[[str], Any]) -> str:
    return {"int": "an integer", "float": "a number"}.get(getattr(parse, "__name__", ""), "a valid value")


def positive_int(text: str) -> int:
    """argparse type for a count that must be at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} should be at least 1")
    return value


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error: `dfserve build: error: argument --max-batch-size: 0 should be greater
    than or equal to 1 (see dfserve build --help)`, exit 2, instead of the whole usage block above it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_ints(text: str) -> tuple[int, ...]:
    """argparse type for comma-separated positive integers, e.g. batch sizes or a concurrency sweep ("4,8,16")."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


# The extra that brings each command's third-party packages (`pip install 'dfserve[EXTRA]'`).
COMMAND_EXTRAS: dict[str, str] = {
    "build": "build",
    "serve": "server",
    "classify": "",
    "eval": "eval",
    "loadtest": "loadtest",
    "bench": "all",
    "soak": "loadtest",
    "demo": "all",
    "verify": "build",
    "score": "score",
}


def default_out_dir(base: Path | None = None, prefix: str = "loadtest") -> Path:
    """A new folder under `base` (default: the current directory) named after the command and the time."""
    root = base or Path.cwd()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = root / f"{prefix}-{stamp}"
    n = 1
    while candidate.exists():
        n += 1
        candidate = root / f"{prefix}-{stamp}-{n}"
    return candidate


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every default in --help, except where the help already says it or there is none (None, a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, []) or "default" in text:
            return text
        return super()._get_help_string(action) or text
