"""The root command: every command listed, no heavy imports for --help, missing extras named in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from dfserve.cli import main
from dfserve.commandline import COMMAND_EXTRAS, missing_extra_message

COMMANDS = ("build", "serve", "classify", "eval", "loadtest", "bench", "score", "demo")


def test_help_lists_every_command_without_importing_numpy_pillow_or_tritonclient() -> None:
    code = (
        "import sys\n"
        "from dfserve.cli import build_parser\n"
        "build_parser().format_help()\n"
        "print(sorted(m for m in ('numpy', 'PIL', 'tritonclient', 'torch', 'locust') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    listed = subprocess.run(
        [sys.executable, "-m", "dfserve.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in COMMANDS:
        assert f"    {command} " in listed, command


def test_every_command_has_an_extra() -> None:
    assert set(COMMANDS) <= set(COMMAND_EXTRAS)


def test_missing_extra_is_named_verbatim(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich's markup would eat `[eval]`: the message is printed as plain text."""
    assert "pip install 'dfserve[eval]'" in missing_extra_message("eval", "sklearn")

    import dfserve.quality.cli as client_cli

    def needs_sklearn(args: object) -> int:
        raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")

    monkeypatch.setattr(client_cli, "run_eval", needs_sklearn)
    assert main(["eval", "folder"]) == 1
    err = capsys.readouterr().err
    assert "pip install 'dfserve[eval]'" in err and "'sklearn'" in err


def test_error_messages_with_brackets_are_printed_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--repository", "no/such[/bold]folder[red]"]) == 1
    assert "no/such[/bold]folder[red] does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "flag", "reason"),
    [
        (["build", "--max-batch-size", "0"], "--max-batch-size", "0 should be greater than or equal to 1"),
        (["build", "--engine-instances", "-1"], "--engine-instances", "-1 should be greater than or equal to 1"),
        (["build", "--max-batch-size", "4096"], "--max-batch-size", "4096 should be less than or equal to 1024"),
        (["build", "--opset", "12"], "--opset", "12 should be greater than or equal to 17"),
        (["build", "--parity-photos", "0"], "--parity-photos", "0 should be at least 1"),
        (["build", "--max-pixels", "many"], "--max-pixels", "'many' is not an integer"),
    ],
)
def test_bad_build_flags_are_one_usage_line_before_any_work(argv: list[str], flag: str, reason: str) -> None:
    """The bounds come from the typed config (`Batching`, `ModelSpec`, `Limits`): a bad value stops the command
    at parsing, with exit 2 and one line naming the flag, before the hub or the checkpoint is touched."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "dfserve.cli", *argv, "--model", "no-such-org/no-such-model"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"dfserve build: error: argument {flag}: {reason} (see dfserve build --help)"]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert time.monotonic() - started < 30
