"""Settings and addresses are checked before Locust starts, with messages naming the problem."""

from __future__ import annotations

import argparse

import pytest

from dfserve.errors import EndpointError, LoadtestError, TargetError
from dfserve.loadtest.options import LoadSettings
from dfserve.loadtest.runner import LoadtestOptions, run_time_seconds
from dfserve.measure.target import spec_from_config, split_host


@pytest.mark.parametrize(
    ("host", "protocol", "expected"),
    [
        ("127.0.0.1:8000", "http", ("127.0.0.1:8000", "http", False)),
        ("http://h:80/", None, ("h:80", "http", False)),
        ("https://h:443", None, ("h:443", "http", True)),
        ("grpc://h:8001", None, ("h:8001", "grpc", False)),
        ("grpcs://h:8001", "grpc", ("h:8001", "grpc", True)),
        ("h", "http", ("h:8000", "http", False)),  # the SDK's rules: a missing port is the protocol's default
        ("h:8001", None, ("h:8001", "grpc", False)),
    ],
)
def test_split_host(host: str, protocol: str | None, expected: tuple) -> None:
    assert split_host(host, protocol) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "protocol", "message"),
    [
        ("", "http", "no server address"),
        ("ftp://h:1", None, "unsupported URL scheme"),
        ("grpc://h:1", "http", "is a grpc address"),
        ("h:99999", "http", "invalid port"),
        ("h:1/v2", "http", "without a path"),
    ],
)
def test_split_host_refuses(host: str, protocol: str | None, message: str) -> None:
    with pytest.raises(EndpointError, match=message):
        split_host(host, protocol)  # type: ignore[arg-type]


def test_settings_round_trip_through_locust_flags() -> None:
    settings = LoadSettings(mode="pixels", protocol="grpc", batch=4, shape="step", step_users=3, images="/x")
    args = settings.to_locust_args()
    parser = argparse.ArgumentParser()
    for flag in args[::2]:
        parser.add_argument(flag, type=type(getattr(settings, flag[10:].replace("-", "_"))))
    assert LoadSettings.from_namespace(parser.parse_args(args)) == settings


def test_bad_settings_list_every_problem() -> None:
    with pytest.raises(LoadtestError) as err:
        LoadSettings(mode="video", batch=0, step_time=2, step_warmup=3)  # type: ignore[arg-type]
    text = str(err.value)
    assert "mode must be one of file, pixels" in text and "batch must be at least 1" in text
    assert "step-warmup" in text


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("30s", 30), ("2m", 120), ("1h30m", 5400)])
def test_run_time(text: str, seconds: int) -> None:
    assert run_time_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "abc", "5x"])
def test_run_time_refuses(text: str) -> None:
    with pytest.raises(LoadtestError):
        run_time_seconds(text)


def test_constant_load_needs_a_run_time() -> None:
    with pytest.raises(LoadtestError, match="needs a run time"):
        LoadtestOptions(host="h:1", run_time=None).validate()


def test_spec_parameter_must_be_a_valid_spec() -> None:
    assert spec_from_config({"name": "m", "parameters": {}}) is None
    with pytest.raises(TargetError, match="not a valid spec"):
        spec_from_config({"name": "m", "parameters": {"dfserve_spec": {"string_value": "{}"}}})
