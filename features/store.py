"""Parquet tables with a ``_manifest.json``, published atomically.

A table is a folder of Parquet files written with an explicit schema. It becomes
visible only when complete: it is written to a hidden sibling folder, flushed, then
swapped with the published folder in one atomic step, so a crash at any moment leaves
the old table or the new one where a reader looks (never neither, never half of one);
the hidden leftover is swept by the next run (``pipelines.runs.sweep_leftovers``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from features.errors import PlatformError
from features.schemas import SCHEMA_VERSION

MANIFEST = "_manifest.json"


class StoreError(PlatformError, RuntimeError):
    """A store table is missing, incomplete or does not match its contract."""


def fingerprint_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, for manifests' input fingerprints."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False
    where the system call is unavailable."""
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _replace_dir(new: Path, path: Path) -> Path | None:
    """Put folder ``new`` at ``path``; return where the replaced folder now is (to delete or
    keep), or None. A reader of ``path`` sees the old table or the new one, never neither:
    the two are exchanged atomically (a kill at any moment leaves one of them at ``path``
    and the other under a hidden name that the next run sweeps)."""
    if not path.exists():
        os.rename(new, path)
        return None
    if _exchange(new, path):
        return new  # now holds the old table
    # No atomic exchange here: a short window in which ``path`` is missing.
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(path, old)
    os.rename(new, path)
    return old


@contextlib.contextmanager
def publish(path: Path | str, *, previous: Path | None = None) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path`` atomically.

    With ``previous`` the replaced table is kept there (one generation: the one before
    is deleted) instead of deleted, as the drift baseline. On error the temporary folder
    is removed and the published table stays untouched. The one publish of the store.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_tree(tmp)
    replaced = _replace_dir(tmp, path)
    if replaced is not None and previous is not None:
        previous.parent.mkdir(parents=True, exist_ok=True)
        hidden = replaced.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(replaced, hidden)  # hidden first: a kill before the next step is swept
        replaced = _replace_dir(hidden, previous)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    """Flush a new table's files before it becomes visible (a power cut after the rename
    must not expose empty files)."""
    for p in folder.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    with open(folder / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


def base_manifest(table: str, schema: pa.Schema, rows: int, **extra: Any) -> dict[str, Any]:
    """Fields every manifest carries; stage-specific fields go in ``extra``. No clock time
    or code version: same inputs give a byte-identical table (the run manifest has both)."""
    return {
        "table": table,
        "schema_version": SCHEMA_VERSION,
        "row_count": rows,
        "columns": {f.name: str(f.type) for f in schema},
        **extra,
    }


def write_table(
    path: Path | str,
    table: pa.Table,
    schema: pa.Schema,
    *,
    name: str | None = None,
    rows_per_file: int = 1_000_000,
    **manifest_extra: Any,
) -> dict[str, Any]:
    """Cast ``table`` to ``schema``, write it as Parquet parts plus a manifest, publish."""
    path = Path(path)
    try:
        table = table.select(schema.names).cast(schema)
    except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise StoreError(f"table {path}: does not match its schema {schema}: {e}") from e
    manifest = base_manifest(name or path.name, schema, table.num_rows, **manifest_extra)
    with publish(path) as tmp:
        n_parts = max(1, -(-table.num_rows // rows_per_file))
        for part in range(n_parts):
            chunk = table.slice(part * rows_per_file, rows_per_file)
            pq.write_table(chunk, tmp / f"part-{part:05d}.parquet", compression="zstd")
        write_manifest(tmp, manifest)
    return manifest


def read_manifest(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.exists():
        raise StoreError(
            f"table {path}: no {MANIFEST}; it is missing or was not published completely "
            "(run the stage that produces it)"
        )
    with open(mpath) as f:
        manifest = json.load(f)
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(
            f"table {path}: schema_version {manifest.get('schema_version')!r}, "
            f"this code reads version {SCHEMA_VERSION}"
        )
    return manifest


def read_table(path: Path | str, columns: list[str] | None = None) -> pa.Table:
    """Read a published table, checking its manifest and row count."""
    path = Path(path)
    manifest = read_manifest(path)
    files = sorted(path.glob("*.parquet"))
    if not files:
        table = pa.Table.from_pylist([], schema=pa.schema([]))
    else:
        table = pa.concat_tables(pq.read_table(f, columns=columns) for f in files)
    if table.num_rows != manifest["row_count"]:
        raise StoreError(
            f"table {path}: {table.num_rows} rows on disk, manifest says {manifest['row_count']}"
        )
    return table


def embeddings_to_arrow(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """float32 (n, d) matrix -> fixed_size_list<float32>[d] without a Python-level loop."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-d embedding matrix, got shape {matrix.shape}")
    flat = pa.array(matrix.reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])


def arrow_to_embeddings(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """fixed_size_list<float32>[d] column -> float32 (n, d) numpy matrix (zero-copy per chunk)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    dim = column.type.list_size
    parts = [c.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim) for c in chunks]
    if not parts:
        return np.zeros((0, dim), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)
