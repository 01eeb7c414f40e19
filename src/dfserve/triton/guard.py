"""A small HTTP front that refuses request bodies Triton 2.51 would crash on, before Triton parses them.

The Triton bug. Triton's HTTP frontend parses every JSON body (an inference request, or the JSON header of a
binary-tensor request: the first ``Inference-Header-Content-Length`` bytes) with RapidJSON's default,
recursive parser (``triton::common::TritonJson``, ``Document::Parse`` without ``kParseIterativeFlag``). Each
level of nesting is a few stack frames, so a 400 KB body nested 200,000 deep (``{"inputs":[[[[...]]]]}``)
runs off the HTTP thread's stack and the whole server dies of SIGSEGV; 20,000 deep still answers 400. No
option of 2.51 bounds it, and nginx's body-size cap does not help (the body is small). Triton fixed it in
triton-inference-server/common#156 (merged April 2026, test in server#8745): the wrapper parses with
``kParseIterativeFlag``, whose state lives on the heap. A Triton built with that fix needs no depth check,
but the front stays useful: it also bounds the body size, which 2.51 cannot (``--http-max-input-size`` came in
2.55).

What the front does. It listens where clients connect (``dfserve serve``'s HTTP port; with ``--proxy``, nginx
forwards to it) and relays to Triton's HTTP port, which the launcher then binds to a private loopback port.
Per request it reads the head, then the body (Content-Length or chunked, at most `max_body_bytes`), finds the
part Triton parses as JSON (all of it, or the binary extension's header) and refuses it with 400 when it
nests deeper than `MAX_JSON_DEPTH` (a KServe v2 request nests 3 + the tensor's rank deep), with 413 when it
is too large, before a byte of it reaches Triton. Everything else is relayed unchanged: request bytes as they
came, responses as a byte stream (streamed answers, such as the generate extension's server-sent events,
flow through untouched), keep-alive kept. While Triton is down (a restart) the front answers 503, so
readiness probes fail and clients retry.

Cost, measured on this 2-core machine (tests/triton/test_reliability.py prints it): see docs/reliability.md.
The depth scan (`json_depth`) reads the JSON part only, about 5-10 ms per MB here; a binary-tensor request scans
only its header. Only the standard library and NumPy are imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import threading

import numpy as np

LOG = logging.getLogger(__name__)

MAX_JSON_DEPTH = 64
"""Deepest JSON nesting let through. A KServe v2 inference request nests 3 deep plus the rank of a tensor
given as nested arrays (`data` may nest as the shape does); Triton's tensors have at most 64 dimensions in
practice far fewer. Triton 2.51 survives 20,000 and dies at 200,000 (its HTTP thread's stack)."""

MAX_HEAD_BYTES = 64 * 1024
"""Request line and headers together; nginx's default large_client_header_buffers is 4 x 8 KB."""

HEAD_TIMEOUT_S = 75.0
"""An idle keep-alive connection, or a head that does not arrive, is closed after this (nginx's keepalive)."""

BODY_TIMEOUT_S = 300.0
"""A body must arrive within this (a slow client cannot hold a connection forever)."""

_TOKENS = bytes.maketrans(b'"[]{}', b"\x00\x01\xff\x01\xff")  # quote 0, open +1, close -1 (int8)
_NOT_TOKENS = bytes(b for b in range(256) if b not in b'"[]{}')
_CHUNK = 1 << 22


def json_depth(data: bytes | bytearray | memoryview) -> int:
    """The deepest nesting of arrays and objects in `data` read as JSON (brackets inside strings ignored).

    Not a validator. On valid JSON the figure is exact: escapes are cut out first (escaped backslashes, then
    escaped quotes, so that the quotes left pair up as string bounds), everything but quotes and brackets is
    dropped (C-speed ``bytes.replace`` and ``bytes.translate``), and NumPy counts: a bracket after an odd number
    of quotes is inside a string, the running sum of the others is the depth. On text that is not JSON it may
    count too deep (an unterminated string's brackets), never less than the valid prefix Triton parses before
    it fails. Linear: about 10 ms per MB of brackets and quotes here, less for other bytes; NumPy in 4 MB steps
    so memory stays bounded."""
    raw = bytes(data)
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    tokens = raw.translate(_TOKENS, _NOT_TOKENS)
    del raw
    quotes, depth, deepest = 0, 0, 0
    for start in range(0, len(tokens), _CHUNK):
        part = np.frombuffer(tokens, dtype=np.int8, count=min(_CHUNK, len(tokens) - start), offset=start)
        steps = part.astype(np.int32)
        is_quote = part == 0
        if quotes & 1 or is_quote.any():
            inside = (np.cumsum(is_quote, dtype=np.int32) + quotes) & 1
            steps[inside.astype(bool)] = 0
            quotes += int(is_quote.sum())
        levels = np.cumsum(steps, dtype=np.int64)
        deepest = max(deepest, depth + int(levels.max()))
        depth += int(levels[-1])
    return deepest


MAX_CHECKED_JSON_BYTES = 1 << 20
"""JSON parts up to this size are also parsed here (after the depth check, so Python's parser is safe), to answer
what Triton 2.51 gets wrong with 400: malformed JSON (Triton says 500), a negative or huge dimension (500), and
integer data out of its datatype's range (Triton wraps 300 into a UINT8 44 without a word). Larger JSON bodies go
to Triton as they are (a 224 x 224 x 3 UINT8 image as JSON is about 0.6 MB): parsing several MB into Python
objects costs more than the request (a 3.3 MB body: about 0.4 s here)."""

_INFER_PATH = re.compile(rb"^POST /v2/models/[^/ ]+(/versions/[^/ ]+)?/infer[ ?]")
_INT_RANGES = {
    "UINT8": (0, 2**8 - 1),
    "INT8": (-(2**7), 2**7 - 1),
    "UINT16": (0, 2**16 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "UINT32": (0, 2**32 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "UINT64": (0, 2**64 - 1),
}
MAX_ELEMENTS = 2**40
"""A shape whose product is above this is refused: no request holds that many elements, and Triton 2.51's byte
count of such a shape overflows."""


def json_problem(part: bytes, *, infer: bool) -> str | None:
    """What is wrong with a JSON request body (or binary request's JSON header) that Triton would misreport or let
    through: None when nothing is. `infer`: the body of an inference request (its ``inputs`` are checked)."""
    try:
        doc = json.loads(part)
    except (ValueError, RecursionError) as exc:
        return f"malformed JSON in the request: {exc}"
    if not infer or not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        return None
    for tensor in doc["inputs"]:
        if not isinstance(tensor, dict):
            continue
        name, shape = tensor.get("name", "?"), tensor.get("shape")
        if isinstance(shape, list):
            if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
                return f"input {name!r}: shape {shape} must be a list of non-negative integers"
            if math.prod(shape) > MAX_ELEMENTS:
                return f"input {name!r}: shape {shape} has more than {MAX_ELEMENTS} elements"
        bounds = _INT_RANGES.get(str(tensor.get("datatype", "")).upper())
        data = tensor.get("data")
        if bounds is not None and isinstance(data, list) and data:
            try:
                values = np.asarray(data)
            except (ValueError, OverflowError):
                continue  # ragged: Triton names the problem itself
            if values.dtype.kind == "O":  # beyond int64: Python's own integers
                flat = [v for v in values.reshape(-1) if isinstance(v, int)]
                low, high = (min(flat), max(flat)) if flat else (0, 0)
            elif values.dtype.kind in "iuf" and values.size:
                low, high = values.min().item(), values.max().item()
            else:
                continue
            if low < bounds[0] or high > bounds[1]:
                return (
                    f"input {name!r}: {tensor['datatype']} values must lie in {bounds[0]}..{bounds[1]}, "
                    f"got {low}..{high}"
                )
    return None


RESTART_RETRY_AFTER_S = 5
"""Retry-After of the 503 the front answers while tritonserver restarts (ready again 3-5 s after a crash here):
clients that honour it (dfserve's SDK, most HTTP clients) come back once instead of spending their retries."""


def _answer(status: int, reason: str, message: str, *, close: bool = True, retry_after: int | None = None) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *([f"Retry-After: {retry_after}"] if retry_after is not None else []),
        *(["Connection: close"] if close else []),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _Refused(Exception):
    def __init__(self, answer: bytes) -> None:
        super().__init__()
        self.answer = answer


class HttpGuard:
    """The front: `start` binds `listen` and relays to `upstream` in a thread of its own (an asyncio loop)."""

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        upstream: tuple[str, int],
        *,
        max_body_bytes: int,
        max_depth: int = MAX_JSON_DEPTH,
    ) -> None:
        self.listen_host = listen_host
        self.port = listen_port
        self.upstream = upstream
        self.max_body_bytes = max_body_bytes
        self.max_depth = max_depth
        self.refused = 0
        """Requests answered by the front itself (400, 413, 503), for tests and the log."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> HttpGuard:
        """Bind (port 0 picks one: `port` then says which) and serve; raises OSError when the port is taken."""
        self._thread = threading.Thread(target=self._run, name="dfserve-http-guard", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, self.listen_host or None, self.port, limit=MAX_HEAD_BYTES)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # handed to start()
            self._error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self) -> None:
        """Close the listener and every connection; idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5.0)
            loop.stop()

        loop.call_soon_threadsafe(lambda: loop.create_task(shutdown()))
        thread.join(10)

    # ----------------------------------------------------------------- one client connection
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_writer: asyncio.StreamWriter | None = None
        relay: asyncio.Task[None] | None = None
        refusing = asyncio.Event()  # set: the relay must leave the client open for the front's own answer
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    self.refused += 1
                    writer.write(_answer(431, "Request Header Fields Too Large", "request headers too large"))
                    await _linger(reader, writer)
                    return
                try:
                    head, body = await self._read_request(head, reader, writer)
                except _Refused as refused:
                    self.refused += 1
                    refusing.set()
                    if relay is not None and upstream_writer is not None:  # earlier answers first
                        with contextlib.suppress(OSError, RuntimeError):
                            upstream_writer.write_eof()
                        with contextlib.suppress(asyncio.TimeoutError, OSError):
                            await asyncio.wait_for(asyncio.shield(relay), 5.0)
                    writer.write(refused.answer)
                    await _linger(reader, writer)
                    return
                if upstream_writer is None or (relay is not None and relay.done()):
                    try:
                        upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
                    except OSError:
                        self.refused += 1
                        writer.write(
                            _answer(
                                503,
                                "Service Unavailable",
                                "the server is restarting; retry",
                                retry_after=RESTART_RETRY_AFTER_S,
                            )
                        )
                        return
                    relay = asyncio.create_task(self._relay(upstream_reader, writer, refusing))
                upstream_writer.write(head)
                if body:
                    upstream_writer.write(body)
                await upstream_writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            return
        finally:
            if relay is not None and not relay.done():
                if upstream_writer is not None:
                    with contextlib.suppress(OSError, RuntimeError):
                        upstream_writer.write_eof()
                with contextlib.suppress(asyncio.TimeoutError, OSError, asyncio.CancelledError):
                    await asyncio.wait_for(relay, BODY_TIMEOUT_S)
            for w in (upstream_writer, writer):
                if w is not None:
                    with contextlib.suppress(OSError, RuntimeError):
                        await _close(w)

    async def _relay(
        self, upstream: asyncio.StreamReader, client: asyncio.StreamWriter, refusing: asyncio.Event
    ) -> None:
        """Triton's answers to the client, byte for byte, until Triton closes the connection; then the client's
        connection is closed too, unless the front is about to answer a refused request on it."""
        with contextlib.suppress(ConnectionError, OSError):
            while data := await upstream.read(1 << 16):
                client.write(data)
                await client.drain()
        if not refusing.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                client.close()

    async def _read_request(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[bytes, bytes]:
        """The head to forward (``Expect`` answered here) and the raw body; _Refused when it must not pass."""
        lines = head[:-4].split(b"\r\n")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise _Refused(_answer(400, "Bad Request", "malformed request header line"))
            headers[name.strip().lower()] = value.strip()
        if b"expect" in headers:  # answered here, since the body is read before Triton sees the request
            lines = [line for line in lines if not line.lower().startswith(b"expect:")]
            head = b"\r\n".join(lines) + b"\r\n\r\n"
            if headers[b"expect"].lower() == b"100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if chunked:
            raw, payload = await asyncio.wait_for(self._read_chunked(reader), BODY_TIMEOUT_S)
        elif b"content-length" in headers:
            try:
                length = int(headers[b"content-length"])
            except ValueError:
                raise _Refused(_answer(400, "Bad Request", "Content-Length is not a number")) from None
            if length < 0:
                raise _Refused(_answer(400, "Bad Request", "Content-Length is negative"))
            self._check_size(length)
            raw = payload = await asyncio.wait_for(reader.readexactly(length), BODY_TIMEOUT_S)
        else:
            return head, b""
        infer = bool(_INFER_PATH.match(lines[0]))
        await self._check_json(payload, headers.get(b"inference-header-content-length"), infer=infer)
        return head, raw

    def _check_size(self, size: int) -> None:
        if size > self.max_body_bytes:
            limit = self.max_body_bytes
            message = f"request body larger than {limit} bytes, the limit on one request to this server"
            raise _Refused(_answer(413, "Request Entity Too Large", message))

    async def _read_chunked(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        raw, payload = bytearray(), bytearray()
        while True:
            line = await reader.readuntil(b"\r\n")
            raw += line
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _Refused(_answer(400, "Bad Request", "malformed chunk size")) from None
            self._check_size(len(payload) + size)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    raw += trailer
                raw += b"\r\n"
                return bytes(raw), bytes(payload)
            chunk = await reader.readexactly(size + 2)
            raw += chunk
            payload += chunk[:-2]

    async def _check_json(self, payload: bytes, header_length: bytes | None, *, infer: bool) -> None:
        part = payload
        if header_length is not None:
            try:
                part = payload[: int(header_length)]
            except ValueError:
                raise _Refused(_answer(400, "Bad Request", "Inference-Header-Content-Length is not a number")) from None
        if part.count(b"[") + part.count(b"{") > self.max_depth:  # else it cannot nest deeper: most stop here
            if len(part) < 1 << 20:
                depth = json_depth(part)
            else:  # in a worker thread, so that other connections move on meanwhile (NumPy lets go of the GIL)
                depth = await asyncio.get_running_loop().run_in_executor(None, json_depth, part)
            if depth > self.max_depth:
                message = f"JSON nested {depth} deep; at most {self.max_depth} levels are accepted"
                raise _Refused(_answer(400, "Bad Request", message))
        if len(part) <= MAX_CHECKED_JSON_BYTES and part.strip():
            problem = json_problem(part, infer=infer)
            if problem:
                raise _Refused(_answer(400, "Bad Request", problem))


LINGER_S = 30.0
"""After refusing a request whose body is still arriving, read and drop the rest for up to this long (5 s per
read), as nginx's lingering close does: closing at once would reset the connection, and the client would read
"connection reset" (a server that is down, retried) instead of the 413 or 400."""


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError, asyncio.TimeoutError, ConnectionError):
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        deadline = asyncio.get_running_loop().time() + LINGER_S
        while asyncio.get_running_loop().time() < deadline:
            if not await asyncio.wait_for(reader.read(1 << 16), 5.0):
                break


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 5.0)
