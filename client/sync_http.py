"""Classify image files over HTTP with the synchronous client.

    python client/sync_http.py --url http://localhost:8000 photo.jpg other.png

Prints one line per file: the label, P(positive class) for a detector, and every class's score.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dfserve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://localhost:8000")
    parser.add_argument("images", nargs="+", type=Path)
    args = parser.parse_args(argv)

    with dfserve.Client(args.url, timeout=30.0) as client:
        spec = client.model_spec()
        print(f"serving {spec.architecture} from {spec.source} with labels {list(spec.labels.names)}")
        for path in args.images:
            prediction: dfserve.Prediction = client.classify(path)
            scores = ", ".join(f"{name}={score:.4f}" for name, score in prediction.scores.items())
            positive = prediction.positive_score  # P(positive class), e.g. P(fake); None without one
            extra = f" P({prediction.positive_label})={positive:.4f}" if positive is not None else ""
            print(f"{path.name}: {prediction.label} ({scores}){extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
