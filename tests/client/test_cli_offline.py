"""`dfserve classify` without a real server: against nothing at all (fails fast, one line naming `dfserve serve`)
and against `dfserve.client.testing.FakeServer` for the output formats (one meaning of the number: P(positive)
for a detector). The same commands against the real server are in test_cli.py (slow)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from dfserve.cli import main
from dfserve.client.testing import FakeServer
from dfserve.spec.model import Labels, ModelSpec, Preprocessing
from dfserve.triton.distribution import free_port


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    paths = []
    for i, colour in enumerate([(250, 0, 0), (0, 0, 250)]):
        paths.append(tmp_path / f"photo_{i}.png")
        Image.new("RGB", (30, 20), colour).save(paths[-1])
    return paths


def red_is_fake(image: bytes | object) -> dict[str, float]:
    assert isinstance(image, bytes)
    red = Image.open(io.BytesIO(image)).convert("RGB").getpixel((0, 0))[0] > 128  # type: ignore[index]
    return {"real": 0.3, "fake": 0.7} if red else {"real": 0.8, "fake": 0.2}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_nothing_listening_fails_in_under_3s_with_one_line(
    photos: list[Path], protocol: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{protocol}://127.0.0.1:{free_port()}"
    start = time.monotonic()
    code, out, err = run(capsys, "classify", str(photos[0]), "--url", url)
    elapsed = time.monotonic() - start
    print(f"{protocol}: {elapsed:.2f}s: {err.strip()}")
    assert code == 1 and out == ""
    assert elapsed < 3.0, elapsed
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert url in lines[0] and "connection refused" in lines[0] and "`dfserve serve --repository DIR`" in lines[0]


def test_nothing_listening_as_a_new_process(photos: list[Path]) -> None:
    """As a person sees it (a new process): one line on stderr, nothing on stdout, exit 1, no retry chatter. The
    time is printed, not asserted: Python's start-up on a shared machine varies more than the command."""
    url = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "dfserve.cli", "classify", str(photos[0]), "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(f"new process: {time.monotonic() - start:.2f}s")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: no dfserve server at http://{url} (connection refused): start one with "
        "`dfserve serve --repository DIR`, or point --url at one"
    ]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_positive_score_whichever_label_won(photos: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    with FakeServer(scores=red_is_fake) as server:
        code, out, _ = run(capsys, "classify", *map(str, photos), "--url", server.url, "--json")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["label"], r["score"], r["positive_score"]) for r in records] == [
        ("fake", pytest.approx(0.7), pytest.approx(0.7)),
        ("real", pytest.approx(0.8), pytest.approx(0.2)),  # P(fake), not the winning label's 0.8
    ]


def test_table_shows_p_positive_beside_the_label(photos: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    with FakeServer(scores=red_is_fake) as server:
        code, out, _ = run(capsys, "classify", *map(str, photos), "--url", server.url)
    assert code == 0
    cells = [[c for c in line.split() if c not in "│┃"] for line in out.splitlines()]
    assert ["path", "P(fake)", "label", "error"] in cells
    assert [row[1:] for row in cells if row and row[0].endswith(".png")] == [["0.7000", "fake"], ["0.2000", "real"]]


def test_csv_has_positive_score(photos: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    with FakeServer(scores=red_is_fake) as server:
        code, out, _ = run(capsys, "classify", *map(str, photos), "--url", server.url, "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["label"], r["positive_score"]) for r in rows] == [("fake", "0.700000"), ("real", "0.200000")]


def test_a_model_without_a_positive_class_shows_the_labels_score(
    photos: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = ModelSpec(
        source="cli-test",
        labels=Labels(names=("cat", "dog", "bird"), activation="softmax", num_logits=3),
        preprocessing=Preprocessing(resize="fixed", size=(16, 16)),
    )
    with FakeServer(spec, scores=[0.2, 0.5, 0.3]) as server:
        code, out, _ = run(capsys, "classify", str(photos[0]), "--url", server.url)
        _, json_out, _ = run(capsys, "classify", str(photos[0]), "--url", server.url, "--json")
    assert code == 0 and "score" in out.splitlines()[0] and "0.5000" in out and "dog" in out
    assert json.loads(json_out)["positive_score"] is None


def test_a_server_that_answers_503_is_retried_not_called_absent(
    photos: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeServer() as server:
        server.fail_next(503, "busy", times=1)  # the first inference only; the spec read succeeds
        code, _, err = run(capsys, "classify", str(photos[0]), "--url", server.url, "--json")
    assert code == 0 and "dfserve serve" not in err


def test_piped_table_keeps_a_long_file_name_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long_name = tmp_path / ("a_rather_long_folder_name_" * 4) / ("photo_with_a_very_long_name_" * 5 + ".png")
    long_name.parent.mkdir(parents=True)
    Image.new("RGB", (30, 20), (1, 2, 3)).save(long_name)
    with FakeServer() as server:
        code, out, _ = run(capsys, "classify", str(long_name), "--url", server.url)
    assert code == 0 and len(str(long_name)) > 200
    (row,) = [line for line in out.splitlines() if str(long_name) in line]  # whole, on one line
    assert "0.5000" in row
