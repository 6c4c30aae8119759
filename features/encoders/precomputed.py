"""Import existing vectors (e.g. the 4,096-d image features published datasets ship) by item id.

Two layouts: a ``.npy`` matrix with an id file giving each row's item id (``.txt`` one id
a line, ``.json`` list, or ``.csv``/``.parquet`` with ``id_column``), or a Parquet file
keyed by ``id_column`` with a ``vector_column`` of fixed- or variable-size float lists.
Items without a vector, or with a non-finite one, are rejected with that reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from features.encoders.base import Encoder, EncoderError, l2_normalize, register
from features.encoders.weights import file_checksum

PREPROCESS_VERSION = "pre-1"
ROW_INDEX = "row_index"  # `ids: row_index`: row r of the .npy is the item with id "r"


def _read_ids(path: Path, id_column: str) -> list[str]:
    """Item ids in row order from a .txt, .json, .csv or .parquet file."""
    if not path.is_file():
        raise EncoderError(f"precomputed: id file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [line.rstrip("\r\n") for line in path.read_text(encoding="utf-8").splitlines()]
    if suffix == ".json":
        ids = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(ids, list):
            raise EncoderError(f"precomputed: {path} must hold a JSON list of item ids in row order")
        return [str(i) for i in ids]
    if suffix in (".csv", ".parquet"):
        import polars as pl

        if suffix == ".csv":  # MMRec's i_id_mapping.csv is tab-separated despite its name
            head = path.open(encoding="utf-8", errors="replace").readline()
            sep = "\t" if head.count("\t") > head.count(",") else ","
            df = pl.read_csv(path, infer_schema=False, separator=sep)
        else:
            df = pl.read_parquet(path)
        if id_column not in df.columns:
            raise EncoderError(f"precomputed: {path} has no column {id_column!r}; columns: {df.columns}")
        return df[id_column].cast(pl.String).to_list()
    raise EncoderError(f"precomputed: id file {path}: expected .txt, .json, .csv or .parquet")


@register("precomputed")
class PrecomputedEncoder(Encoder):
    modality = "item_id"
    libraries = ("numpy", "pyarrow", "polars")

    def __init__(
        self,
        *,
        path: str,
        ids: str | None = None,
        id_column: str = "item_id",
        vector_column: str = "embedding",
        normalize: bool = False,
    ) -> None:
        self.path, self.ids_path = Path(path), Path(ids) if ids else None
        self.id_column, self.vector_column, self.normalized = id_column, vector_column, normalize
        if not self.path.is_file():
            raise EncoderError(f"precomputed: vector file {self.path} does not exist")
        suffix = self.path.suffix.lower()
        if suffix == ".npy":
            if self.ids_path is None:
                raise EncoderError(
                    f"precomputed: {self.path} is a .npy matrix; give `ids:` (id file or row_index)"
                )
            shape = np.load(self.path, mmap_mode="r").shape
            if len(shape) != 2:
                raise EncoderError(f"precomputed: {self.path} holds shape {shape}; expected (items, dim)")
            self.dim = int(shape[1])
        elif suffix == ".parquet":
            self.dim = self._parquet_dim()
        else:
            raise EncoderError(f"precomputed: vector file {self.path}: expected .npy or .parquet")
        by_row = str(self.ids_path) == ROW_INDEX
        sums = [file_checksum(self.path)] + (
            [file_checksum(self.ids_path)] if self.ids_path and not by_row else []
        )
        self.weights = f"{self.path.name}@{'+'.join(sums)}"

    def _parquet_dim(self) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(self.path)
        schema = pf.schema_arrow
        for col in (self.id_column, self.vector_column):
            if col not in schema.names:
                raise EncoderError(f"precomputed: {self.path} has no column {col!r}; columns: {schema.names}")
        t = schema.field(self.vector_column).type
        if pa.types.is_fixed_size_list(t):
            return int(t.list_size)
        if not pa.types.is_list(t) and not pa.types.is_large_list(t):
            raise EncoderError(
                f"precomputed: {self.path} column {self.vector_column!r} is {t}; expected a float list"
            )
        first = next(pf.iter_batches(batch_size=1, columns=[self.vector_column]), None)
        if first is None or first.num_rows == 0:
            raise EncoderError(f"precomputed: {self.path} has no rows")
        return len(first.column(0)[0].as_py())

    def id_parts(self) -> tuple[str, ...]:
        return (self.weights, self.norm, PREPROCESS_VERSION)

    def _load(self) -> tuple[np.ndarray, dict[str, int]]:
        """(the vectors, item id -> row)."""
        if self.path.suffix.lower() == ".npy":
            matrix = np.load(self.path, mmap_mode="r")  # rows are paged in on use, not all at once
            if str(self.ids_path) == ROW_INDEX:  # MMRec layout: row r is item id "r"
                ids = [str(r) for r in range(matrix.shape[0])]
            else:
                ids = _read_ids(self.ids_path, self.id_column)
        else:
            import pyarrow.parquet as pq

            t = pq.read_table(self.path, columns=[self.id_column, self.vector_column])
            ids = [str(i) for i in t.column(self.id_column).to_pylist()]
            col = t.column(self.vector_column).combine_chunks()
            valid = ~col.is_null().to_numpy(zero_copy_only=False)
            values = col.filter(valid)
            lengths = values.value_lengths().to_numpy(zero_copy_only=False)
            if len(lengths) and (lengths != self.dim).any():
                bad = int(np.flatnonzero(valid)[np.flatnonzero(lengths != self.dim)[0]])
                raise EncoderError(
                    f"precomputed: {self.path} row {bad} (item {ids[bad]!r}) has "
                    f"{len(col[bad].as_py())} values; expected {self.dim}"
                )
            matrix = np.full((len(col), self.dim), np.nan, dtype=np.float32)  # null rows stay NaN
            matrix[valid] = values.flatten().to_numpy(zero_copy_only=False).reshape(-1, self.dim)
        if len(ids) != matrix.shape[0]:
            raise EncoderError(
                f"precomputed: {self.ids_path or self.path} has {len(ids)} ids for {matrix.shape[0]} vectors"
            )
        index: dict[str, int] = {}
        for row, item_id in enumerate(ids):
            if item_id in index:
                raise EncoderError(
                    f"precomputed: item id {item_id!r} appears twice in {self.ids_path or self.path}"
                )
            index[item_id] = row
        return matrix, index

    def unusable(self, batch: Sequence[Any]) -> list[str | None]:
        self.load()
        matrix, index = self._resource
        out: list[str | None] = []
        for item_id in batch:
            row = index.get(str(item_id))
            if row is None:
                out.append("no precomputed vector")
            elif not np.isfinite(matrix[row]).all():
                out.append("null or non-finite precomputed vector")
            else:
                out.append(None)
        return out

    def encode(self, batch: Sequence[Any]) -> np.ndarray:
        self.load()
        matrix, index = self._resource
        x = np.asarray(matrix[[index[str(i)] for i in batch]], dtype=np.float32)
        return l2_normalize(x) if self.normalized else x
