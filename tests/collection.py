"""Every `test_*.py` under tests/ must be collected: a file pytest never visits proves nothing.

pytest skips whole folders silently (`build` is in its default `norecursedirs`, a folder can be excluded by a
config line, a file can fail to match `python_files`). These hooks, called from tests/conftest.py, record the
test modules that collection reached and, on a full run (no paths given on the command line), fail the
session naming every `test_*.py` that was never collected.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_KEY = pytest.StashKey[set[Path]]()
_IGNORED_PARTS = {".venv", "__pycache__", "node_modules", ".git"}


def expected_files(root: Path) -> set[Path]:
    return {p.resolve() for p in root.rglob("test_*.py") if not _IGNORED_PARTS & set(p.parts)}


def record(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Remember each test module that collection reached (called before any deselection)."""
    config.stash[_KEY] = {Path(item.path).resolve() for item in items}


def check(session: pytest.Session) -> None:
    """`pytest_sessionfinish`: on a full run, fail when a test file was never collected."""
    config = session.config
    if config.args_source != pytest.Config.ArgsSource.TESTPATHS:
        return  # the caller chose the paths
    collected = config.stash.get(_KEY, set())
    missing = sorted(expected_files(config.rootpath / "tests") - collected)
    if missing:
        names = ", ".join(str(p.relative_to(config.rootpath)) for p in missing)
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        message = f"{len(missing)} test file(s) were never collected: {names}"
        if reporter is not None:
            reporter.write_sep("=", f"ERROR: {message}", red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
