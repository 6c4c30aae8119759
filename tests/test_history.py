"""Delta Lake history of published tables: as-of reads, idempotent commits, retention, readers."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from features import history, schemas
from features.reader import HISTORY_ROOT, as_of
from features.store import embeddings_to_arrow, read_table, write_table

DIM = 4
UTC = dt.UTC
TIMES = {
    "2026-12-01": dt.datetime(2026, 12, 1, 2, tzinfo=UTC),
    "2026-12-02": dt.datetime(2026, 12, 2, 2, tzinfo=UTC),
    "2026-12-03": dt.datetime(2026, 12, 3, 2, tzinfo=UTC),
}
TABLE = "features/text_minilm"


def vec(item: str, gen: int = 0) -> np.ndarray:
    """A distinct vector per item and generation."""
    seed = int(hashlib.sha256(f"{item}/{gen}".encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).normal(size=DIM).astype(np.float32)


# item -> generation per snapshot: s2 changes i1 and adds i5; s3 removes i2 and changes i3.
CATALOG = {
    "2026-12-01": {"i0": 0, "i1": 0, "i2": 0, "i3": 0, "i4": 0},
    "2026-12-02": {"i0": 0, "i1": 1, "i2": 0, "i3": 0, "i4": 0, "i5": 0},
    "2026-12-03": {"i0": 0, "i1": 1, "i3": 1, "i4": 0, "i5": 0},
}


def feature_table(snapshot: str, dim: int = DIM) -> pa.Table:
    items = CATALOG[snapshot]
    ids = sorted(items)
    ts = pa.array([TIMES[snapshot]] * len(ids), pa.timestamp("us", tz="UTC"))
    matrix = np.stack([vec(i, items[i])[:dim] for i in ids]) if ids else np.zeros((0, dim), np.float32)
    return pa.table(
        {
            "item_idx": np.arange(len(ids), dtype=np.int64),
            "item_id": ids,
            "embedding": embeddings_to_arrow(matrix),
            "content_hash": [f"{i}/{items[i]}" for i in ids],
            "event_timestamp": ts,
            "created": ts,
        }
    )


def publish_snapshot(store: Path, snapshot: str) -> int:
    """What the runner does per stage: publish the latest view, then commit it to the history."""
    latest = store / TABLE
    write_table(latest, feature_table(snapshot), schemas.feature_schema(DIM), dim=DIM)
    return history.commit(
        store / HISTORY_ROOT / TABLE, read_table(latest), snapshot=snapshot, snapshot_time=TIMES[snapshot]
    )


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    for snap in CATALOG:
        publish_snapshot(root, snap)
    return root


def vectors(table: pa.Table) -> dict[str, np.ndarray]:
    m = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(-1, DIM)
    return dict(zip(table.column("item_id").to_pylist(), m, strict=True))


def test_three_snapshots_read_back_as_of_each(store: Path) -> None:
    path = store / HISTORY_ROOT / TABLE
    snaps = history.snapshots(path)
    assert [s.snapshot for s in snaps] == list(CATALOG)
    assert [s.snapshot_time for s in snaps] == list(TIMES.values())
    assert [s.rows for s in snaps] == [5, 6, 5]
    spark_visible = {h["version"]: h.get("userMetadata") for h in DeltaTable(str(path)).history()}
    assert json.loads(spark_visible[snaps[0].version])["snapshot"] == "2026-12-01"
    for snap, items in CATALOG.items():
        got = history.read_as_of(path, snap)
        assert got.schema == schemas.feature_schema(DIM), "fixed_size_list and nullability restored"
        vs = vectors(got)
        assert sorted(vs) == sorted(items)
        for item, gen in items.items():
            np.testing.assert_array_equal(vs[item], vec(item, gen))
    assert "i2" in vectors(history.read_as_of(path, "2026-12-02"))
    assert "i2" not in vectors(history.read_as_of(path, "2026-12-03"))
    # the latest as-of read is exactly the latest Parquet view
    assert history.read_as_of(path).equals(read_table(store / TABLE))


def test_as_of_timestamp_picks_the_latest_snapshot_at_or_before(store: Path) -> None:
    path = store / HISTORY_ROOT / TABLE
    between = dt.datetime(2026, 12, 2, 12, tzinfo=UTC)
    np.testing.assert_array_equal(vectors(history.read_as_of(path, timestamp=between))["i1"], vec("i1", 1))
    exactly = history.read_as_of(path, timestamp=TIMES["2026-12-01"])
    np.testing.assert_array_equal(vectors(exactly)["i1"], vec("i1", 0))
    naive = history.read_as_of(path, timestamp=dt.datetime(2026, 12, 3, 3))  # naive = UTC
    assert "i2" not in vectors(naive)
    cols = history.read_as_of(path, "2026-12-01", columns=["item_id", "embedding"])
    assert (
        cols.column_names == ["item_id", "embedding"] and cols.schema.field("embedding").type.list_size == DIM
    )
    with pytest.raises(history.HistoryError, match=r"text_minilm.*no snapshot at or before.*2026-12-01"):
        history.read_as_of(path, timestamp=dt.datetime(2026, 11, 30, tzinfo=UTC))
    with pytest.raises(history.HistoryError, match=r"no snapshot '2026-11-30'; available: 2026-12-01 \("):
        history.read_as_of(path, "2026-11-30")
    with pytest.raises(history.HistoryError, match="no Delta table"):
        history.read_as_of(store / HISTORY_ROOT / "features/nothing")


def test_project_reader_as_of(store: Path) -> None:
    t1 = as_of(store, TABLE, "2026-12-01")
    t3 = as_of(store, TABLE, timestamp=dt.datetime(2026, 12, 4, tzinfo=UTC))
    assert "i2" in vectors(t1) and "i2" not in vectors(t3)
    assert as_of(store, TABLE).equals(read_table(store / TABLE))


def test_recommit_is_idempotent_and_reruns_supersede(store: Path) -> None:
    path = store / HISTORY_ROOT / TABLE
    version = DeltaTable(str(path)).version()
    last = history.snapshots(path)[-1]
    t = read_table(store / TABLE)
    rechunked = pa.concat_tables([t.slice(0, 2), t.slice(2)])
    assert rechunked.column("embedding").num_chunks == 2
    assert (
        history.commit(path, rechunked, snapshot="2026-12-03", snapshot_time=TIMES["2026-12-03"])
        == last.version
    )
    assert DeltaTable(str(path)).version() == version, "a rerun with the same content adds no version"
    # the latest id with other content (a rerun after a fix) supersedes; the id is listed once
    fixed = feature_table("2026-12-02")
    v = history.commit(path, fixed, snapshot="2026-12-03", snapshot_time=TIMES["2026-12-03"])
    assert v > last.version
    assert [s.snapshot for s in history.snapshots(path)] == list(CATALOG)
    assert "i2" in vectors(history.read_as_of(path, "2026-12-03"))
    with pytest.raises(history.HistoryError, match="earlier snapshots cannot be rewritten"):
        history.commit(path, fixed, snapshot="2026-12-01", snapshot_time=TIMES["2026-12-01"])
    with pytest.raises(history.HistoryError, match="older than the latest snapshot"):
        history.commit(
            path, fixed, snapshot="2026-11-30", snapshot_time=dt.datetime(2026, 11, 30, tzinfo=UTC)
        )
    with pytest.raises(ValueError, match="no time zone"):
        history.commit(path, fixed, snapshot="x", snapshot_time=dt.datetime(2027, 1, 1))
    # an earlier snapshot recommitted unchanged is a no-op too
    s1 = history.snapshots(path)[0]
    again = feature_table("2026-12-01").cast(schemas.feature_schema(DIM))
    assert history.commit(path, again, snapshot=s1.snapshot, snapshot_time=TIMES[s1.snapshot]) == s1.version


def _data_files(path: Path) -> list[str]:
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in path.glob("*.parquet"))


def test_same_table_gives_same_data_files(tmp_path: Path) -> None:
    table = feature_table("2026-12-02")
    for name in ("a", "b"):
        history.commit(tmp_path / name, table, snapshot="s", snapshot_time=TIMES["2026-12-02"])
    a, b = _data_files(tmp_path / "a"), _data_files(tmp_path / "b")
    assert len(a) == 1 and a == b


def test_vacuum_keeps_the_last_n_snapshots(store: Path) -> None:
    path = store / HISTORY_ROOT / TABLE
    n_files = len(list(path.glob("*.parquet")))
    assert n_files == 3
    removed = history.vacuum(path, keep_snapshots=2)
    assert len(removed) == 1 and not (path / removed[0]).exists()
    assert [s.snapshot for s in history.snapshots(path)] == ["2026-12-02", "2026-12-03"]
    assert "i2" in vectors(history.read_as_of(path, "2026-12-02"))
    with pytest.raises(history.HistoryError, match=r"no snapshot '2026-12-01' \(removed by retention\)"):
        history.read_as_of(path, "2026-12-01")
    with pytest.raises(history.HistoryError, match="no snapshot at or before"):
        history.read_as_of(path, timestamp=dt.datetime(2026, 12, 1, 12, tzinfo=UTC))
    version = DeltaTable(str(path)).version()
    assert history.vacuum(path, keep_snapshots=2) == []
    assert DeltaTable(str(path)).version() == version
    # a new snapshot after vacuum still commits, and the day rule keeps what is recent enough
    CATALOG["2026-12-04"] = CATALOG["2026-12-03"] | {"i6": 0}
    TIMES["2026-12-04"] = dt.datetime(2026, 12, 4, 2, tzinfo=UTC)
    try:
        publish_snapshot(store, "2026-12-04")
        history.vacuum(path, keep_snapshots=1, keep_days=1)
        assert [s.snapshot for s in history.snapshots(path)] == ["2026-12-03", "2026-12-04"]
        history.vacuum(path, keep_snapshots=None, keep_days=0)
        assert [s.snapshot for s in history.snapshots(path)] == ["2026-12-04"]
        assert "i6" in vectors(history.read_as_of(path))
        assert len(list(path.glob("*.parquet"))) == 1
    finally:
        del CATALOG["2026-12-04"], TIMES["2026-12-04"]
    with pytest.raises(ValueError, match="keep_snapshots or keep_days"):
        history.vacuum(path, keep_snapshots=None)


def test_vacuum_with_nothing_to_drop_commits_nothing_but_sweeps_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "h"
    history.commit(path, feature_table("2026-12-01"), snapshot="a", snapshot_time=TIMES["2026-12-01"])
    version = DeltaTable(str(path)).version()
    assert history.vacuum(path, keep_snapshots=5) == []
    assert DeltaTable(str(path)).version() == version
    (path / "part-00000-killed-commit.parquet").write_bytes(b"half a file a killed commit left")
    assert history.vacuum(path, keep_snapshots=5) == ["part-00000-killed-commit.parquet"]
    assert history.read_as_of(path, "a").num_rows == 5


def test_a_path_delta_cannot_read_back_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(history.HistoryError, match="contains '#'"):
        history.commit(
            tmp_path / "a#b", feature_table("2026-12-01"), snapshot="a", snapshot_time=TIMES["2026-12-01"]
        )
    assert not (tmp_path / "a#b").exists()


def test_moved_history_still_reads(store: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "copy"
    shutil.move(store / HISTORY_ROOT / TABLE, moved)
    for snap, items in CATALOG.items():
        assert sorted(vectors(history.read_as_of(moved, snap))) == sorted(items)


def test_dimension_recorded_and_width_change_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "h"
    history.commit(path, feature_table("2026-12-01"), snapshot="a", snapshot_time=TIMES["2026-12-01"])
    assert DeltaTable(str(path)).metadata().configuration["mmrec.dim.embedding"] == str(DIM)
    field = DeltaTable(str(path)).to_pyarrow_dataset().schema.field("embedding")
    assert field.type == pa.list_(pa.float32()) and field.metadata[b"mmrec.fixed_size_list"] == b"4"
    history.commit(path, feature_table("2026-12-02", dim=3), snapshot="b", snapshot_time=TIMES["2026-12-02"])
    assert DeltaTable(str(path)).metadata().configuration["mmrec.dim.embedding"] == "3"
    assert history.read_as_of(path, "a").schema.field("embedding").type.list_size == 4
    assert history.read_as_of(path, "b").schema.field("embedding").type.list_size == 3


@pytest.mark.parametrize(
    "schema",
    [
        schemas.entity_embedding_schema("user", DIM),
        schemas.RECOMMENDATIONS,
        schemas.SEMANTIC_IDS,
    ],
    ids=["user_embeddings", "recommendations", "semantic_ids"],
)
def test_other_published_tables_round_trip(tmp_path: Path, schema: pa.Schema) -> None:
    n = 3
    cols: dict[str, pa.Array] = {}
    for f in schema:
        if pa.types.is_fixed_size_list(f.type):
            cols[f.name] = embeddings_to_arrow(np.arange(n * DIM, dtype=np.float32).reshape(n, DIM))
        elif pa.types.is_list(f.type):
            cols[f.name] = pa.array([[1, 2], [3], []], f.type)
        elif pa.types.is_timestamp(f.type):
            cols[f.name] = pa.array([TIMES["2026-12-01"]] * n, f.type)
        elif pa.types.is_string(f.type):
            cols[f.name] = pa.array([f"x{i}" for i in range(n)])
        else:
            cols[f.name] = pa.array(range(n)).cast(f.type)
    table = pa.table(cols).cast(schema)
    history.commit(tmp_path / "h", table, snapshot="a", snapshot_time=TIMES["2026-12-01"])
    assert history.read_as_of(tmp_path / "h", "a").equals(table)
    assert history.read_as_of(tmp_path / "h", "a").schema == schema


def test_polars_pyarrow_and_duckdb_read_the_history(store: Path) -> None:
    path = store / HISTORY_ROOT / TABLE
    v1 = history.snapshots(path)[0].version
    df = pl.read_delta(str(path), version=v1)
    assert sorted(df["item_id"]) == sorted(CATALOG["2026-12-01"])
    emb = df["embedding"].cast(pl.Array(pl.Float32, DIM))
    np.testing.assert_array_equal(emb.to_numpy()[df["item_id"].to_list().index("i1")], vec("i1", 0))
    latest = pl.read_delta(str(path))
    assert "i2" not in latest["item_id"].to_list()
    dataset = DeltaTable(str(path), version=v1).to_pyarrow_dataset()
    assert dataset.to_table().num_rows == 5
    n, width = duckdb.sql("select count(*), max(len(embedding)) from dataset").fetchall()[0]
    assert (n, width) == (5, DIM)
    got = duckdb.sql("select embedding from dataset where item_id = 'i2'").fetchall()[0]
    np.testing.assert_allclose(got[0], vec("i2", 0))


def test_feast_source_has_changes_and_tombstones(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "feast" / "text_minilm.parquet"
    n = history.feast_source(store / HISTORY_ROOT / TABLE, out)
    t = pq.read_table(out)
    assert n == t.num_rows == 5 + 2 + 2  # all of s1; i1 changed + i5 new; i3 changed + i2 removed
    assert t.schema.field("embedding").type == pa.list_(pa.float32())
    rows = {(r["item_id"], r["event_timestamp"]): r["embedding"] for r in t.to_pylist()}
    assert rows[("i2", TIMES["2026-12-03"])] is None
    np.testing.assert_allclose(rows[("i1", TIMES["2026-12-02"])], vec("i1", 1))
    assert ("i0", TIMES["2026-12-02"]) not in rows
    before = out.read_bytes()
    history.feast_source(store / HISTORY_ROOT / TABLE, out)
    assert out.read_bytes() == before, "deterministic"
    assert [p.name for p in out.parent.iterdir()] == [out.name], "no temporary file left"
    with pytest.raises(history.HistoryError, match=r"no column \['user_id'\]"):
        history.feast_source(store / HISTORY_ROOT / TABLE, out, key="user_id")
