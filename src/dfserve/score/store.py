"""The results of `dfserve score`: Parquet part files committed atomically, merged into one file at the end.

Exactly once, whatever kills the job (kill -9 included):

- While running, finished rows are buffered and written as numbered part files in ``OUT.parts/``: each part is
  written to a temporary name, fsynced, then renamed (atomic on POSIX) and the folder fsynced. A part therefore
  exists whole or not at all; a temporary file left by a killed run is deleted on the next start.
- On start, the keys (paths) of every committed part and of OUT itself are the done set: those inputs are
  skipped; everything else is scored again, so a row lost with an unflushed buffer is redone, never missing.
- Each key is written by one part only (the run claims a key before scoring it; a key listed twice is one
  input), so the parts hold each input at most once.
- When the source is exhausted, OUT is rewritten as one Parquet file (OUT's rows if it existed, then the parts'
  rows not already in it, one row group per part), fsynced and renamed over OUT, then the parts are removed. A
  kill between the rename and the removal leaves parts whose rows OUT already holds: the next merge skips them.

The done set keeps 16-byte digests of the keys in a sorted NumPy array (plus a small set of recent ones), so
ten million done inputs cost about 160 MB, not the gigabytes a set of path strings would.

Results of different models never mix: every file carries the identity (entry model name and the served spec's
digest) in its Parquet metadata, and a run whose server serves another model refuses to touch OUT, naming both.
A second run on the same OUT while one is running is refused too (an advisory lock, released by the kernel
when its process dies however it dies).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dfserve.errors import StoreError
from dfserve.spec.model import ModelSpec

METADATA_KEY = b"dfserve.score"
PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
TMP_MARK = ".tmp-"
DEFAULT_ROWS_PER_PART = 5_000
DEFAULT_FLUSH_SECONDS = 30.0
"""A part is committed after this many rows or this long after the previous one, whichever comes first: a kill
loses at most this much work."""
SPEC_FIELDS_NOT_IN_IDENTITY = {"batching", "dfserve_version", "format_version"}
"""How the server batches, and which dfserve wrote the spec, do not change a score."""


@dataclass(frozen=True)
class Identity:
    """Which model produced the rows: results of two identities never share a file."""

    model: str
    """The entry model's name (the ensemble, e.g. ``detector``)."""
    spec_id: str
    """A digest of the served spec, less the fields that cannot change a score (batching, dfserve version)."""
    description: str
    """For people: the checkpoint, engine and precision."""

    @classmethod
    def of(cls, spec: ModelSpec, model: str) -> Identity:
        data = spec.model_dump(mode="json", exclude=SPEC_FIELDS_NOT_IN_IDENTITY)
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        revision = f"@{spec.revision}" if spec.revision else ""
        return cls(model, digest, f"{spec.source}{revision} ({spec.engine}, {spec.precision})")

    def to_json(self) -> str:
        return json.dumps({"model": self.model, "spec_id": self.spec_id, "description": self.description})

    @classmethod
    def from_metadata(cls, metadata: dict[bytes, bytes] | None) -> Identity | None:
        if not metadata or METADATA_KEY not in metadata:
            return None
        data = json.loads(metadata[METADATA_KEY])
        return cls(str(data["model"]), str(data["spec_id"]), str(data.get("description", "")))

    def __str__(self) -> str:
        return f"model {self.model!r}, spec {self.spec_id} ({self.description})"


@dataclass
class Row:
    """One input's result: its scores, or the reason it failed."""

    path: str
    sha256: str | None
    label: str | None = None
    scores: dict[str, float] | None = None
    error: str | None = None
    model_version: str | None = None


def schema(identity: Identity | None = None) -> Any:
    """The Parquet schema of every part and of OUT, with the identity in its metadata."""
    import pyarrow as pa

    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("sha256", pa.string()),
        pa.field("label", pa.string()),
        pa.field("scores", pa.map_(pa.string(), pa.float64())),
        pa.field("error", pa.string()),
        pa.field("model", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("spec_id", pa.string()),
    ]
    return pa.schema(fields, metadata={METADATA_KEY: identity.to_json().encode()} if identity else None)


def digest_of(key: str) -> bytes:
    """A key's 16-byte digest: collisions are out of reach (2^-64 at ten billion keys)."""
    return hashlib.blake2b(key.encode(), digest_size=16).digest()


def key_digests(keys: Iterable[str]) -> np.ndarray:
    """16-byte digests of keys, as a NumPy ``S16`` array."""
    return np.array([digest_of(k) for k in keys], dtype="S16")


class DoneKeys:
    """A set of keys held as digests: a sorted array plus a few recent ones, merged in now and then."""

    COMPACT_AT = 65_536

    def __init__(self) -> None:
        self._sorted = np.empty(0, dtype="S16")
        self._recent: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)

    def __contains__(self, key: str) -> bool:
        return self.has_digest(digest_of(key))

    def has_digest(self, digest: bytes) -> bool:
        return digest in self._recent or bool(self.contains_digests(np.array([digest], dtype="S16"))[0])

    def contains_digests(self, digests: np.ndarray) -> np.ndarray:
        """Which of `digests` (``S16``) are in the sorted part (the recent ones are checked by the caller)."""
        if len(self._sorted) == 0:
            return np.zeros(len(digests), dtype=bool)
        at = np.minimum(np.searchsorted(self._sorted, digests), len(self._sorted) - 1)
        return np.asarray(self._sorted[at] == digests)

    def add(self, key: str) -> None:
        self.add_digest(digest_of(key))

    def add_digest(self, digest: bytes) -> None:
        self._recent.add(digest)
        if len(self._recent) >= self.COMPACT_AT:
            self._compact()

    def add_digests(self, digests: np.ndarray) -> None:
        self._compact(digests)

    def _compact(self, more: np.ndarray | None = None) -> None:
        parts = [self._sorted, np.array(list(self._recent), dtype="S16")]
        if more is not None:
            parts.append(more.astype("S16"))
        self._sorted = np.unique(np.concatenate(parts))
        self._recent = set()


@dataclass
class Summary:
    """What a finished run leaves in OUT."""

    rows: int
    errors: int
    parts_merged: int


@dataclass
class ResultStore:
    """OUT and its parts folder: open (lock, check identity, read the done set), add rows, finish (merge)."""

    out: Path
    identity: Identity
    rows_per_part: int = DEFAULT_ROWS_PER_PART
    flush_seconds: float = DEFAULT_FLUSH_SECONDS
    done_before: DoneKeys = field(default_factory=DoneKeys)
    """Keys in OUT and the committed parts when this run started."""
    claimed: DoneKeys = field(default_factory=DoneKeys)
    """Keys this run has taken on (scored, being scored, or waiting in the buffer)."""
    rows_written: int = 0
    errors_written: int = 0
    _buffer: list[Row] = field(default_factory=list)
    _last_flush: float = field(default_factory=time.monotonic)
    _lock_fd: int | None = None
    _next_part: int = 0

    @property
    def parts_dir(self) -> Path:
        return self.out.with_name(self.out.name + ".parts")

    def open(self) -> ResultStore:
        """Lock OUT, remove temporary files a killed run left, refuse another model's OUT, read the done set."""
        import pyarrow.parquet  # noqa: F401  (fail now, not at the first flush, when the extra is missing)

        if self.out.exists() and not self.out.is_file():
            raise StoreError(f"{self.out} exists and is not a file")
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.parts_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise StoreError(f"another `dfserve score` is writing {self.out} (it holds {self.parts_dir})") from exc
        self._lock_fd = fd
        for leftover in self.out.parent.glob(f".{self.out.name}{TMP_MARK}*"):
            leftover.unlink(missing_ok=True)
        for leftover in self.parts_dir.glob(f"*{TMP_MARK}*"):
            leftover.unlink(missing_ok=True)
        for path in [self.out] if self.out.exists() else []:
            self._check_identity(path)
            self.done_before.add_digests(_path_digests(path))
        parts = self._parts()
        for part in parts:
            self._check_identity(part)
            self.done_before.add_digests(_path_digests(part))
        self._next_part = 1 + max((_part_number(p) for p in parts), default=-1)
        return self

    def _parts(self) -> list[Path]:
        return sorted(self.parts_dir.glob(f"{PART_PREFIX}*{PART_SUFFIX}"), key=_part_number)

    def _check_identity(self, path: Path) -> None:
        import pyarrow.parquet as pq

        try:
            theirs = Identity.from_metadata(pq.read_schema(path).metadata)
        except Exception as exc:
            raise StoreError(f"{path} is not a readable Parquet file ({exc}); choose another --out") from exc
        if theirs is None:
            raise StoreError(f"{path} was not written by `dfserve score`; choose another --out")
        if (theirs.model, theirs.spec_id) != (self.identity.model, self.identity.spec_id):
            raise StoreError(
                f"{path} holds results of {theirs}, but the server serves {self.identity}: refusing to mix two "
                "models' results; choose another --out"
            )

    def claim(self, key: str) -> bool:
        """True if `key` still needs scoring (then it is this run's); False if it is done or already taken."""
        digest = digest_of(key)
        if self.done_before.has_digest(digest) or self.claimed.has_digest(digest):
            return False
        self.claimed.add_digest(digest)
        return True

    def add(self, row: Row) -> None:
        """Buffer one finished row; commit a part when the buffer is full or old enough."""
        self._buffer.append(row)
        if len(self._buffer) >= self.rows_per_part or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered rows as the next part (tmp file, fsync, rename, fsync the folder)."""
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        import pyarrow.parquet as pq

        rows, self._buffer = self._buffer, []
        table = self._table(rows)
        final = self.parts_dir / f"{PART_PREFIX}{self._next_part:06d}{PART_SUFFIX}"
        tmp = final.with_name(final.name + f"{TMP_MARK}{os.getpid()}")
        pq.write_table(table, tmp)
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(self.parts_dir)
        self._next_part += 1
        self.rows_written += len(rows)
        self.errors_written += sum(r.error is not None for r in rows)

    def _table(self, rows: list[Row]) -> Any:
        """Rows to an Arrow table, column by column: building the `scores` map from flat arrays is about 20x
        faster than letting Arrow convert one dict per row, which would cost more than the request."""
        import pyarrow as pa

        offsets: list[int] = [0]
        names: list[str] = []
        values: list[float] = []
        valid: list[bool] = []
        for row in rows:
            if row.scores is not None:
                names.extend(row.scores)
                values.extend(row.scores.values())
            offsets.append(len(names))
            valid.append(row.scores is not None)
        mask = pa.array([not v for v in valid], type=pa.bool_())
        scores = pa.MapArray.from_arrays(
            pa.array(offsets, type=pa.int32()),
            pa.array(names, type=pa.string()),
            pa.array(values, type=pa.float64()),
            mask=mask,
        )
        n = len(rows)
        columns = [
            pa.array([r.path for r in rows], type=pa.string()),
            pa.array([r.sha256 for r in rows], type=pa.string()),
            pa.array([r.label for r in rows], type=pa.string()),
            scores,
            pa.array([r.error for r in rows], type=pa.string()),
            pa.array([self.identity.model] * n, type=pa.string()),
            pa.array([r.model_version for r in rows], type=pa.string()),
            pa.array([self.identity.spec_id] * n, type=pa.string()),
        ]
        return pa.Table.from_arrays(columns, schema=schema(self.identity))

    def finish(self) -> Summary:
        """Flush, then merge OUT and the parts into a new OUT (atomically) and remove the parts."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        self.flush()
        parts = self._parts()
        tmp = self.out.with_name(f".{self.out.name}{TMP_MARK}{os.getpid()}")
        in_out = DoneKeys()
        rows = errors = 0
        with pq.ParquetWriter(tmp, schema(self.identity)) as writer:
            if self.out.exists():
                old = pq.ParquetFile(self.out)
                for i in range(old.num_row_groups):
                    group = old.read_row_group(i)
                    writer.write_table(group)
                    in_out.add_digests(key_digests(group.column("path").to_pylist()))
                    rows, errors = rows + group.num_rows, errors + _errors(group)
            for part in parts:
                table = pq.read_table(part)
                if len(in_out):  # only after a kill between a previous merge's rename and its clean-up
                    already = in_out.contains_digests(key_digests(table.column("path").to_pylist()))
                    table = table.filter(pc.invert(already))
                writer.write_table(table)
                rows, errors = rows + table.num_rows, errors + _errors(table)
        _fsync(tmp)
        os.replace(tmp, self.out)
        _fsync(self.out.parent)
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        return Summary(rows=rows, errors=errors, parts_merged=len(parts))

    def close(self) -> None:
        """Release the lock. Buffered rows not flushed are dropped: the next run scores them again."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> ResultStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _path_digests(path: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    chunks = [
        key_digests(file.read_row_group(i, columns=["path"]).column("path").to_pylist())
        for i in range(file.num_row_groups)
    ]
    return np.concatenate(chunks) if chunks else np.empty(0, dtype="S16")


def _errors(table: Any) -> int:
    column = table.column("error")
    return int(len(column) - column.null_count)


def _part_number(path: Path) -> int:
    return int(path.name[len(PART_PREFIX) : -len(PART_SUFFIX)])


def _fsync(path: Path) -> None:
    """Make a file's bytes, or a folder's entries (a rename), durable before going on."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
