"""Versioned history of a published table as a Delta Lake table: one commit per snapshot.

Each snapshot overwrites the whole table (a Delta version is the table as of that
snapshot), so any Delta reader (deltalake, polars, Spark, DuckDB over a pyarrow dataset)
time-travels without reconstructing rows. Delta has no fixed-size list: such columns are
stored as ``list<float32>`` and their width is recorded three times: in each commit's
custom metadata (authoritative for that version, used by ``read_as_of``), in the column's
field metadata (travels with each version's schema) and in the table properties
``mmrec.dim.<column>`` (the latest snapshot's, for readers such as Spark). This module
takes paths and knows no store layout.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake

from features.store import StoreError

# Commit metadata keys (Delta commitInfo custom fields) and the field metadata key.
SNAPSHOT = "mmrec.snapshot"
SNAPSHOT_TIME = "mmrec.snapshot_time"
CONTENT = "mmrec.content_sha256"
ROWS = "mmrec.rows"
FIXED = "mmrec.fixed_size_lists"  # JSON {column: width}
KEEP_FROM = "mmrec.vacuum.keep_from_version"
FIELD_DIM = b"mmrec.fixed_size_list"
DIM_PROPERTY = "mmrec.dim."  # table property prefix, one per fixed-size list column

# Fixed writer settings: the same table gives the same data file bytes.
_WRITER = WriterProperties(compression="ZSTD", compression_level=3)
# Old log entries stay: time travel to a kept snapshot must not depend on the log's age.
_CREATE_CONFIG = {"delta.enableExpiredLogCleanup": "false"}


class HistoryError(StoreError):
    """A history is missing, or has no snapshot matching a request."""


@dataclass(frozen=True)
class Snapshot:
    """One readable snapshot of a history: its Delta version, id, time and row count."""

    version: int
    snapshot: str
    snapshot_time: dt.datetime
    rows: int


def _utc(t: dt.datetime, what: str, *, naive_ok: bool) -> dt.datetime:
    if t.tzinfo is None:
        if not naive_ok:
            raise ValueError(f"{what} {t.isoformat()} has no time zone; pass an aware datetime (UTC)")
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC)


def _canonical(typ: pa.DataType) -> pa.DataType:
    """``typ`` with list children named ``element`` (as Parquet and Delta name them), recursively.

    The same data read from Parquet (``element``) or built in memory (``item``) then hashes
    and writes the same.
    """
    if pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
        v = typ.value_field
        return pa.list_(pa.field("element", _canonical(v.type), v.nullable))
    if pa.types.is_struct(typ):
        return pa.struct([pa.field(f.name, _canonical(f.type), f.nullable) for f in typ])
    return typ


def to_delta(table: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """``table`` with every fixed_size_list column as a list (width in field metadata), plus the widths."""
    fields, columns, dims = [], [], {}
    for f, col in zip(table.schema, table.columns, strict=True):
        typ = _canonical(f.type)
        meta = None
        if pa.types.is_fixed_size_list(f.type):
            dims[f.name] = f.type.list_size
            meta = {FIELD_DIM: str(f.type.list_size).encode()}
        if str(typ) != str(f.type):  # str() tells list child names apart, == does not
            col = col.cast(typ)
        f = pa.field(f.name, typ, f.nullable, meta)
        fields.append(f)
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields)), dims


def from_delta(table: pa.Table, dims: dict[str, int]) -> pa.Table:
    """Undo ``to_delta``: listed columns back to fixed_size_list, field metadata dropped."""
    fields, columns = [], []
    for f, col in zip(table.schema, table.columns, strict=True):
        if f.name in dims:
            typ = pa.list_(f.type.value_type, dims[f.name])
            col = col.cast(typ)
            f = pa.field(f.name, typ, f.nullable)
        else:
            f = f.remove_metadata()
        fields.append(f)
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


class _HashSink:
    """A write-only file object that only hashes, so hashing holds no copy of the table."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.closed = False

    def write(self, data: bytes) -> int:
        self.h.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def content_sha256(table: pa.Table, window: int = 65536) -> str:
    """sha256 of the table's Arrow IPC stream, the idempotency key.

    Written in fixed windows of rows, each made one chunk, so the hash does not depend on
    how the input happens to be chunked.
    """
    table = table.replace_schema_metadata(None)
    sink = _HashSink()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), table.schema) as w:
        for start in range(0, table.num_rows, window):
            w.write_table(table.slice(start, window).combine_chunks())
    return sink.h.hexdigest()


def _check_path(history: Path) -> None:
    if "#" in str(history.resolve()):
        raise HistoryError(
            f"history {history}: the path contains '#', whose Delta log deltalake 1.6.6 reads as "
            "empty; put the store under a path without '#'"
        )


def _history_entries(history: Path) -> list[dict[str, Any]]:
    _check_path(history)
    if not DeltaTable.is_deltatable(str(history)):
        raise HistoryError(f"history {history}: no Delta table there (no snapshot committed yet)")
    return sorted(DeltaTable(str(history)).history(), key=lambda h: h["version"])


def _snapshot_of(entry: dict[str, Any]) -> Snapshot:
    return Snapshot(
        version=int(entry["version"]),
        snapshot=str(entry[SNAPSHOT]),
        snapshot_time=dt.datetime.fromisoformat(entry[SNAPSHOT_TIME]),
        rows=int(entry[ROWS]),
    )


def _data_commits(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Snapshot commits still readable: the latest commit per snapshot id, past vacuum's cut."""
    keep_from = max((int(e[KEEP_FROM]) for e in entries if KEEP_FROM in e), default=0)
    latest: dict[str, dict[str, Any]] = {}
    for e in entries:
        if SNAPSHOT in e and e.get("operation") == "WRITE":
            latest[e[SNAPSHOT]] = e  # a rerun with other content supersedes the earlier commit
    return sorted((e for e in latest.values() if e["version"] >= keep_from), key=lambda e: e["version"])


def snapshots(history: Path | str) -> list[Snapshot]:
    """Readable snapshots, oldest first (superseded and vacuumed versions left out)."""
    return [_snapshot_of(e) for e in _data_commits(_history_entries(Path(history)))]


def _set_dim_properties(history: Path, dims: dict[str, int], snapshot: str) -> None:
    """Keep ``mmrec.dim.<column>`` table properties equal to the latest snapshot's widths.

    delta-rs 1.6.6 refuses custom properties when creating or writing a table, so this is
    a separate metadata-only commit, made only when a width is new or changed.
    """
    dt_ = DeltaTable(str(history))
    current = dt_.metadata().configuration
    wanted = {f"{DIM_PROPERTY}{c}": str(d) for c, d in dims.items()}
    if all(current.get(k) == v for k, v in wanted.items()):
        return
    dt_.alter.set_table_properties(
        wanted,
        raise_if_not_exists=False,
        commit_properties=CommitProperties(custom_metadata={"mmrec.properties_for": snapshot}),
    )


def commit(history: Path | str, table: pa.Table, *, snapshot: str, snapshot_time: dt.datetime) -> int:
    """Record ``table`` as snapshot ``snapshot`` in the Delta table at ``history``; its version.

    Idempotent: the same id with the same content (a rerun after a crash) adds nothing and
    returns the existing version. The latest id with other content (a rerun after a fix)
    writes a version that supersedes it. Rewriting an earlier snapshot, or a time before
    the latest snapshot's, is refused: version order is snapshot-time order.
    """
    history = Path(history)
    _check_path(history)
    when = _utc(snapshot_time, f"snapshot {snapshot!r} time", naive_ok=False)
    data, dims = to_delta(table.replace_schema_metadata(None))
    digest = content_sha256(data)
    exists = DeltaTable.is_deltatable(str(history))
    if exists:
        done = _data_commits(_history_entries(history))
        same = [e for e in done if e[SNAPSHOT] == snapshot]
        if same and same[0][CONTENT] == digest:
            _set_dim_properties(history, dims, snapshot)  # repairs a crash between the two commits
            return int(same[0]["version"])
        if same and same[0] is not done[-1]:
            raise HistoryError(
                f"history {history}: snapshot {snapshot!r} is version {same[0]['version']}, before the "
                f"latest snapshot {done[-1][SNAPSHOT]!r}; earlier snapshots cannot be rewritten"
            )
        others = [_snapshot_of(e) for e in done if e[SNAPSHOT] != snapshot]
        if others and when < others[-1].snapshot_time:
            raise HistoryError(
                f"history {history}: snapshot {snapshot!r} at {when.isoformat()} is older than the "
                f"latest snapshot {others[-1].snapshot!r} at {others[-1].snapshot_time.isoformat()}"
            )
    history.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        SNAPSHOT: snapshot,
        SNAPSHOT_TIME: when.isoformat(),
        CONTENT: digest,
        ROWS: str(data.num_rows),
        FIXED: json.dumps(dims, sort_keys=True),
        # Delta's standard field: Spark's DESCRIBE HISTORY shows it as the userMetadata column.
        "userMetadata": json.dumps({"snapshot": snapshot, "snapshot_time": when.isoformat()}),
    }
    write_deltalake(
        str(history),
        data,
        mode="overwrite",
        schema_mode="overwrite" if exists else None,
        configuration=None if exists else _CREATE_CONFIG,
        writer_properties=_WRITER,
        commit_properties=CommitProperties(custom_metadata=meta),
    )
    version = next(
        int(e["version"]) for e in reversed(_history_entries(history)) if e.get(SNAPSHOT) == snapshot
    )
    _set_dim_properties(history, dims, snapshot)
    return version


def _describe(snaps: list[Snapshot]) -> str:
    if not snaps:
        return "none"
    return ", ".join(f"{s.snapshot} ({s.snapshot_time.isoformat()})" for s in snaps)


def find_snapshot(
    history: Path | str, snapshot: str | None = None, timestamp: dt.datetime | None = None
) -> Snapshot:
    """The snapshot named, or the latest at or before ``timestamp`` (naive = UTC), or the latest."""
    history = Path(history)
    if snapshot is not None and timestamp is not None:
        raise ValueError("pass snapshot or timestamp, not both")
    entries = _history_entries(history)
    snaps = [_snapshot_of(e) for e in _data_commits(entries)]
    if snapshot is not None:
        hit = [s for s in snaps if s.snapshot == snapshot]
        if not hit:
            gone = any(e.get(SNAPSHOT) == snapshot for e in entries)
            why = " (removed by retention)" if gone else ""
            raise HistoryError(
                f"history {history}: no snapshot {snapshot!r}{why}; available: {_describe(snaps)}"
            )
        return hit[0]
    if timestamp is not None:
        when = _utc(timestamp, "timestamp", naive_ok=True)
        hit = [s for s in snaps if s.snapshot_time <= when]
        if not hit:
            raise HistoryError(
                f"history {history}: no snapshot at or before {when.isoformat()}; "
                f"available: {_describe(snaps)}"
            )
        return hit[-1]
    if not snaps:
        raise HistoryError(f"history {history}: no readable snapshot")
    return snaps[-1]


def _dims_at(history: Path, version: int) -> dict[str, int]:
    entry = next(e for e in _history_entries(history) if e["version"] == version)
    return {str(k): int(v) for k, v in json.loads(entry[FIXED]).items()}


def read_as_of(
    history: Path | str,
    snapshot: str | None = None,
    timestamp: dt.datetime | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """The table as of a snapshot id or time (default: the latest), fixed-size lists restored."""
    history = Path(history)
    snap = find_snapshot(history, snapshot, timestamp)
    dims = _dims_at(history, snap.version)
    table = DeltaTable(str(history), version=snap.version).to_pyarrow_table(
        columns=list(columns) if columns is not None else None
    )
    return from_delta(table, {c: d for c, d in dims.items() if c in table.column_names})


def vacuum(
    history: Path | str,
    keep_snapshots: int | None,
    *,
    keep_days: float | None = None,
) -> list[str]:
    """Delete data files only older snapshots use; the removed paths (relative to ``history``).

    Kept: the last ``keep_snapshots`` snapshots and those within ``keep_days`` of the
    latest snapshot's time (``None`` turns a rule off; at least one must be set). Also
    removes files a killed commit left behind, so run it under the store's writer lock.
    """
    history = Path(history)
    if keep_snapshots is None and keep_days is None:
        raise ValueError("vacuum: set keep_snapshots or keep_days")
    if keep_snapshots is not None and keep_snapshots < 1:
        raise ValueError(f"vacuum: keep_snapshots must be at least 1, got {keep_snapshots}")
    snaps = snapshots(history)
    if not snaps:
        return []
    keep = set()
    if keep_snapshots is not None:
        keep |= {s.version for s in snaps[-keep_snapshots:]}
    if keep_days is not None:
        cut = snaps[-1].snapshot_time - dt.timedelta(days=keep_days)
        keep |= {s.version for s in snaps if s.snapshot_time >= cut}
    before = _data_files(history)
    used = {unquote(Path(u).name) for v in keep for u in DeltaTable(str(history), version=v).file_uris()}
    if len(keep) == len(snaps) and {Path(p).name for p in before} <= used:  # unpartitioned: flat files
        return []  # nothing to drop: no VACUUM commits added to the log
    DeltaTable(str(history)).vacuum(
        retention_hours=0,
        dry_run=False,
        enforce_retention_duration=False,
        full=True,  # also files no commit references (a killed commit's), not only removed ones
        keep_versions=sorted(keep),
        commit_properties=CommitProperties(custom_metadata={KEEP_FROM: str(min(keep))}),
    )
    return sorted(before - _data_files(history))


def _data_files(history: Path) -> set[str]:
    return {
        p.relative_to(history).as_posix()
        for p in history.rglob("*.parquet")
        if not any(part.startswith(("_", ".")) for part in p.relative_to(history).parts)
    }


FEAST_TIMESTAMP = "event_timestamp"


def feast_source(
    history: Path | str,
    out_parquet: Path | str,
    *,
    key: str = "item_id",
    column: str = "embedding",
) -> int:
    """Write a point-in-time Feast source from a history; the number of rows written.

    Rows ``(key, column list<float32>, event_timestamp = snapshot time)``: every row of the
    oldest readable snapshot, then per snapshot only the keys that are new or whose vector
    changed, plus a tombstone (null vector) for each key removed. Feast then answers "the
    vector current at time t" for any t, and a removed item reads as null.
    """
    import polars as pl

    history, out = Path(history), Path(out_parquet)
    parts: list[pl.DataFrame] = []
    prev: pl.DataFrame | None = None
    key_type: pa.DataType = pa.string()
    for snap in snapshots(history):
        table = DeltaTable(str(history), version=snap.version)
        missing = {key, column} - {f.name for f in table.schema().fields}
        if missing:
            raise HistoryError(
                f"history {history}: snapshot {snap.snapshot!r} has no column {sorted(missing)}; "
                f"a Feast source needs the entity key {key!r} and the vector column {column!r}"
            )
        arrow = table.to_pyarrow_table(columns=[key, column])
        key_type = arrow.schema.field(key).type
        cur = pl.from_arrow(arrow)
        assert isinstance(cur, pl.DataFrame)
        if cur[key].is_duplicated().any():
            raise HistoryError(f"history {history}: snapshot {snap.snapshot!r} has duplicate {key} values")
        if prev is None:
            changed = cur
        else:
            joined = cur.join(prev.rename({column: "_prev"}), on=key, how="left")
            changed = joined.filter(pl.col(column).ne_missing(pl.col("_prev"))).drop("_prev")
            removed = prev.join(cur, on=key, how="anti").select(
                key, pl.lit(None, dtype=cur.schema[column]).alias(column)
            )
            changed = pl.concat([changed, removed])
        ts = pl.lit(snap.snapshot_time).cast(pl.Datetime("us", "UTC")).alias(FEAST_TIMESTAMP)
        parts.append(changed.with_columns(ts))
        prev = cur
    if not parts:
        raise HistoryError(f"history {history}: no readable snapshot to build a Feast source from")
    frame = pl.concat(parts).sort([FEAST_TIMESTAMP, key])
    schema = pa.schema(
        [
            pa.field(key, key_type, nullable=False),
            pa.field(column, pa.list_(pa.float32())),
            pa.field(FEAST_TIMESTAMP, pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    )
    table = frame.to_arrow().cast(schema)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return table.num_rows
