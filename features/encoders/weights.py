"""Checksums of weight files, so a changed checkpoint changes the encoder id (and the cache key).

A checksum is over every byte (a fine-tuned checkpoint can differ anywhere), memoised per
process by path, size and modification time so describing an encoder twice costs nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".npy", ".parquet", ".gguf")
_MEMO: dict[tuple[str, int, int], str] = {}


def file_checksum(path: Path | str, chunk: int = 1 << 22) -> str:
    """sha256 (first 16 hex digits) of one file's bytes."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _MEMO:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
        _MEMO[key] = h.hexdigest()[:16]
    return _MEMO[key]


def weights_checksum(path: Path | str) -> str:
    """Checksum of a weight file, or of every weight file in a model folder (names included)."""
    p = Path(path)
    if p.is_file():
        return file_checksum(p)
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES)
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(p)).encode())
        h.update(file_checksum(f).encode())
    return h.hexdigest()[:16]
