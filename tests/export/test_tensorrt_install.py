"""`python -m dfserve.engine.tensorrt check-install`, which build/Dockerfile runs after its installs: the rules on
the facts it gathers (TensorRT itself cannot be installed here), and the command on this host without TensorRT."""

from __future__ import annotations

import subprocess
import sys

from dfserve.engine.tensorrt import install_problems

SYSTEM = "/usr/lib/x86_64-linux-gnu/libnvinfer.so.10.5.0"
PIP_LIB = "/usr/local/lib/python3.10/dist-packages/tensorrt_libs/libnvinfer.so.10"


def test_the_containers_own_tensorrt_passes() -> None:
    assert install_problems("10.5.0", "10.5.0", [SYSTEM], ["tensorrt", "dfserve", "numpy"]) == []
    assert install_problems("10.5.0.18", "10.5.0", [SYSTEM], ["tensorrt"]) == []  # the build number does not count


def test_a_second_tensorrt_from_pip_is_named() -> None:
    problems = install_problems(
        "10.6.0", "10.5.0", [SYSTEM, PIP_LIB], ["tensorrt", "tensorrt-cu12-libs", "tensorrt_cu12"]
    )
    assert problems == [
        "Python's tensorrt is 10.6.0 but the container's libnvinfer is 10.5.0",
        f"libnvinfer loaded from outside the container's folders: {PIP_LIB}",
        "pip installed TensorRT's own libraries (tensorrt-cu12-libs): a second TensorRT",
    ]
    assert install_problems("10.5.0", None, [], [])[0].startswith("no libnvinfer in the container's library folders")


def test_check_install_without_tensorrt_says_where_to_build() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dfserve.engine.tensorrt", "check-install"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "TensorRT is not installed" in done.stderr
