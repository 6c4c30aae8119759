"""The bad-input corpus: each case ends in a clear error (file, line, column, what was
expected) or in rejects with a reason, and input rows = accepted + negatives + rejected."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from pipelines import tables
from pipelines.adapters import generic, read_source
from pipelines.cleaning import Cleaned
from pipelines.sources import RawData, SourceError
from pipelines.tables import IngestError, ingest

SPLIT = {"method": "random_ratio", "valid_ratio": 0.1, "test_ratio": 0.1}
ITEMS = "item_id,title\na,A\nb,B\nc,C\n"


def _generic(tmp_path: Path, inter: str | bytes, items: str = ITEMS) -> dict:
    (tmp_path / "items.csv").write_text(items)
    p = tmp_path / "inter.csv"
    if isinstance(inter, bytes):
        p.write_bytes(inter)
    else:
        p.write_text(inter)
    return {"source": "generic", "items": str(tmp_path / "items.csv"), "interactions": str(p)}


def _run(data: dict, **kw) -> dict:
    out = ingest(read_source(data), split=SPLIT, seed=0, **kw)
    for name in ("items", "interactions"):
        c = out["counts"][name]
        assert c["input"] == c["accepted"] + c.get("negatives", 0) + c["rejected"], c
    return out


def _reasons(out: dict) -> dict[int, str]:
    rej = out["rejects"].filter(pl.col("source").str.ends_with("inter.csv"))
    return dict(zip(rej.get_column("row").to_list(), rej.get_column("reason").to_list(), strict=True))


def test_malformed_lines_are_rejected_with_line_and_reason(tmp_path: Path) -> None:
    out = _run(_generic(tmp_path, "user_id,item_id,rating\nu1,a,5\nu1,b,5,extra\nu2\nu2,c,4\n"))
    reasons = _reasons(out)
    assert reasons[3] == "malformed line: 4 field(s), expected 3 separated by ','"
    assert reasons[4].startswith("malformed line: 1 field(s), expected 3")
    assert out["counts"]["interactions"] == {"input": 4, "accepted": 2, "negatives": 0, "rejected": 2}


def test_mixed_delimiters_line_gets_a_hint(tmp_path: Path) -> None:
    out = _run(_generic(tmp_path, "user_id,item_id,rating\nu1,a,5\nu2;b;4\n"))
    assert _reasons(out)[3].endswith("the line contains ';' (mixed delimiters?)")


def test_header_in_another_delimiter_is_an_error_naming_line_1(tmp_path: Path) -> None:
    with pytest.raises(
        SourceError, match=r"inter.csv: line 1: header 'user_id;item_id' is one column; .*found ';'"
    ):
        read_source(_generic(tmp_path, "user_id;item_id\nu1;a\n"))


def test_missing_column_names_file_line_and_found_columns(tmp_path: Path) -> None:
    with pytest.raises(
        SourceError, match=r"inter.csv: line 1: missing column 'item_id'; found \['user_id', 'rating'\]"
    ):
        read_source(_generic(tmp_path, "user_id,rating\nu1,5\n"))


def test_misnamed_column_suggests_the_near_name(tmp_path: Path) -> None:
    with pytest.raises(
        SourceError, match=r"missing column 'user_id'; found \['UserID', 'item_id'\]; did you mean 'UserID'\?"
    ):
        read_source(_generic(tmp_path, "UserID,item_id\nu1,a\n"))


def test_duplicate_header_column_names_line_1_and_column(tmp_path: Path) -> None:
    with pytest.raises(
        SourceError, match=r"line 1, column 3: duplicate column name 'item_id' \(also column 2\)"
    ):
        read_source(_generic(tmp_path, "user_id,item_id,item_id\nu1,a,b\n"))


def test_duplicate_interactions_keep_the_earliest(tmp_path: Path) -> None:
    out = _run(_generic(tmp_path, "user_id,item_id,timestamp\nu1,a,20\nu1,a,10\nu1,b,5\n"))
    assert _reasons(out) == {2: "duplicate (user_id, item_id) interaction (earliest kept)"}
    assert out["interactions"].filter(pl.col("item_idx") == 0).item(0, "timestamp") == 10


def test_unknown_item_ids_are_rejected(tmp_path: Path) -> None:
    out = _run(_generic(tmp_path, "user_id,item_id\nu1,a\nu1,zz\n"))
    assert _reasons(out) == {3: "unknown item_id (not in the item catalog)"}


def test_ids_with_whitespace_and_unicode_forms_are_one_id(tmp_path: Path) -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    items = f"item_id,title\n{composed},C\n"
    inter = (
        f"user_id,item_id,timestamp\n u1 ,{decomposed},1\nu1,\u00a0{composed}\u2003,2\nu\u00f8,{composed},3\n"
    )
    out = _run(_generic(tmp_path, inter, items))
    assert out["items"].get_column("item_id").to_list() == [composed]
    assert _reasons(out) == {3: "duplicate (user_id, item_id) interaction (earliest kept)"}
    assert out["counts"]["users"] == 2  # 'u1' and 'uø'


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"inter.csv: empty file; expected a header line and data rows"):
        read_source(_generic(tmp_path, ""))


def test_header_only_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(
        SourceError, match=r"inter.csv: header only, no data rows \(columns \['user_id', 'item_id'\]\)"
    ):
        read_source(_generic(tmp_path, "user_id,item_id\n"))


def test_invalid_utf8_line_is_rejected_with_its_column(tmp_path: Path) -> None:
    out = _run(_generic(tmp_path, b"user_id,item_id\nu1,a\nu\xff2,b\n"))
    assert _reasons(out) == {3: "not valid UTF-8 (column 2)"}


def test_bad_values_and_missing_ids_are_rejected(tmp_path: Path) -> None:
    inter = "user_id,item_id,timestamp,rating\n,a,1,5\nu1,,1,5\nu1,a,x,5\nu1,b,1,five\nu1,c,2,1\n"
    out = _run(_generic(tmp_path, inter), min_rating=2)
    assert _reasons(out) == {
        2: "missing user_id",
        3: "missing item_id",
        4: "timestamp is not a number",
        5: "rating is not a number",
        6: "rating below min_rating 2",
    }


def test_explicit_negatives_are_kept_apart_and_a_conflicting_negative_loses(tmp_path: Path) -> None:
    out = _run(
        _generic(tmp_path, "user_id,item_id,rating\nu1,a,0\nu1,b,1\nu1,b,0\nu1,c,1\nu2,a,1\n"),
        negative_ratings=[0],
    )
    assert out["counts"]["interactions"] == {"input": 5, "accepted": 3, "negatives": 1, "rejected": 1}
    assert _reasons(out) == {4: "explicit negative of a pair that is also a positive (positive kept)"}
    assert out["negatives"].get_column("item_idx").to_list() == [0]


def test_unknown_split_label_is_rejected(tmp_path: Path) -> None:
    data = _generic(tmp_path, "user_id,item_id,label\nu1,a,train\nu1,b,test\nu1,c,holdout\n")
    out = ingest(read_source(data), split={"method": "labels"}, seed=0)
    assert _reasons(out) == {4: "unknown split label (expected one of ['train', 'valid', 'test'])"}


def test_cold_users_are_dropped_from_valid_and_test_with_a_reason(tmp_path: Path) -> None:
    data = _generic(tmp_path, "user_id,item_id,label\nu1,a,train\nu1,b,test\nu2,c,test\n")
    out = ingest(read_source(data), split={"method": "labels"}, seed=0)
    assert _reasons(out) == {
        4: "user has no train interaction (dropped from valid/test: evaluation protocol)"
    }
    assert out["split_stats"]["test"]["cold_users"] == 0


def test_malformed_json_lines_and_split_files(tmp_path: Path) -> None:
    (tmp_path / "meta.jsonl").write_text('{"asin": "a", "title": "A"}\n{"asin": "b", "title": \n[1, 2]\n')
    (tmp_path / "reviews.jsonl").write_text('{"reviewerID": "u", "asin": "a", "overall": 5}\n')
    data = {
        "source": "amazon",
        "items": str(tmp_path / "meta.jsonl"),
        "interactions": str(tmp_path / "reviews.jsonl"),
    }
    out = _run(data)
    rej = out["rejects"].sort("row")
    assert rej.get_column("row").to_list() == [2, 3]
    assert rej.item(0, "reason").startswith("malformed JSON line: Expecting value at column")
    assert rej.item(1, "reason") == "malformed JSON line: expected an object, found list"
    d = tmp_path / "split"
    d.mkdir()
    (d / "train.json").write_text('{"0": [1, 2],\n "1": [3,}')
    with pytest.raises(SourceError, match=r"train.json: line 2, column 10: invalid JSON"):
        read_source({"source": "split_json", "items": None, "interactions": str(d)})
    (d / "train.json").write_text(json.dumps({"0": [1, 2], "1": "oops"}))
    (d / "val.json").write_text("{}")
    (d / "test.json").write_text(json.dumps({"0": [3]}))
    out = _run({"source": "split_json", "items": None, "interactions": str(d)})
    assert out["rejects"].get_column("reason").to_list() == [
        "user '1': expected a list of item ids, found \"oops\""
    ]
    assert out["counts"]["interactions"]["input"] == 4


def test_unknown_source_and_unknown_option_name_the_param(tmp_path: Path) -> None:
    data = _generic(tmp_path, "user_id,item_id\nu1,a\n")
    with pytest.raises(SourceError, match=r"data.source: unknown source 'csv'"):
        read_source({**data, "source": "csv"})
    with pytest.raises(SourceError, match=r"data.options: unknown option\(s\) \['seperator'\]"):
        read_source({**data, "options": {"seperator": ";"}})


def test_quoted_newlines_and_crlf_keep_line_numbers(tmp_path: Path) -> None:
    items = 'item_id,title,description\r\na,"A","multi\r\nline"\r\nb,B,"has, comma"\r\nc,C\r\n'
    out = _run(_generic(tmp_path, "user_id,item_id\nu1,a\nu1,b\n", items))
    assert out["items"].get_column("description").to_list() == ["multi\r\nline", "has, comma"]
    rej = out["rejects"].filter(pl.col("source").str.ends_with("items.csv"))
    assert rej.rows() == [(str(tmp_path / "items.csv"), 5, None, rej.item(0, "reason"), '"c,C"')]
    assert rej.item(0, "reason").startswith("malformed line: 2 field(s), expected 3")


def test_blank_and_malformed_lines_of_an_amazon_file_are_rejected_not_dropped(tmp_path: Path) -> None:
    (tmp_path / "meta.jsonl").write_text('{"asin": "a", "title": "A"}\n\n{"asin": "b", "title": "B"}\n')
    (tmp_path / "reviews.jsonl").write_text(
        '{"reviewerID": "u", "asin": "a", "overall": 5}\n'
        "\n"
        "{not json\n"
        "   \r\n"
        '{"reviewerID": "u", "asin": "b", "overall": 4}\n'
        '{"reviewerID": "v", "asin": "a", "overall": 5}'  # no newline at the end: still a record
    )
    raw = read_source(
        {
            "source": "amazon",
            "items": str(tmp_path / "meta.jsonl"),
            "interactions": str(tmp_path / "reviews.jsonl"),
        }
    )
    assert raw.interaction_input_rows == {str(tmp_path / "reviews.jsonl"): 6}
    assert raw.item_input_rows == {str(tmp_path / "meta.jsonl"): 3}
    out = _run(
        {
            "source": "amazon",
            "items": str(tmp_path / "meta.jsonl"),
            "interactions": str(tmp_path / "reviews.jsonl"),
        }
    )
    reviews = out["rejects"].filter(pl.col("source").str.ends_with("reviews.jsonl"))
    reasons = dict(
        zip(reviews.get_column("row").to_list(), reviews.get_column("reason").to_list(), strict=True)
    )
    assert reasons[2] == reasons[4] == "blank line (no record)"
    assert reasons[3].startswith("malformed JSON line:")
    assert out["counts"]["interactions"]["input"] == 6 and out["counts"]["items"]["input"] == 3
    meta = out["rejects"].filter(pl.col("source").str.ends_with("meta.jsonl"))
    assert meta.select("row", "reason").rows() == [(2, "blank line (no record)")]


def test_blank_lines_and_null_ids_of_a_csv_are_rejected_with_a_reason(tmp_path: Path) -> None:
    items = "item_id,title\na,A\n,no id\nb,B\n\nc,C\n"
    out = _run(_generic(tmp_path, "user_id,item_id\nu1,a\n\n,b\nu1,\nu2,b\n,,\n\n", items))
    assert _reasons(out) == {
        3: "blank line (no record)",
        4: "missing user_id",
        5: "missing item_id",
        7: "blank line (no record)",
        8: "blank line (no record)",
    }
    item_rej = out["rejects"].filter(pl.col("source").str.ends_with("items.csv"))
    assert item_rej.select("row", "reason").rows() == [(5, "blank line (no record)"), (3, "missing item_id")]
    assert out["counts"]["items"] == {"input": 5, "accepted": 3, "rejected": 2}
    assert out["counts"]["interactions"] == {"input": 7, "accepted": 2, "negatives": 0, "rejected": 5}


def test_header_and_blank_lines_only_is_still_header_only(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"inter.csv: header only, no data rows"):
        read_source(_generic(tmp_path, "user_id,item_id\n\n\n"))


def test_an_adapter_that_drops_a_row_fails_the_conservation_check(tmp_path: Path, monkeypatch) -> None:
    """A reader counts 3 records; an adapter that silently loses one cannot get past ingest."""
    real = generic.read_interactions

    def lossy(*args, **kwargs):
        frame, rejects, counts = real(*args, **kwargs)
        return frame.head(-1), rejects, counts

    monkeypatch.setattr(generic, "read_interactions", lossy)
    data = _generic(tmp_path, "user_id,item_id\nu1,a\nu1,b\nu2,c\n")
    with pytest.raises(
        IngestError,
        match=r"interactions: the readers read 3 rows \(.*inter.csv': 3\}\) but the adapter passed on "
        r"2 rows \+ 0 read rejects = 2; 1 row\(s\) unaccounted for",
    ):
        ingest(read_source(data), split=SPLIT, seed=0)


def test_a_row_lost_inside_ingest_fails_the_conservation_check(tmp_path: Path, monkeypatch) -> None:
    real = tables.clean_interactions

    def lossy(*args, **kwargs) -> Cleaned:
        c = real(*args, **kwargs)
        return Cleaned(accepted=c.accepted.head(-1), rejects=c.rejects, negatives=c.negatives)

    monkeypatch.setattr(tables, "clean_interactions", lossy)
    data = _generic(tmp_path, "user_id,item_id\nu1,a\nu1,b\nu2,c\nu2,a\n")
    with pytest.raises(
        IngestError,
        match=r"interactions: row count not conserved: 4 input rows != 3 accepted \+ 0 negatives \+ "
        r"0 rejected = 3 \(\+1 unaccounted for\)",
    ):
        ingest(read_source(data), split=SPLIT, seed=0)


def test_raw_data_without_reader_counts_is_refused(tmp_path: Path) -> None:
    raw = read_source(_generic(tmp_path, "user_id,item_id\nu1,a\n"))
    bare = RawData(items=raw.items, interactions=raw.interactions, image_root=raw.image_root)
    with pytest.raises(IngestError, match=r"items: the adapter did not report how many rows it read"):
        ingest(bare, split=SPLIT, seed=0)
