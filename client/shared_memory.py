"""Send pixels through system shared memory: preprocessing here, no image bytes on the socket.

    DFSERVE_ADMIN_KEY=... python client/shared_memory.py --url localhost:8000 photo.jpg

Only for a client on the same host as the server. Registering shared-memory regions is a restricted Triton
API, so the server's admin key is needed; it is read from the environment, never from the command line. The
client makes its regions readable and writable by its own user only and removes them on close.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import dfserve
from dfserve.spec.names import ADMIN_KEY_ENV


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8000")
    parser.add_argument("images", nargs="+", type=Path)
    args = parser.parse_args(argv)
    key = os.environ.get(ADMIN_KEY_ENV)
    if not key:
        print(f"set ${ADMIN_KEY_ENV} to the server's admin key", file=sys.stderr)
        return 2

    with dfserve.Client(args.url, mode="pixels", shared_memory=True, admin_key=key) as client:
        for path in args.images:
            prediction = client.classify(path)
            print(f"{path.name}: {prediction.label} {prediction.score:.4f}")
        print(f"regions used: {len(client.shared_memory_regions())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
