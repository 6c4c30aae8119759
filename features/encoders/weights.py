"""Checksums of what an encoder loads, so any change to it changes the encoder id (and the cache key).

A file's checksum is over every byte (a fine-tuned checkpoint can differ anywhere). A model
folder's checksum is over its whole tree: every file's relative path and bytes, in sorted
order, streamed — weights, configs, tokenizer files, sentence-transformers module folders
(``1_Pooling/config.json``...), custom code. Checksums are memoised per process by path,
size and modification time, so describing an encoder twice (or once per worker) reads the
bytes once.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

# Never read by a loader, and rewritten without any change to the model: left out of a folder hash.
SKIPPED_DIRS = frozenset({".git", "__pycache__", ".cache"})
SKIPPED_SUFFIXES = (".pyc",)
CODE_SUFFIXES = (".py",)
_MEMO: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class FolderHash:
    """A model folder's checksum and what it covered (for the manifest)."""

    checksum: str  # first 16 hex digits of the sha256 over (relative path, file sha256) pairs
    files: tuple[str, ...]  # relative POSIX paths, sorted
    bytes: int

    @property
    def code_files(self) -> list[str]:
        """The Python files in the folder (what ``trust_remote_code`` may run)."""
        return [f for f in self.files if f.endswith(CODE_SUFFIXES)]

    def describe(self) -> dict[str, object]:
        return {"checksum": self.checksum, "files": len(self.files), "bytes": self.bytes}


def _file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """Full sha256 hex digest of one file's bytes (memoised by resolved path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
        _MEMO[key] = h.hexdigest()
    return _MEMO[key]


def file_checksum(path: Path | str) -> str:
    """sha256 (first 16 hex digits) of one file's bytes."""
    return _file_digest(Path(path))[:16]


def tree_files(folder: Path | str) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every file below ``folder``, sorted; symlinks followed
    (hub snapshots are links to blobs), each real folder visited once."""
    root = Path(folder)
    seen: set[str] = set()
    out: list[tuple[str, Path]] = []
    for here, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:  # a link loop or a folder linked twice
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in files:
            p = Path(here) / name
            if name.endswith(SKIPPED_SUFFIXES) or not p.is_file():
                continue
            out.append((p.relative_to(root).as_posix(), p))
    return sorted(out)


def folder_hash(folder: Path | str) -> FolderHash:
    """The checksum of a model folder's whole tree (relative paths + bytes, sorted, streamed)."""
    h = hashlib.sha256()
    names: list[str] = []
    size = 0
    for rel, p in tree_files(folder):
        h.update(rel.encode("utf-8") + b"\0" + _file_digest(p).encode() + b"\n")
        names.append(rel)
        size += p.stat().st_size
    return FolderHash(h.hexdigest()[:16], tuple(names), size)


def weights_checksum(path: Path | str) -> str:
    """Checksum of one file, or of a whole model folder (every file, names included)."""
    p = Path(path)
    return file_checksum(p) if p.is_file() else folder_hash(p).checksum
