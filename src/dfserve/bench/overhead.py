"""How much the SDK costs on top of tritonclient: `Client.classify_many` against a bare tritonclient loop
sending the same requests at the same concurrency, measured in one run, alternating rounds.

The bare loop is what a caller would write by hand: one tritonclient per worker thread, one `InferInput`
with the encoded file per request, `as_numpy` on the result. The SDK adds reading the spec, typed results,
the retry wrapper and error mapping. Both get the same bytes (read once up front), so disk reads do not
count. A figure, not a test: run it with

    python -m dfserve.bench.overhead --url 127.0.0.1:8000 IMAGE_OR_DIR... [--concurrency 8 -n 400]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dfserve.client._client import Client
from dfserve.client._core import grpc_channel_args, resolve_endpoint, triton_module
from dfserve.client._types import Prediction
from dfserve.client.files import find_images


@dataclass(frozen=True)
class OverheadResult:
    """Throughputs in images per second (median over rounds) and the SDK's relative cost."""

    protocol: str
    concurrency: int
    requests_per_round: int
    rounds: int
    bare_ips: float
    sdk_ips: float
    bare_cpu_us: float
    """Client-process CPU time per image (median round), bare loop: robust to a busy machine, unlike throughput."""
    sdk_cpu_us: float

    @property
    def overhead(self) -> float:
        """Fraction of throughput the SDK loses: 0.05 means the SDK is 5% slower than the bare loop."""
        return 1.0 - self.sdk_ips / self.bare_ips

    def summary(self) -> str:
        return (
            f"{self.protocol} concurrency={self.concurrency} n={self.requests_per_round} x {self.rounds} rounds: "
            f"bare tritonclient {self.bare_ips:.1f} img/s, dfserve.Client.classify_many {self.sdk_ips:.1f} img/s, "
            f"SDK overhead {self.overhead * 100:+.1f}%; client CPU per image: bare {self.bare_cpu_us:.0f} us, "
            f"SDK {self.sdk_cpu_us:.0f} us"
        )


def _bare_round(address: str, protocol: str, model: str, tensors: tuple[str, str], blobs: Sequence[bytes],
                concurrency: int) -> float:  # fmt: skip
    """One round of the hand-written loop; returns elapsed seconds."""
    tc = triton_module(protocol)  # type: ignore[arg-type]
    image_name, scores_name = tensors
    counter = itertools.count()
    errors: list[BaseException] = []

    def worker() -> None:
        if protocol == "http":
            client = tc.InferenceServerClient(address)
        else:
            client = tc.InferenceServerClient(address, channel_args=grpc_channel_args())
        try:
            for i in counter:
                if i >= len(blobs):
                    return
                inp = tc.InferInput(image_name, [1, 1], "BYTES")
                inp.set_data_from_numpy(np.array([[blobs[i]]], dtype=np.object_))
                result = client.infer(model, [inp], outputs=[tc.InferRequestedOutput(scores_name)])
                result.as_numpy(scores_name)
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def _sdk_round(client: Client, blobs: Sequence[bytes], concurrency: int) -> float:
    start = time.perf_counter()
    results = client.classify_many(blobs, concurrency=concurrency, raise_on_error=True)
    elapsed = time.perf_counter() - start
    assert all(isinstance(r, Prediction) for r in results)
    return elapsed


def measure_sdk_overhead(
    url: str,
    images: Sequence[str | Path | bytes],
    concurrency: int = 8,
    n: int = 400,
    *,
    rounds: int = 5,
    protocol: str | None = None,
    log: Callable[[str], None] | None = print,
) -> OverheadResult:
    """Throughput of `classify_many` vs a bare tritonclient loop, same `n` requests (cycling over `images`)
    at the same `concurrency`, alternating bare/SDK rounds after one warm-up of each; medians reported."""
    address, proto = resolve_endpoint(url, protocol)
    raw = [img if isinstance(img, bytes) else Path(img).read_bytes() for img in images]
    if not raw:
        raise ValueError("measure_sdk_overhead needs at least one image")
    blobs = [raw[i % len(raw)] for i in range(n)]
    with Client(url, proto, mode="file") as client:
        spec = client.model_spec()
        tensors = (spec.tensors.image, spec.tensors.scores)
        bare_s: list[float] = []
        sdk_s: list[float] = []
        bare_cpu: list[float] = []
        sdk_cpu: list[float] = []
        _bare_round(address, proto, client.model, tensors, blobs[: 2 * concurrency], concurrency)  # warm-up
        _sdk_round(client, blobs[: 2 * concurrency], concurrency)
        for r in range(rounds):
            # alternate which goes first so that drifts in machine load fall on both sides
            order = ("bare", "sdk") if r % 2 == 0 else ("sdk", "bare")
            for side in order:
                cpu = time.process_time()
                if side == "bare":
                    bare_s.append(_bare_round(address, proto, client.model, tensors, blobs, concurrency))
                    bare_cpu.append((time.process_time() - cpu) / n * 1e6)
                else:
                    sdk_s.append(_sdk_round(client, blobs, concurrency))
                    sdk_cpu.append((time.process_time() - cpu) / n * 1e6)
            if log:
                log(f"round {r + 1}/{rounds}: bare {n / bare_s[-1]:.1f} img/s, sdk {n / sdk_s[-1]:.1f} img/s")
    result = OverheadResult(
        protocol=proto,
        concurrency=concurrency,
        requests_per_round=n,
        rounds=rounds,
        bare_ips=n / statistics.median(bare_s),
        sdk_ips=n / statistics.median(sdk_s),
        bare_cpu_us=statistics.median(bare_cpu),
        sdk_cpu_us=statistics.median(sdk_cpu),
    )
    if log:
        log(result.summary())
    return result


def build_parser(prog: str = "python -m dfserve.bench.overhead") -> argparse.ArgumentParser:
    """The options, shared by `python -m dfserve.bench.overhead` and `dfserve bench overhead`."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--url", default="localhost:8000")
    parser.add_argument("--protocol", choices=("http", "grpc"), default=None)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("-n", type=int, default=400, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m dfserve.bench.overhead") -> int:
    args = build_parser(prog).parse_args(argv)
    measure_sdk_overhead(
        args.url, find_images(args.images), args.concurrency, args.n, rounds=args.rounds, protocol=args.protocol
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
