"""Files at rest under AES-256-GCM envelope encryption (the `cryptography` package).

A file is encrypted under a fresh data key; the data key is stored in the file's header wrapped
(AES-256-GCM) by a master key that lives elsewhere (a file, a Kubernetes Secret). Rotating the
master key re-wraps the data key in the header and leaves the body as it is. The body is a
sequence of chunks, each sealed with its own nonce and bound to the file's id, its index and
whether it is the last, so chunks cannot be reordered, swapped between files or cut off. Readers
decrypt into memory: nothing here writes plaintext to disk.

    header  MAGIC(8) version(1) file id(16) key id(8) wrap nonce(12) wrapped data key(48)
    chunk   length(4) nonce(12) ciphertext+tag(length)   ...   (the last one flagged in its AAD)
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import struct
from pathlib import Path

MAGIC = b"LLMCENC1"
VERSION = 1
CHUNK = 4 << 20
_HEADER = struct.Struct("!8sB16s8s12s48s")


class DecryptionError(ValueError):
    """A wrong key, or a file that was changed or cut short."""


def _aesgcm(key: bytes):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # only where files are sealed

    return AESGCM(key)


def new_master_key() -> str:
    """A master key as text (base64 of 32 random bytes), for a key file or a Secret."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def read_key(path: str | Path) -> bytes:
    """The 32-byte master key in a key file; ValueError naming the file when it is not one."""
    try:
        key = base64.b64decode(Path(path).read_text().strip(), validate=True)
    except OSError as e:
        raise ValueError(f"key file {path}: {e.strerror}") from None
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ValueError(f"key file {path} does not hold a master key (base64 of 32 bytes; make "
                         "one with `llmcell keys new master-key`)")
    return key


def key_id(master: bytes) -> bytes:
    return hashlib.sha256(b"llmcell master key id" + master).digest()[:8]


def is_encrypted(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except (IsADirectoryError, FileNotFoundError):
        return False


def _aad(file_id: bytes, index: int, last: bool) -> bytes:
    return MAGIC + bytes([VERSION]) + file_id + struct.pack("!Q?", index, last)


def encrypt_file(src: str | Path, dst: str | Path, master: bytes) -> None:
    """Write `src` encrypted to `dst` (through a temporary file beside it)."""
    data_key, file_id, wrap_nonce = secrets.token_bytes(32), secrets.token_bytes(16), \
        secrets.token_bytes(12)
    wrapped = _aesgcm(master).encrypt(wrap_nonce, data_key, MAGIC + file_id)
    sealer = _aesgcm(data_key)
    tmp = Path(f"{dst}.tmp-{os.getpid()}")
    size = Path(src).stat().st_size
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        fout.write(_HEADER.pack(MAGIC, VERSION, file_id, key_id(master), wrap_nonce, wrapped))
        index, done = 0, 0
        while True:
            chunk = fin.read(CHUNK)
            done += len(chunk)
            last = done >= size
            nonce = secrets.token_bytes(12)
            sealed = sealer.encrypt(nonce, chunk, _aad(file_id, index, last))
            fout.write(struct.pack("!I", len(sealed)) + nonce + sealed)
            index += 1
            if last:
                break
    os.replace(tmp, dst)


def _header(f, path, master: bytes) -> tuple[bytes, bytes]:
    """(file id, data key) of an open encrypted file."""
    raw = f.read(_HEADER.size)
    if len(raw) != _HEADER.size:
        raise DecryptionError(f"{path}: not an llmcell encrypted file (too short)")
    magic, version, file_id, kid, wrap_nonce, wrapped = _HEADER.unpack(raw)
    if magic != MAGIC or version != VERSION:
        raise DecryptionError(f"{path}: not an llmcell encrypted file (version {version})")
    if kid != key_id(master):
        raise DecryptionError(f"{path} was encrypted under another master key (key id "
                              f"{kid.hex()}; this key's is {key_id(master).hex()})")
    from cryptography.exceptions import InvalidTag

    try:
        return file_id, _aesgcm(master).decrypt(wrap_nonce, wrapped, MAGIC + file_id)
    except InvalidTag:
        raise DecryptionError(f"{path}: the master key does not open this file") from None


def decrypt_file(path: str | Path, master: bytes) -> bytearray:
    """The plaintext of `path`, in memory only."""
    from cryptography.exceptions import InvalidTag

    out = bytearray()
    with open(path, "rb") as f:
        file_id, data_key = _header(f, path, master)
        opener = _aesgcm(data_key)
        index, last = 0, False
        while not last:
            head = f.read(16)
            if len(head) < 16:
                raise DecryptionError(f"{path} is cut short (chunk {index} missing)")
            (length,), nonce = struct.unpack("!I", head[:4]), head[4:]
            sealed = f.read(length)
            last = f.peek(1) == b""  # the end of the file: this chunk must say it is the last
            try:
                out += opener.decrypt(nonce, sealed, _aad(file_id, index, last))
            except InvalidTag:
                raise DecryptionError(f"{path}: chunk {index} does not decrypt (changed, "
                                      "reordered or cut short)") from None
            index += 1
    return out


SEALED = b"LLMCSEAL"


def seal(master: bytes, data: bytes, label: bytes) -> bytes:
    """A small secret sealed under the master key, bound to `label` (what it is)."""
    nonce = secrets.token_bytes(12)
    return SEALED + key_id(master) + nonce + _aesgcm(master).encrypt(nonce, data, label)


def is_sealed(blob: bytes) -> bool:
    return blob.startswith(SEALED)


def unseal(master: bytes, blob: bytes, label: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag

    kid, nonce, body = blob[8:16], blob[16:28], blob[28:]
    if kid != key_id(master):
        raise DecryptionError(f"{label.decode()} is sealed under another master key (key id "
                              f"{kid.hex()}; this key's is {key_id(master).hex()})")
    try:
        return _aesgcm(master).decrypt(nonce, body, label)
    except InvalidTag:
        raise DecryptionError(f"{label.decode()} does not unseal (changed?)") from None


def rewrap(path: str | Path, old: bytes, new: bytes) -> None:
    """Rotate the master key of `path`: its data key re-wrapped under `new`; the body stays."""
    with open(path, "r+b") as f:
        file_id, data_key = _header(f, path, old)
        wrap_nonce = secrets.token_bytes(12)
        wrapped = _aesgcm(new).encrypt(wrap_nonce, data_key, MAGIC + file_id)
        f.seek(0)
        f.write(_HEADER.pack(MAGIC, VERSION, file_id, key_id(new), wrap_nonce, wrapped))
