"""Tests that need torchvision (the project's main venv has a CPU torch that PyPI's torchvision does not load
against; run these with a venv that has a matching torch + torchvision pair, e.g. torch 2.14.1 + torchvision
0.29.1). They are skipped, saying why, only where torchvision cannot be imported.

Why they matter: where torchvision is missing and the device is the CPU, `dfserve.engine.gpu_decode` lets Pillow
decode the JPEGs (the tests of tests/test_gpu_decode.py run that way in the main venv). This proves the stand-in
gives the very pixels torchvision's CPU decoder gives (both are libjpeg-turbo), so those tests test the real path.
"""

from __future__ import annotations

import pytest
import torch

from dfserve.engine.gpu_decode import TORCHVISION, DeviceDecoder
from dfserve.export.policy import DEFAULT_PROCESSOR_CONFIG
from dfserve.samples import photos
from dfserve.spec.model import Limits, Preprocessing

try:
    from torchvision.io import ImageReadMode, decode_jpeg

    MISSING = ""
except Exception as exc:  # ImportError, or "operator torchvision::nms does not exist" against another torch
    MISSING = f"torchvision is not importable here ({exc}); make test-timm runs these"
# a skip per test, not of the module: the file is collected, so a full run does not count it as never visited
pytestmark = [pytest.mark.timm, pytest.mark.skipif(bool(MISSING), reason=MISSING)]  # the timm environment has it


def test_the_decoder_uses_torchvision_where_it_imports() -> None:
    pp = Preprocessing.from_processor_config(DEFAULT_PROCESSOR_CONFIG)
    assert DeviceDecoder(pp, Limits(), "cpu").jpeg_decoder == TORCHVISION


def test_pillow_stand_in_decodes_the_same_pixels_as_torchvision_on_the_cpu() -> None:
    pp = Preprocessing.from_processor_config(DEFAULT_PROCESSOR_CONFIG)
    decoder = DeviceDecoder(pp, Limits(), "cpu")
    for name, data in photos():
        ours = decoder._pillow_decode(data)
        theirs = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        assert ours is not None and torch.equal(ours, theirs), name
