"""Splits: seeded and reproducible (content hash), labels, temporal, k-core, statistics."""

from __future__ import annotations

import polars as pl
import pytest

from pipelines.adapters import read_source
from pipelines.filters import kcore
from pipelines.splits import split_hash, split_random_ratio, split_stats, split_temporal
from pipelines.tables import ingest


def _log(tmp_path, n_users: int = 40, n_items: int = 30) -> dict:
    items = "item_id,title\n" + "".join(f"i{i},T{i}\n" for i in range(n_items))
    rows = [f"u{u},i{(u * 7 + k * 3) % n_items},{1000 + k}" for u in range(n_users) for k in range(5 + u % 7)]
    (tmp_path / "items.csv").write_text(items)
    (tmp_path / "inter.csv").write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    return {
        "source": "generic",
        "items": str(tmp_path / "items.csv"),
        "interactions": str(tmp_path / "inter.csv"),
    }


def test_same_seed_same_split_by_content_hash_and_other_seed_differs(tmp_path) -> None:
    split = {"method": "random_ratio", "valid_ratio": 0.1, "test_ratio": 0.1}
    data = _log(tmp_path)
    a = ingest(read_source(data), split=split, seed=7)
    b = ingest(read_source(data), split=split, seed=7)
    c = ingest(read_source(data), split=split, seed=8)
    assert a["split_hash"] == b["split_hash"] != c["split_hash"]
    assert a["interactions"].equals(b["interactions"]) and not a["interactions"].equals(c["interactions"])
    assert split_hash(a["interactions"].reverse()) == a["split_hash"]  # row order does not matter


def test_random_ratio_is_per_user_8_1_1_and_small_users_stay_in_train() -> None:
    n = 30
    df = pl.DataFrame(
        {"user_idx": [0] * n + [1] * 5 + [2] * 2, "item_idx": list(range(n)) + list(range(5)) + [0, 1]}
    )
    a = split_random_ratio(df, valid_ratio=0.1, test_ratio=0.1, seed=3)
    assert a.equals(split_random_ratio(df, valid_ratio=0.1, test_ratio=0.1, seed=3))
    assert not a.equals(split_random_ratio(df, valid_ratio=0.1, test_ratio=0.1, seed=4))
    counts = a.group_by("user_idx", "split").len().sort("user_idx", "split").rows()
    assert counts == [
        (0, "test", 3),
        (0, "train", 24),
        (0, "valid", 3),
        (1, "test", 1),
        (1, "train", 3),
        (1, "valid", 1),
        (2, "train", 2),
    ]


def test_temporal_leave_last_out_ties_broken_by_item() -> None:
    df = pl.DataFrame(
        {"user_idx": [0, 0, 0, 0, 1, 1], "item_idx": [5, 1, 2, 3, 0, 1], "timestamp": [1, 2, 3, 3, 1, 2]}
    )
    out = split_temporal(df, leave_out=1).sort("user_idx", "item_idx")
    assert out.get_column("split").to_list() == ["train", "valid", "test", "train", "train", "train"]
    with pytest.raises(ValueError, match="1 interaction"):
        split_temporal(
            df.with_columns(
                pl.when(pl.col("item_idx") == 5).then(None).otherwise(pl.col("timestamp")).alias("timestamp")
            )
        )


def test_labels_method_needs_labels(tmp_path) -> None:
    with pytest.raises(ValueError, match="this source has no split labels"):
        ingest(read_source(_log(tmp_path)), split={"method": "labels"}, seed=0)
    with pytest.raises(ValueError, match="Input should be 'random_ratio', 'labels' or 'temporal'"):
        ingest(read_source(_log(tmp_path)), split={"method": "loo"}, seed=0)


def test_kcore_is_iterative() -> None:
    # u3 has 2 interactions; dropping u3 leaves item c with 1, which must go too, then u2 drops to 1.
    df = pl.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2", "u3", "u3", "u4", "u4"],
            "item_id": ["a", "b", "a", "c", "c", "d", "a", "b"],
        }
    )
    kept, removed = kcore(df, min_user=2, min_item=2)
    assert sorted(kept.rows()) == [("u1", "a"), ("u1", "b"), ("u4", "a"), ("u4", "b")]
    assert removed.height == 4 and removed.get_column("_reason").str.starts_with("k-core").all()


def test_kcore_in_ingest_records_rejects_and_drops_items(tmp_path) -> None:
    data = _log(tmp_path, n_users=12, n_items=40)
    out = ingest(read_source(data), split={"method": "temporal"}, seed=0, kcore_users=6, kcore_items=2)
    inter = out["interactions"]
    assert inter.group_by("user_idx").len().get_column("len").min() >= 6
    assert inter.group_by("item_idx").len().get_column("len").min() >= 2
    c = out["counts"]
    assert c["interactions"]["input"] == c["interactions"]["accepted"] + c["interactions"]["rejected"]
    assert c["items"]["input"] == c["items"]["accepted"] + c["items"]["rejected"]
    assert any(r.startswith("k-core") for r in out["counts"]["rejects_by_reason"])


def test_split_stats_count_cold_users_and_items() -> None:
    df = pl.DataFrame(
        {"user_idx": [0, 0, 1, 2], "item_idx": [0, 1, 2, 0], "split": ["train", "test", "valid", "train"]}
    )
    s = split_stats(df, n_users=3, n_items=3)
    assert s["train"] == {
        "interactions": 2,
        "users": 2,
        "items": 1,
        "density": 2 / 9,
        "cold_users": 0,
        "cold_items": 0,
    }
    assert s["test"]["cold_items"] == 1 and s["valid"]["cold_users"] == 1 and s["valid"]["cold_items"] == 1


def test_stage_runs_with_the_same_seed_write_the_same_split(tmp_path) -> None:
    import json

    from features.store import read_table
    from pipelines.config import Config
    from pipelines.layout import Layout
    from pipelines.stages import ingest as stage

    data = _log(tmp_path)
    raw = {
        "seed": 0,
        "data": {**data, "images": None, "profile": "t", "options": {}, "ingest": {}},
        "ingest": {"split": {"method": "random_ratio", "valid_ratio": 0.1, "test_ratio": 0.1, "seed": 5}},
    }
    hashes = []
    for i, seed in enumerate((5, 5, 6)):
        raw["ingest"]["split"]["seed"] = seed
        layout = Layout(store=tmp_path / f"s{i}", reports=tmp_path / f"r{i}", models=tmp_path / "models")
        stage.run(Config.from_dict(raw), layout)
        t = pl.from_arrow(read_table(layout.interactions()))
        hashes.append(split_hash(t))
        assert hashes[-1] == json.loads(layout.ingest_stats().read_text())["split_hash"]
    assert hashes[0] == hashes[1] != hashes[2]
