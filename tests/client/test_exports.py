"""The public surface: what `dfserve` and `dfserve.client` export, and that importing them stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import dfserve
import dfserve.client
from dfserve.client import DfserveClientError
from dfserve.errors import DfserveError


def test_client_exports_match_all() -> None:
    """Every name in __all__ resolves (the package imports them lazily), and dir() shows exactly those."""
    for name in dfserve.client.__all__:
        assert getattr(dfserve.client, name) is not None
    assert dir(dfserve.client) == sorted(dfserve.client.__all__)
    assert dfserve.client.__all__ == sorted(dfserve.client.__all__)


def test_client_package_import_is_light() -> None:
    """`dfserve classify --help` imports the SDK's constants and types without numpy, Pillow or tritonclient."""
    code = (
        "import sys, dfserve.client, dfserve.client._constants, dfserve.client._types; "
        "heavy = [m for m in ('numpy', 'PIL', 'tritonclient') if m in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_package_re_exports_the_sdk() -> None:
    for name in dfserve.__all__:
        assert getattr(dfserve, name) is (
            getattr(dfserve.client, name) if name != "__version__" else dfserve.__version__
        )
    assert {"Client", "AsyncClient", "Prediction", "DfserveClientError"} <= set(dfserve.__all__)
    assert set(dfserve.__all__) - {"__version__"} <= set(dfserve.client.__all__)


def test_every_exception_is_a_client_error_under_the_project_root() -> None:
    errors = [getattr(dfserve.client, n) for n in dfserve.client.__all__ if n.endswith("Error")]
    assert len(errors) >= 9
    for cls in errors:
        assert issubclass(cls, DfserveClientError) and issubclass(cls, DfserveError)
        assert cls.__doc__


def test_import_dfserve_is_light() -> None:
    code = (
        "import sys, dfserve; heavy = [m for m in ('torch', 'tritonclient', 'numpy', 'PIL', 'grpc', 'gevent') "
        "if m in sys.modules]; print(heavy); assert not heavy, heavy; "
        "dfserve.Client; assert 'dfserve.client' in sys.modules; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_prediction_documents_its_fields_and_names_the_positive_score() -> None:
    """help() and the JSON schema show each field's docstring; positive_score is P(positive) whichever label won."""
    import pydoc

    from dfserve.client import Prediction

    schema = Prediction.model_json_schema()["properties"]
    assert "highest score" in schema["label"]["description"]
    assert "positive class" in schema["positive_label"]["description"]
    assert "P(positive class)" in pydoc.render_doc(Prediction, renderer=pydoc.plaintext)
    pred = Prediction(
        label="real",
        score=0.7,
        scores={"real": 0.7, "fake": 0.3},
        model_name="detector",
        model_version="1",
        random_weights=False,
        positive_label="fake",
    )
    assert pred.positive_score == pytest.approx(0.3)
    assert pred.model_copy(update={"positive_label": None}).positive_score is None
