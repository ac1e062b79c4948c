"""Where the bytes of uploaded files and batch outputs live: a blob store behind fsspec, so one
class serves a local directory (the default, beside the admin's state), memory (tests), and
object storage such as `gs://bucket/prefix` or `s3://bucket/prefix` on Kubernetes (with the
filesystem's package installed: gcsfs, s3fs).

A blob is written under a temporary name and moved into place, so a reader never sees half of
one, and a writer killed midway leaves only a temporary blob that the next write replaces.
"""

from __future__ import annotations

import uuid
from typing import Iterable, Iterator

import fsspec

CHUNK = 1 << 20


class Blobs:
    def __init__(self, url: str) -> None:
        if "://" not in url:
            url = "file://" + url
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as e:
            raise ValueError(f"blob store {url!r}: {e}") from None
        self.url = url
        self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, name: str) -> str:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"blob name {name!r} is not a plain file name")
        return f"{self.root.rstrip('/')}/{name}"

    def put(self, name: str, chunks: Iterable[bytes]) -> int:
        """Write the blob whole; its size in bytes."""
        path = self._path(name)
        temporary = f"{path}.{uuid.uuid4().hex}.partial"
        size = 0
        try:
            with self.fs.open(temporary, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    size += len(chunk)
            self.fs.mv(temporary, path)
        except BaseException:
            if self.fs.exists(temporary):
                self.fs.rm(temporary)
            raise
        return size

    def read(self, name: str) -> Iterator[bytes]:
        with self.fs.open(self._path(name), "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def lines(self, name: str) -> Iterator[bytes]:
        """The blob's lines, without their line ends."""
        with self.fs.open(self._path(name), "rb") as f:
            for line in f:
                yield line.rstrip(b"\r\n")

    def delete(self, name: str) -> None:
        path = self._path(name)
        if self.fs.exists(path):
            self.fs.rm(path)

    def exists(self, name: str) -> bool:
        return self.fs.exists(self._path(name))
