"""What `dfserve score` reads: a folder walked recursively, or a manifest of paths and URLs, streamed.

An input's key is its path string exactly as found (`SOURCE` joined with the file's place under it) or as
listed (a manifest line, stripped): two files with the same bytes under other names are two inputs, and a
rerun with the same arguments finds the same keys. Neither the walk nor the manifest is ever held whole in
memory: both are generators, so a source of millions of files costs one directory or one line at a time.

Local paths are read with plain `open`; anything with a ``scheme://`` goes through fsspec, so ``s3://``,
``gs://``, ``az://``, ``https://`` work wherever that filesystem's package (s3fs, gcsfs, ...) is installed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfserve.errors import SourceError
from dfserve.spec.model import Limits
from dfserve.spec.names import IMAGE_SUFFIXES


class ReadError(Exception):
    """One input cannot be read; its message becomes that row's `error`."""


def is_url(text: str) -> bool:
    """True for ``scheme://...`` (fsspec); a Windows drive letter or a plain path is local."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").replace("-", "").isalnum()


def _filesystem(url: str) -> tuple[Any, str]:
    """fsspec's filesystem and the path inside it, with one clear line when fsspec or the scheme's package is
    missing."""
    try:
        import fsspec
    except ModuleNotFoundError as exc:
        raise SourceError(f"{url}: reading URLs needs fsspec; run: pip install 'dfserve[score]'") from exc
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise SourceError(f"{url}: no filesystem for this URL ({exc})") from exc


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def walk_folder(folder: str) -> Iterator[str]:
    """Image files under `folder`, recursively, in sorted order, as `folder` joined with their relative path.

    Sorted per directory while walking (never a global list), so the order is the same on every run. Hidden
    files and folders are skipped; an image-named entry that is not a regular file (a dangling link) is kept so
    that it reports its error in place instead of silently disappearing."""
    if is_url(folder):
        fs, root = _filesystem(folder)
        for dirpath, dirnames, filenames in fs.walk(root, detail=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if _is_image_name(name):
                    yield fs.unstrip_protocol(f"{dirpath.rstrip('/')}/{name}")
        return
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if _is_image_name(name):
                yield os.path.join(dirpath, name)


def read_manifest(manifest: str) -> Iterator[str]:
    """The manifest's entries, one a line, stripped; blank lines and ``#`` comments skipped."""
    if is_url(manifest):
        fs, path = _filesystem(manifest)
        handle = fs.open(path, "rt", encoding="utf-8")
    else:
        handle = open(manifest, encoding="utf-8")  # noqa: SIM115 (closed by the with below)
    with handle as lines:
        for line in lines:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                yield entry


@dataclass(frozen=True)
class Source:
    """A folder or a manifest: `inputs()` streams its keys, `resolve(key)` says where to read one."""

    location: str
    kind: str
    """"folder" or "manifest"."""

    @classmethod
    def open(cls, location: str) -> Source:
        """Decide what SOURCE is: a folder (walked) or a file (a manifest). Raises SourceError naming it."""
        if is_url(location):
            fs, path = _filesystem(location)
            try:
                if fs.isdir(path):
                    return cls(location, "folder")
                if fs.isfile(path):
                    return cls(location, "manifest")
            except Exception as exc:  # credentials, network: say so in one line
                raise SourceError(f"{location}: cannot be read: {exc}") from exc
            raise SourceError(f"{location}: no such folder or manifest")
        if os.path.isdir(location):
            return cls(location, "folder")
        if os.path.isfile(location):
            return cls(location, "manifest")
        raise SourceError(f"{location}: no such folder or manifest file")

    def inputs(self) -> Iterator[str]:
        """Every input's key, streamed."""
        return walk_folder(self.location) if self.kind == "folder" else read_manifest(self.location)

    def resolve(self, key: str) -> str:
        """Where to read `key` from: manifest entries that are relative local paths are relative to the
        manifest's own folder, so a manifest and its images can move together."""
        if self.kind == "manifest" and not is_url(key) and not os.path.isabs(key) and not is_url(self.location):
            return os.path.join(os.path.dirname(os.path.abspath(self.location)), key)
        return key


def read_bytes(location: str, limits: Limits) -> bytes:
    """The file's bytes, refusing before reading anything that is not a regular file or is above the byte
    limit (a pipe would block, `/dev/zero` would never end). Raises ReadError with a one-line reason."""
    if is_url(location):
        try:
            fs, path = _filesystem(location)
            size = fs.size(path)
            if size is not None and size > limits.max_file_bytes:
                raise ReadError(f"file is {size} bytes, above the limit of {limits.max_file_bytes} bytes")
            with fs.open(path, "rb") as f:
                data: bytes = f.read(limits.max_file_bytes + 1)
        except ReadError:
            raise
        except FileNotFoundError as exc:
            raise ReadError("no such file") from exc
        except Exception as exc:
            raise ReadError(f"cannot read: {exc}") from exc
    else:
        try:
            st = os.stat(location)
            if not stat.S_ISREG(st.st_mode):
                raise ReadError("not a regular file")
            if st.st_size > limits.max_file_bytes:
                raise ReadError(f"file is {st.st_size} bytes, above the limit of {limits.max_file_bytes} bytes")
            data = Path(location).read_bytes() if st.st_size <= 1 << 20 else _read_bounded(location, limits)
        except ReadError:
            raise
        except FileNotFoundError as exc:
            raise ReadError("no such file") from exc
        except OSError as exc:
            raise ReadError(f"cannot read: {exc.strerror or exc}") from exc
    if len(data) > limits.max_file_bytes:  # it grew since its size was read
        raise ReadError(f"file is above the limit of {limits.max_file_bytes} bytes")
    return data


def _read_bounded(location: str, limits: Limits) -> bytes:
    with open(location, "rb") as f:
        return f.read(limits.max_file_bytes + 1)
