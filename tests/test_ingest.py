"""Ingest: rejects with reasons, conserved counts, dense ids, seeded splits."""

from __future__ import annotations

import polars as pl
import pytest

from pipelines.adapters.generic import read_generic
from pipelines.sources import SourceError
from pipelines.tables import ingest

SPLIT = {"method": "random_ratio", "valid_ratio": 0.1, "test_ratio": 0.1}


def _write(tmp_path, items: str, inter: str):
    (tmp_path / "items.csv").write_text(items)
    (tmp_path / "inter.csv").write_text(inter)
    return read_generic(tmp_path / "items.csv", tmp_path / "inter.csv")


def test_bad_rows_are_rejected_with_reasons_and_counts_conserved(tmp_path) -> None:
    raw = _write(
        tmp_path,
        "item_id,title\nb,B\na,A\na,dup\n ,blank\n",
        "user_id,item_id,timestamp,rating\n"
        "u1,a,1,5\nu1,a,2,5\nu1,zzz,3,5\n,a,4,5\nu2,b,notatime,5\nu2,b,5,x\nu2,b,6,4\n",
    )
    out = ingest(raw, split=SPLIT, seed=1, min_rating=None)
    c = out["counts"]
    assert c["items"] == {"input": 4, "accepted": 2, "rejected": 2}
    assert c["interactions"] == {"input": 7, "accepted": 2, "negatives": 0, "rejected": 5}
    reasons = out["rejects"].get_column("reason").to_list()
    for r in (
        "duplicate item_id",
        "missing item_id",
        "unknown item_id",
        "missing user_id",
        "timestamp is not a number",
        "rating is not a number",
        "duplicate (user_id, item_id)",
    ):
        assert any(x.startswith(r) for x in reasons), r
    rej = out["rejects"].filter(pl.col("reason").str.starts_with("unknown item_id"))
    assert rej.get_column("row").to_list() == [4] and rej.get_column("source").item().endswith("inter.csv")
    # dense ids in sorted raw-id order
    assert out["items"].get_column("item_id").to_list() == ["a", "b"]
    assert out["items"].get_column("item_idx").to_list() == [0, 1]


def test_missing_column_names_file_and_column(tmp_path) -> None:
    with pytest.raises(SourceError, match=r"inter.csv: line 1: missing column 'user_id'"):
        _write(tmp_path, "item_id\na\n", "uid,item_id\n1,a\n")
