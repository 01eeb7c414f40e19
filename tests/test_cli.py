"""The root command: every command listed, no heavy imports for --help, missing extras named in one line."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dfserve.cli import build_parser, main
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


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    root = build_parser()
    sub = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_of_every_command_has_help_with_its_default_and_no_python_reprs() -> None:
    """A default in words or as on the command line (`1,2,4`), never `(default: None)`, a tuple or a Path."""
    problems = []
    commands = _subparsers()
    assert set(COMMANDS) <= set(commands)
    for name, parser in commands.items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
                continue
            text = formatter._expand_help(action) if action.help else ""
            where = f"{name} {'/'.join(action.option_strings)}"
            if not text:
                problems.append(f"{where}: no help")
            elif action.nargs != 0 and "default" not in text:  # flags default to off
                problems.append(f"{where}: no default in {text!r}")
            if "None)" in text or re.search(r"\(\d+, \d+|\[\d|\['|Path\(|\(\)", text):
                problems.append(f"{where}: a Python repr in {text!r}")
    assert problems == []


def test_tuple_defaults_show_as_the_command_line_writes_them(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 1,2,4,8,16)" in out and "(default: 1,8)" in out and "(default: 2.5s)" in out


@pytest.mark.parametrize(
    ("argv", "dest", "value", "new"),
    [
        (["loadtest", "--host", "h:1"], "url", "h:1", "--url"),
        (["loadtest", "--users", "3"], "concurrency", 3, "--concurrency"),
        (["loadtest", "-u", "3"], "concurrency", 3, "--concurrency"),
        (["loadtest", "--run-time", "2m"], "duration", 120, "--duration"),
        (["loadtest", "-t", "90"], "duration", 90, "--duration"),
        (["loadtest", "--model", "vit"], "model_name", "vit", "--model-name"),
        (["soak", "-c", "5"], "concurrency", 5, "--concurrency"),
        (["bench", "--seconds", "4"], "window", 4.0, "--window"),
        (["classify", "x.jpg", "--model", "vit"], "model_name", "vit", "--model-name"),
        (["eval", "dir", "--model", "vit"], "model_name", "vit", "--model-name"),
        (["demo", "--loadtest-seconds", "5"], "loadtest_duration", 5.0, "--loadtest-duration"),
    ],
)
def test_old_spellings_still_work_with_one_warning_naming_the_new(
    argv: list[str], dest: str, value: object, new: str, capsys: pytest.CaptureFixture[str]
) -> None:
    old = argv[1] if argv[1].startswith("-") else argv[2]
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: {old} is deprecated and goes in the next release; use {new}"]
    new_argv = [new if a == old else a for a in argv]
    assert getattr(build_parser().parse_args(new_argv), dest) == value
    assert capsys.readouterr().err == ""


def test_build_takes_the_repository_under_either_name() -> None:
    """`--out` is what a command writes; build writes a repository, so `--repository` names it too (no warning)."""
    parser = build_parser()
    assert parser.parse_args(["build", "--repository", "r"]).out == Path("r")
    assert parser.parse_args(["build", "--out", "r"]).out == Path("r")


def test_url_defaults_to_the_local_server_everywhere() -> None:
    from dfserve.spec.endpoints import default_url

    assert default_url() == "http://127.0.0.1:8000" and default_url("grpc") == "grpc://127.0.0.1:8001"
    parser = build_parser()
    for argv in (["classify", "x"], ["eval", "d"], ["verify"], ["loadtest"]):
        assert parser.parse_args(argv).url is None, argv  # resolved with --protocol by default_url


def test_verify_defaults_to_the_default_models_architecture_like_build() -> None:
    parser = build_parser()
    verify = parser.parse_args(["verify", "--random-weights"])
    assert verify.model == parser.parse_args(["build", "--random-weights"]).model


@pytest.mark.parametrize(
    ("argv", "flag", "reason"),
    [
        (["loadtest", "--concurrency", "0"], "--concurrency", "0 should be at least 1"),
        (["loadtest", "--duration", "1.5s"], "--duration", "duration '1.5s' is not whole seconds"),
        (["loadtest", "--spawn-rate", "0"], "--spawn-rate", "0 should be a number above 0"),
        (["loadtest", "--step-warmup", "-1"], "--step-warmup", "-1 should be a number of at least 0"),
        (["soak", "--window", "soon"], "--window", "duration 'soon' is not like"),
        (["soak", "--warmup", "200%"], "--warmup", "warm-up share must be in [0, 100)"),
        (["soak", "--ramp-max", "0"], "--ramp-max", "0 should be at least 1"),
        (["bench", "--rounds", "0"], "--rounds", "0 should be at least 1"),
        (["bench", "--concurrency", "0,2"], "--concurrency", "expected positive integers"),
        (["bench", "--window", "0"], "--window", "duration must be positive"),
        (["classify", "x.jpg", "--concurrency", "0"], "--concurrency", "0 should be at least 1"),
        (["classify", "x.jpg", "--timeout", "-1"], "--timeout", "-1 should be a number above 0"),
        (["eval", "d", "--threshold", "2"], "--threshold", "2 is not a probability between 0 and 1"),
        (["eval", "d", "--target-fpr", "x"], "--target-fpr", "could not convert string to float"),
        (["verify", "--timeout", "0"], "--timeout", "0 should be a number above 0"),
        (["serve", "--http-port", "70000"], "--http-port", "70000 is not a TCP port"),
        (["serve", "--engine-instances", "0"], "--engine-instances", "0 should be greater than or equal to 1"),
        (["serve", "--max-queue-delay-us", "-5"], "--max-queue-delay-us", "-5 should be greater than or equal"),
        (["demo", "--loadtest-duration", "later"], "--loadtest-duration", "duration 'later' is not like"),
    ],
)
def test_bad_values_are_one_usage_line_with_exit_2(
    argv: list[str], flag: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"dfserve {argv[0]}: error: argument {flag}") and reason in lines[0], lines[0]


def test_classify_shared_memory_without_pixels_is_a_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    """Said before any file is read or any server is asked (the path does not exist, no server listens)."""
    assert main(["classify", "no/such/file.jpg", "--shared-memory", "--url", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: --shared-memory carries preprocessed pixels only: add --mode pixels (files go over the network)"
    )


def test_serve_says_what_the_admin_key_unlocks() -> None:
    """`TritonServer` keeps shared memory behind a second, untold key unless --allow-shared-memory."""
    from dfserve.triton.cli import unlocked_apis_line

    closed = unlocked_apis_line(False)
    assert "shared-memory stays closed without --allow-shared-memory" in closed
    assert "shared-memory" not in closed.split(";")[0]
    assert "shared-memory" in unlocked_apis_line(True)


def test_loadtest_without_locust_names_the_extra_and_leaves_no_folder(tmp_path: Path) -> None:
    """An SDK-only install (Locust missing, as `sys.modules['locust'] = None` makes it): the extra is named, in one
    line, and no output folder is made."""
    code = (
        "import sys\n"
        "sys.modules['locust'] = None\n"
        "from dfserve.cli import main\n"
        f"sys.exit(main(['loadtest', '--out', {str(tmp_path / 'out')!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == missing_extra_message("loadtest", "locust")
    assert "pip install 'dfserve[loadtest]'" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_demo_ends_on_a_summary_line() -> None:
    from dfserve.demo import summary_line

    report = {"source": "org/model", "random_weights": True}
    loadtest = {"rps": 12.34, "p99_ms": 250.0, "failures": 0}
    line = summary_line(report, 8, 20.0, 30.5, loadtest, True, Path("demo-out/repository"))
    assert line == (
        "summary: org/model (random weights) served from demo-out/repository; 8 photos classified; 20.0 images/s "
        "over HTTP, 30.5 over gRPC; load test 12.3 req/s, p99 250 ms, 0 failed; verified against the reference "
        "pipeline. Serve it yourself: dfserve serve --repository demo-out/repository"
    )
    assert "NOT verified" in summary_line(report, 8, 1.0, 1.0, None, False, Path("r"))
