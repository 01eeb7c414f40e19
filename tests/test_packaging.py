"""Releases are made as sdist, then wheel from the sdist: that wheel must hold the whole package, py.typed and
the licence, install into a fresh virtual environment with the SDK's dependencies only, and list every command."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"

pytestmark = pytest.mark.slow


def build(*args: str, cwd: Path) -> None:
    # --no-isolation: the build backend (hatchling) comes from the dev extra, so no network is needed
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build("--sdist", "--outdir", str(out), cwd=REPO)
    (sdist,) = out.glob("dfserve-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(out / "unpacked", filter="data")
    (root,) = (out / "unpacked").iterdir()
    build("--wheel", "--outdir", str(out), cwd=root)
    (whl,) = out.glob("dfserve-*.whl")
    return whl


def package_modules() -> set[str]:
    return {
        p.relative_to(SRC).as_posix()
        for p in (SRC / "dfserve").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_python_m_build_works_at_the_root() -> None:
    """`build/` at the root is a folder of container recipes, not a package that shadows PyPA's `build`."""
    result = subprocess.run([sys.executable, "-m", "build", "--version"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not (REPO / "build" / "__init__.py").exists()


def test_wheel_from_sdist_holds_every_file_of_the_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = package_modules() - names
    assert not missing, sorted(missing)
    assert "dfserve/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "build/", "client/", "loadtest/")) for n in names)
    for sub in ("client", "export", "triton", "loadtest", "bench"):
        assert f"dfserve/{sub}/__init__.py" in names


def test_every_module_of_the_wheel_imports(wheel: Path, tmp_path: Path) -> None:
    """Imported from the unpacked wheel (ahead of the checkout on sys.path), not from src/."""
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = f"""
import importlib, pkgutil, sys
sys.path.insert(0, {str(target)!r})
import dfserve
assert dfserve.__file__.startswith({str(target)!r}), dfserve.__file__
skip = ("dfserve.repository.backends.onnx_engine", "dfserve.repository.backends.preprocess",
        "dfserve.repository.backends.torch_engine", "dfserve.repository.backends.decode_engine",
        "dfserve.loadtest.locustfile",
        "dfserve.loadtest.users", "dfserve.loadtest.shapes")  # need Triton's stub, or gevent-patch the process
names = [m.name for m in pkgutil.walk_packages(dfserve.__path__, "dfserve.") if m.name not in skip]
for name in names:
    importlib.import_module(name)
print(len(names))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    modules = [p for p in (SRC / "dfserve").rglob("*.py") if "__pycache__" not in p.parts]
    assert int(result.stdout.strip()) == len(modules) - 1 - 7  # all but dfserve/__init__ and the seven skipped


def test_fresh_venv_sdk_install_lists_every_command_and_names_missing_extras(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    python = str(venv / "bin" / "python")
    torch_free = subprocess.run(
        [python, "-c", "import dfserve, dfserve.client, importlib.util as u; print(u.find_spec('torch'))"],
        capture_output=True,
        text=True,
    )
    assert torch_free.stdout.strip() == "None", torch_free.stderr
    helptext = subprocess.run([str(venv / "bin" / "dfserve"), "--help"], capture_output=True, text=True, check=True)
    for command in ("build", "serve", "classify", "eval", "loadtest", "bench", "demo"):
        assert f"    {command} " in helptext.stdout, command
    from tests.checkpoints import make_checkpoint

    checkpoint = make_checkpoint(tmp_path / "ckpt")  # a real one: the build checks it, then needs torch
    refused = subprocess.run(
        [str(venv / "bin" / "dfserve"), "build", "--model", str(checkpoint), "--out", str(tmp_path / "repo")],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1
    assert "pip install 'dfserve[build]'" in refused.stderr
    assert "Traceback" not in refused.stderr
