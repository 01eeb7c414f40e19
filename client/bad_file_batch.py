"""A bulk call with bad files among good ones: each bad file gets its own error, the others their scores.

    python client/bad_file_batch.py --url localhost:8000 photos/

`classify_many` returns one result per input, in input order: a `dfserve.Prediction` for a good image, the
error that item met (a `dfserve.InvalidInputError` naming the problem for a corrupt, empty or non-image file)
in place of the others.
The exit code is the number of bad files (0 when all were good), capped at 100.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dfserve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8000")
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    paths = sorted(p for p in args.folder.iterdir() if p.is_file())

    with dfserve.Client(args.url) as client:
        results: list[dfserve.Result] = client.classify_many(paths, concurrency=4)

    bad = 0
    for path, result in zip(paths, results, strict=True):
        if isinstance(result, dfserve.DfserveClientError):
            bad += 1
            print(f"{path.name}: ERROR {type(result).__name__}: {result}")
        else:
            print(f"{path.name}: {result.label} {result.score:.4f}")
    print(f"{len(paths) - bad} classified, {bad} refused")
    return min(bad, 100)


if __name__ == "__main__":
    sys.exit(main())
