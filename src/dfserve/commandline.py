"""What every command's parser shares: argument types and the message for a missing extra. Kept at the bottom of
the package so that each area's `cli` module can use it without importing the `dfserve` command itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
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


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{text} should be at least {low}")
    return value


def positive_int(text: str) -> int:
    """argparse type for a count that must be at least 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type for a count or level that may be 0."""
    return _int_at_least(text, 0)


def port(text: str) -> int:
    """argparse type for a TCP port; 0 asks the system for a free one."""
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (0 to 65535)")
    return value


def positive_float(text: str) -> float:
    """argparse type for a finite number above zero (seconds, a rate)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} should be a number above 0")
    return value


def non_negative_float(text: str) -> float:
    """argparse type for a finite number of at least zero (a warm-up, a growth allowance)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} should be a number of at least 0")
    return value


def checked(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    """An argparse type from a parser that raises ValueError (`dfserve.measure.stats.parse_duration`, say): its
    message becomes the usage error. The command modules wrap their area's parsers with it, so this module needs
    none of them."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


def show_default(value: Any) -> str:
    """A default as a person writes it on the command line: `1,2,4` for a tuple, a path as a path, never a repr."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


class HelpFormatter(argparse.HelpFormatter):
    """Every option's default in its help, written as on the command line (`1,2,4`, not a tuple). An option whose
    help already speaks of its default is left alone; one whose default is None must say in words what None means
    (tests/test_cli.py checks every option of every command). Flags (store_true) default to off and say nothing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or action.nargs == 0
            or action.default in (None, argparse.SUPPRESS)
            or "default" in text
        ):
            return text
        return f"{text} (default: %(default)s)"

    def _expand_help(self, action: argparse.Action) -> str:
        if action.default is not None and action.default is not argparse.SUPPRESS:
            shown = argparse.Action(action.option_strings, action.dest, default=show_default(action.default))
            shown.__dict__.update({k: v for k, v in vars(action).items() if k != "default"})
            return super()._expand_help(shown)
        return super()._expand_help(action)


class RawDescriptionHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """`HelpFormatter` that keeps a description's own line breaks (a module docstring as `dfserve demo`'s)."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error: `dfserve build: error: argument --max-batch-size: 0 should be greater
    than or equal to 1 (see dfserve build --help)`, exit 2, instead of the whole usage block above it; and help
    with every default (`HelpFormatter`) unless a parser asks for another formatter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class DeprecatedAlias(argparse.Action):
    """An old spelling kept for one release: it does what the new option does, after one warning line on stderr
    naming the new spelling. Hidden from --help (the new spelling is the one to learn)."""

    def __init__(
        self, option_strings: Sequence[str], dest: str, new: argparse.Action, new_name: str, **kwargs: Any
    ) -> None:
        super().__init__(
            option_strings,
            new.dest,
            nargs=new.nargs,
            const=new.const,
            default=argparse.SUPPRESS,
            type=new.type if callable(new.type) else None,
            choices=new.choices,
            help=argparse.SUPPRESS,
            metavar=new.metavar,
        )
        self.new = new
        self.new_name = new_name

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        sys.stderr.write(f"warning: {option_string} is deprecated and goes in the next release; use {self.new_name}\n")
        self.new(parser, namespace, values, self.new_name)


def deprecated_alias(parser: argparse.ArgumentParser, *old: str, new: str) -> None:
    """Accept `old` spellings of the already added option `new` for one release, with a warning on use:
    `deprecated_alias(p, "--host", new="--url")`."""
    target = parser._option_string_actions[new]
    parser.add_argument(*old, action=DeprecatedAlias, new=target, new_name=new)


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
