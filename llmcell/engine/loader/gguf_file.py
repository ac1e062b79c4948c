"""A fast reader for GGUF files: header, metadata and memory-mapped tensor data.

`gguf.GGUFReader` builds a numpy view per array element, which costs ~3 s on a 49k-token vocab;
this reader parses the same layout (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) in
one pass and hands tensors to `gguf.quants.dequantize`. Errors name the file and the problem.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

_MAGIC = b"GGUF"
_SCALARS = {  # GGUF value type -> (struct format, size)
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32,
          6: np.float32, 7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
_STRING, _ARRAY = 8, 9


class GGUFError(ValueError):
    """The file is not a GGUF file we can read; the message names the file and the problem."""


@dataclass
class GGUFTensor:
    name: str
    shape: tuple[int, ...]
    """Row-major shape (outermost first), as torch expects: GGUF's dims reversed."""
    qtype: GGMLQuantizationType
    data: np.ndarray
    """Raw bytes, shaped (rows, bytes per row), memory-mapped."""


class GGUFFile:
    def __init__(self, path: str | Path, data: bytes | bytearray | None = None) -> None:
        """`data`: the file's bytes, already in memory (a decrypted file); else `path` is
        mapped."""
        self.path = Path(path)
        try:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r") if data is None else \
                np.frombuffer(data, dtype=np.uint8)
        except (OSError, ValueError) as e:
            raise GGUFError(f"{self.path}: cannot open ({e})") from e
        self._buf = memoryview(self._mm)
        self._pos = 0
        try:
            self.metadata, self.tensors = self._parse()
        except (struct.error, IndexError, UnicodeDecodeError) as e:
            raise GGUFError(f"{self.path}: truncated or corrupt GGUF file ({e})") from e

    # ---- parsing -------------------------------------------------------------------------------
    def _read(self, fmt: str, size: int):
        value = struct.unpack_from(fmt, self._buf, self._pos)[0]
        self._pos += size
        return value

    def _string(self) -> str:
        n = self._read("<Q", 8)
        if n > len(self._buf) - self._pos:
            raise GGUFError(f"{self.path}: string length {n} runs past the end of the file")
        s = bytes(self._buf[self._pos : self._pos + n]).decode("utf-8", errors="replace")
        self._pos += n
        return s

    def _value(self, vtype: int):
        if vtype in _SCALARS:
            return self._read(*_SCALARS[vtype])
        if vtype == _STRING:
            return self._string()
        if vtype == _ARRAY:
            itype = self._read("<I", 4)
            count = self._read("<Q", 8)
            if itype in _NUMPY:
                dtype = np.dtype(_NUMPY[itype])
                arr = np.frombuffer(self._buf, dtype=dtype, count=count, offset=self._pos)
                self._pos += dtype.itemsize * count
                return arr
            return [self._value(itype) for _ in range(count)]
        raise GGUFError(f"{self.path}: unknown metadata value type {vtype}")

    def _parse(self):
        if bytes(self._buf[:4]) != _MAGIC:
            raise GGUFError(f"{self.path}: not a GGUF file (bad magic {bytes(self._buf[:4])!r})")
        self._pos = 4
        version = self._read("<I", 4)
        if version not in (2, 3):
            raise GGUFError(f"{self.path}: unsupported GGUF version {version}")
        n_tensors = self._read("<Q", 8)
        n_kv = self._read("<Q", 8)
        metadata: dict[str, object] = {}
        for _ in range(n_kv):
            key = self._string()
            metadata[key] = self._value(self._read("<I", 4))
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            n_dims = self._read("<I", 4)
            dims = [self._read("<Q", 8) for _ in range(n_dims)]
            qtype = self._read("<I", 4)
            offset = self._read("<Q", 8)
            infos.append((name, dims, qtype, offset))
        alignment = int(metadata.get("general.alignment", 32))
        data_start = -(-self._pos // alignment) * alignment
        tensors: dict[str, GGUFTensor] = {}
        for name, dims, qtype_id, offset in infos:
            try:
                qtype = GGMLQuantizationType(qtype_id)
            except ValueError:
                raise GGUFError(f"{self.path}: tensor {name} has unknown type id {qtype_id}") from None
            block, type_size = GGML_QUANT_SIZES[qtype]
            n_elems = int(np.prod(dims)) if dims else 1
            row = int(dims[0])
            if row % block:
                raise GGUFError(f"{self.path}: tensor {name} row {row} not a multiple of {block}")
            rows = n_elems // row
            nbytes = n_elems // block * type_size
            start = data_start + offset
            if start + nbytes > len(self._mm):
                raise GGUFError(f"{self.path}: tensor {name} runs past the end of the file (truncated?)")
            raw = self._mm[start : start + nbytes].reshape(rows, row // block * type_size)
            tensors[name] = GGUFTensor(name, tuple(int(d) for d in reversed(dims)), qtype, raw)
        return metadata, tensors

    # ---- access ----------------------------------------------------------------------------------
    def get(self, key: str, default=None):
        return self.metadata.get(key, default)

    def require(self, key: str):
        if key not in self.metadata:
            raise GGUFError(f"{self.path}: metadata key {key!r} is missing")
        return self.metadata[key]
