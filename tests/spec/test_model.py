"""The spec's format version: newer minor formats are read (unknown fields dropped, said once), another major
is refused naming both versions, and Python backends run only under the dfserve that built them."""

from __future__ import annotations

import json
import logging

import pytest

from dfserve import __version__
from dfserve.errors import IncompatibleSpecError
from dfserve.spec.model import SPEC_FORMAT_VERSION, Labels, ModelSpec, Preprocessing


def spec() -> ModelSpec:
    return ModelSpec(
        source="local",
        labels=Labels(names=("real", "fake"), activation="sigmoid", num_logits=1),
        preprocessing=Preprocessing(resize="fixed", size=(32, 32)),
    )


def test_spec_records_its_format_and_the_building_dfserve() -> None:
    data = json.loads(spec().to_json())
    assert data["format_version"] == SPEC_FORMAT_VERSION
    assert data["dfserve_version"] == __version__
    assert ModelSpec.from_json(spec().to_json()) == spec()


def test_newer_minor_format_with_unknown_fields_is_read_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    major = SPEC_FORMAT_VERSION.split(".")[0]
    data = json.loads(spec().to_json())
    data["format_version"] = f"{major}.99"
    data["future_field"] = {"anything": 1}
    data["batching"]["future_batching_knob"] = 3
    text = json.dumps(data)
    with caplog.at_level(logging.WARNING, logger="dfserve.spec.model"):
        first = ModelSpec.from_json(text)
        second = ModelSpec.from_json(text)
    assert first == second
    assert first.labels.names == ("real", "fake")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert (
        f"{major}.99" in warnings[0]
        and "future_field" in warnings[0]
        and "batching.future_batching_knob" in warnings[0]
    )


def test_unknown_fields_in_our_own_format_are_still_refused() -> None:
    data = json.loads(spec().to_json())
    data["labels"]["typo_field"] = 1
    ModelSpec.from_json(json.dumps(data))  # same major: dropped like a newer minor's
    data["labels"]["names"] = ["only-one"]
    with pytest.raises(ValueError, match="sigmoid labels"):
        ModelSpec.from_json(json.dumps(data))


@pytest.mark.parametrize("version", ["0.9", "2.0", "17.3"])
def test_other_major_format_is_a_clear_error_naming_both(version: str) -> None:
    data = json.loads(spec().to_json())
    data["format_version"] = version
    data["dfserve_version"] = "9.9.9"
    with pytest.raises(IncompatibleSpecError) as info:
        ModelSpec.from_json(json.dumps(data))
    message = str(info.value)
    assert version in message and "9.9.9" in message and __version__ in message


def test_backends_refuse_a_repository_of_another_dfserve() -> None:
    from dfserve.repository.backends.common import spec_from_args

    other = spec().model_copy(update={"dfserve_version": "0.0.1"})
    args = {
        "model_config": json.dumps(
            {"name": "preprocess", "parameters": {"dfserve_spec": {"string_value": other.to_json()}}}
        )
    }
    with pytest.raises(IncompatibleSpecError, match=r"'preprocess' was built by dfserve 0\.0\.1.*" + __version__):
        spec_from_args(args)
    same = {
        "model_config": json.dumps({"name": "p", "parameters": {"dfserve_spec": {"string_value": spec().to_json()}}})
    }
    assert spec_from_args(same) == spec()
