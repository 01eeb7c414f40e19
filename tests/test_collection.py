"""`make test` fails when a test file is never collected (tests/collection.py), shown on a real pytest run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CONFTEST = """
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    from tests import collection
    collection.record(config, items)

def pytest_sessionfinish(session):
    from tests import collection
    collection.check(session)
"""


def make_project(root: Path, *test_files: str) -> None:
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    tests = root / "tests"
    tests.mkdir()
    (tests / "__init__.py").write_text("")
    (tests / "collection.py").write_text((REPO / "tests" / "collection.py").read_text())
    (tests / "conftest.py").write_text(CONFTEST)
    for name in test_files:
        path = tests / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("def test_it():\n    assert True\n")


def run_pytest(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_a_folder_pytest_skips_fails_the_run(tmp_path: Path) -> None:
    make_project(tmp_path, "test_top.py", "build/test_hidden.py", "export/test_seen.py")
    result = run_pytest(tmp_path)
    assert result.returncode == 1, result.stdout
    assert "2 passed" in result.stdout  # the visible tests ran and passed ...
    assert "1 test file(s) were never collected: tests/build/test_hidden.py" in result.stdout  # ... yet it failed


def test_a_complete_run_passes_and_deselection_does_not_count(tmp_path: Path) -> None:
    make_project(tmp_path, "test_top.py", "export/test_seen.py")
    assert run_pytest(tmp_path).returncode == 0
    assert run_pytest(tmp_path, "-k", "nothing-matches").returncode == 5  # deselected is still collected
    assert "never collected" not in run_pytest(tmp_path, "-k", "nothing-matches").stdout
