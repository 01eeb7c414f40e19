"""An asyncio service that classifies over gRPC: one `AsyncClient` shared by many concurrent tasks.

    python client/async_grpc_service.py --url grpc://localhost:8001 photos/*.jpg

The client is created once for the service's lifetime (as a web service would on start-up), every request
handler awaits `classify` on it concurrently, and a bounded queue keeps the number in flight at `--workers`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import dfserve


async def handle(client: dfserve.AsyncClient, path: Path) -> str:
    """What one request handler of the service does."""
    try:
        prediction = await client.classify(path)
    except dfserve.InvalidInputError as exc:
        return f"{path.name}: rejected ({exc})"
    return f"{path.name}: {prediction.label} {prediction.score:.4f}"


async def serve(url: str, paths: list[Path], workers: int) -> list[str]:
    queue: asyncio.Queue[Path | None] = asyncio.Queue(maxsize=workers * 2)
    answers: list[str] = []

    async with dfserve.AsyncClient(url, protocol="grpc", timeout=30.0) as client:

        async def worker() -> None:
            while (path := await queue.get()) is not None:
                answers.append(await handle(client, path))

        tasks = [asyncio.create_task(worker()) for _ in range(workers)]
        for path in paths:
            await queue.put(path)
        for _ in tasks:
            await queue.put(None)
        await asyncio.gather(*tasks)
    return answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="grpc://localhost:8001")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("images", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for line in sorted(asyncio.run(serve(args.url, args.images, args.workers))):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
