"""The `dfserve` command: a thin layer over the package's functions.

Each area registers its own sub-commands (`register(subparsers)` in its `cli` module) and imports its heavy
dependencies only when its command runs, so `dfserve --help` is instant and an SDK-only install still works.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from dfserve._version import __version__
from dfserve.commandline import Parser, missing_extra_message
from dfserve.errors import DfserveError
from dfserve.terminal import console

# Modules that provide `register(subparsers) -> None` (or the function named after a colon), in the order their
# commands appear in --help.
COMMAND_MODULES = (
    "dfserve.export.cli",
    "dfserve.quality.cli:register_verify",
    "dfserve.triton.cli",
    "dfserve.quality.cli",
    "dfserve.loadtest.cli",
    "dfserve.bench.cli",
    "dfserve.soak.cli",
    "dfserve.score.cli",
    "dfserve.demo",
)


err_console = console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dfserve",
        description="Build, serve, call and load-test Hugging Face ViT image classifiers on Triton.",
    )
    parser.add_argument("--version", action="version", version=f"dfserve {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for entry in COMMAND_MODULES:
        name, _, function = entry.partition(":")
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("dfserve"):
                continue  # an area not present in this install
            raise
        getattr(module, function or "register")(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DfserveError as exc:
        if args.verbose:
            err_console.print_exception()
        err_console.print("[bold red]error:[/] ", end="")
        err_console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("dfserve"):
            raise
        err_console.print(missing_extra_message(args.command, exc.name), markup=False, highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except BrokenPipeError:
        # `dfserve classify ... --json | head -3`: the reader has gone, which is not an error of ours. Point
        # stdout at /dev/null so that the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
