"""Each adapter on a small file in its real format, through the same ingest code."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from features.store import read_manifest, read_table
from pipelines.adapters import read_source
from pipelines.config import Config
from pipelines.layout import Layout
from pipelines.sources import SourceError
from pipelines.stages import ingest as stage
from pipelines.tables import ingest

SPLIT = {"method": "random_ratio", "valid_ratio": 0.1, "test_ratio": 0.1}
LABELS = {"method": "labels"}


def _counts_conserved(out: dict) -> None:
    for name in ("items", "interactions"):
        c = out["counts"][name]
        assert c["input"] == c["accepted"] + c.get("negatives", 0) + c["rejected"], c


def test_generic_csv_accepts_text_as_description_and_parquet(tmp_path: Path) -> None:
    (tmp_path / "items.csv").write_text(
        "item_id,title,text,image_path\na,A,about a,img/a.png\nb,B,about b,\n"
    )
    pl.DataFrame(
        {
            "user_id": ["u1", "u1", "u2"],
            "item_id": ["a", "b", "a"],
            "timestamp": [1, 2, 3],
            "rating": [5, 4, 3],
        }
    ).write_parquet(tmp_path / "inter.parquet")
    raw = read_source(
        {
            "source": "generic",
            "items": str(tmp_path / "items.csv"),
            "interactions": str(tmp_path / "inter.parquet"),
        }
    )
    out = ingest(raw, split=SPLIT, seed=0)
    items = out["items"]
    assert items.get_column("description").to_list() == ["about a", "about b"]
    assert items.get_column("image_path").to_list()[0].endswith("img/a.png")
    assert out["interactions"].height == 3
    _counts_conserved(out)


def test_generic_column_mapping(tmp_path: Path) -> None:
    (tmp_path / "items.tsv").write_text("asin\tname\nx\tX\n")
    (tmp_path / "inter.tsv").write_text("reviewer\tasin\tstars\nr1\tx\t5\n")
    raw = read_source(
        {
            "source": "generic",
            "items": str(tmp_path / "items.tsv"),
            "interactions": str(tmp_path / "inter.tsv"),
            "options": {
                "item_columns": {"item_id": "asin", "title": "name"},
                "columns": {"user_id": "reviewer", "item_id": "asin", "rating": "stars"},
            },
        }
    )
    out = ingest(raw, split=SPLIT, seed=0)
    assert out["items"].get_column("title").to_list() == ["X"]
    assert out["interactions"].get_column("rating").to_list() == [5.0]


def _mmrec_folder(tmp_path: Path) -> Path:
    d = tmp_path / "toy"
    d.mkdir()
    rows = ["userID\titemID\trating\ttimestamp\tx_label"]
    # 3 users x items 0..11, labels 0/1/2; item ids are MMRec's dense ints
    for u in range(3):
        for k in range(4):
            i = (u * 4 + k) % 12
            rows.append(f"{u}\t{i}\t{1 if k != 3 else 0}\t{100 + k}\t{[0, 0, 1, 2][k]}")
    (d / "toy.inter").write_text("\n".join(rows) + "\n")
    (d / "i_id_mapping.csv").write_text("asin\titemID\n" + "".join(f"B{i:03d}\t{i}\n" for i in range(12)))
    (d / "meta.tsv").write_text("asin\ttitle\n" + "".join(f"B{i:03d}\tTitle {i}\n" for i in range(12)))
    np.save(d / "text_feat.npy", np.arange(12 * 4, dtype=np.float32).reshape(12, 4))
    return d


def test_mmrec_inter_labels_mapping_metadata_and_npy_alignment(tmp_path: Path) -> None:
    d = _mmrec_folder(tmp_path)
    data = {
        "source": "mmrec",
        "items": str(d / "meta.tsv"),
        "interactions": str(d),
        "options": {"name": "toy", "item_columns": {"item_id": "asin", "title": "title"}},
    }
    raw = read_source(data)
    assert raw.facts["features_npy"] == [str(d / "text_feat.npy")]
    out = ingest(raw, split=LABELS, seed=0, negative_ratings=[0])
    items = out["items"]
    # ids as the .inter writes them; natural order keeps item_idx == MMRec itemID
    assert items.get_column("item_id").to_list() == [str(i) for i in range(12)]
    assert items.get_column("item_idx").to_list() == list(range(12))
    assert items.get_column("title").to_list() == [f"Title {i}" for i in range(12)]
    # npy row r belongs to item_id str(r)
    feat = np.load(d / "text_feat.npy")
    row = int(items.filter(pl.col("item_id") == "7").item(0, "item_id"))
    assert feat[row][0] == 28.0
    inter = out["interactions"]
    assert sorted(set(inter.get_column("split").to_list())) == ["train", "valid"]
    # rating-0 rows (here: every user's test row) are explicit negatives, kept apart with their label
    assert out["negatives"].height == 3 and set(out["negatives"].get_column("split")) == {"test"}
    assert out["counts"]["interactions"] == {"input": 12, "accepted": 9, "negatives": 3, "rejected": 0}
    _counts_conserved(out)


def test_mmrec_row_aligned_original_ids_dbbook_style(tmp_path: Path) -> None:
    d = tmp_path / "db"
    d.mkdir()
    (d / "db.inter").write_text("userID\titemID\trating\tx_label\n0\t0\t1\t0\n0\t1\t0\t0\n1\t1\t1\t0\n")
    (d / "db_og_ids.inter").write_text(
        "userID\titemID\trating\tx_label\n7\t900\t1\t0\n7\t31\t0\t0\n8\t31\t1\t0\n"
    )
    (d / "items.tsv").write_text("DBbook_ItemID\tname\tDBpedia_uri\n31\tSnow Crash\tx\n900\tDune\ty\n")
    raw = read_source(
        {
            "source": "mmrec",
            "items": str(d / "items.tsv"),
            "interactions": str(d),
            "options": {
                "name": "db",
                "original_ids": "db_og_ids.inter",
                "item_columns": {"item_id": "DBbook_ItemID", "title": "name"},
            },
        }
    )
    assert raw.items.sort("item_id").get_column("title").to_list() == ["Dune", "Snow Crash"]


def test_mmrec_row_aligned_copy_with_other_length_is_an_error(tmp_path: Path) -> None:
    d = tmp_path / "db"
    d.mkdir()
    (d / "db.inter").write_text("userID\titemID\trating\tx_label\n0\t0\t1\t0\n")
    (d / "og.inter").write_text("userID\titemID\trating\tx_label\n0\t0\t1\t0\n0\t1\t1\t0\n")
    (d / "items.tsv").write_text("item_id\ttitle\n0\tA\n")
    data = {"source": "mmrec", "items": str(d / "items.tsv"), "interactions": str(d / "db.inter")}
    with pytest.raises(SourceError, match=r"og.inter: 2 rows but the .inter has 1"):
        read_source({**data, "options": {"original_ids": "og.inter"}})


def _recbole_folder(tmp_path: Path) -> Path:
    d = tmp_path / "ml-tiny"
    d.mkdir()
    (d / "ml-tiny.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(
            f"{u}\t{i}\t{1 + (u + i) % 5}\t{880000000 + 10 * u + i}\n"
            for u in range(1, 4)
            for i in range(1, 6)
        )
    )
    (d / "ml-tiny.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n2\tGoldenEye\t1995\tAction Adventure Thriller\n"
        "3\tFour Rooms\t1995\tThriller\n4\tGet Shorty\t1995\tAction Comedy Drama\n"
        "5\tCopycat\t1995\tCrime Drama\n"
    )
    (d / "ml-tiny.user").write_text("user_id:token\tage:token\n1\t24\n2\t53\n3\t23\n")
    return d


def test_recbole_atomic_files_typed_headers(tmp_path: Path) -> None:
    d = _recbole_folder(tmp_path)
    raw = read_source(
        {
            "source": "recbole",
            "items": str(d / "ml-tiny.item"),
            "interactions": str(d / "ml-tiny.inter"),
            "options": {
                "item_columns": {"title": "movie_title", "description": ["class"], "category": "class"}
            },
        }
    )
    out = ingest(raw, split={"method": "temporal", "leave_out": 1}, seed=0)
    toy = out["items"].filter(pl.col("item_id") == "1")
    assert toy.item(0, "title") == "Toy Story" and toy.item(0, "description") == "Animation Children's Comedy"
    inter = out["interactions"]
    assert inter.get_column("timestamp").dtype == pl.Int64 and inter.height == 15
    # temporal leave-last-out: each user's last item (5) is test, the one before (4) valid
    test_items = inter.filter(pl.col("split") == "test").get_column("item_idx").to_list()
    assert test_items == [4, 4, 4]
    _counts_conserved(out)


def test_recbole_pre_split_benchmark_files(tmp_path: Path) -> None:
    d = tmp_path / "bk"
    d.mkdir()
    head = "user_id:token\titem_id:token\n"
    (d / "bk.train.inter").write_text(head + "u\ta\nu\tb\nv\ta\n")
    (d / "bk.valid.inter").write_text(head + "u\tc\n")
    (d / "bk.test.inter").write_text(head + "u\td\n")
    raw = read_source({"source": "recbole", "items": None, "interactions": str(d), "options": {"name": "bk"}})
    out = ingest(raw, split=LABELS, seed=0)
    assert out["interactions"].group_by("split").len().sort("split").rows() == [
        ("test", 1),
        ("train", 3),
        ("valid", 1),
    ]


def test_recbole_header_without_type_names_line_and_column(tmp_path: Path) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "bad.inter").write_text("user_id:token\titem_id\n1\t2\n")
    with pytest.raises(SourceError, match=r"bad.inter: line 1, column 2: header field 'item_id'; expected"):
        read_source({"source": "recbole", "items": None, "interactions": str(d)})


def _split_json_folder(tmp_path: Path) -> Path:
    d = tmp_path / "baby"
    d.mkdir()
    (d / "item2id.json").write_text(json.dumps({f"B{i:03d}": i for i in range(6)}))
    (d / "user2id.json").write_text(json.dumps({"A1": 0, "A2": 1}))
    (d / "train.json").write_text(json.dumps({"0": [0, 1, 2], "1": [3, 4]}))
    (d / "val.json").write_text(json.dumps({"0": [3], "1": [0]}))
    (d / "test.json").write_text(json.dumps({"0": [4], "1": [9]}))  # 9: not in item2id
    return d


def test_split_json_dictionaries_with_item_map(tmp_path: Path) -> None:
    d = _split_json_folder(tmp_path)
    raw = read_source({"source": "split_json", "items": str(d / "item2id.json"), "interactions": str(d)})
    out = ingest(raw, split=LABELS, seed=0)
    assert out["items"].get_column("item_id").to_list() == [str(i) for i in range(6)]  # item 5: catalog only
    inter = out["interactions"]
    assert inter.group_by("split").len().sort("split").rows() == [("test", 1), ("train", 5), ("valid", 2)]
    rej = out["rejects"]
    assert rej.height == 1 and rej.item(0, "reason").startswith("unknown item_id")
    assert rej.item(0, "source").endswith("test.json") and rej.item(0, "key") == "9"
    _counts_conserved(out)


def _amazon_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    d = tmp_path / "amz"
    (d / "images").mkdir(parents=True)
    (d / "images" / "P1.jpg").write_bytes(b"jpeg")
    (d / "images" / "51abc.jpg").write_bytes(b"jpeg")
    meta = [
        # 2014: python-literal line, categories as a list of paths, imUrl
        "{'asin': 'P1', 'title': 'Crib', 'description': 'A crib', 'categories': [['Baby', 'Nursery']], "
        "'imUrl': 'http://x/img/zzz.jpg'}",
        # 2023: JSON, parent_asin, lists, images with variants
        json.dumps(
            {
                "parent_asin": "P2",
                "title": "Bottle",
                "description": ["Glass", "bottle"],
                "features": ["BPA free"],
                "categories": ["Baby", "Feeding"],
                "images": [
                    {"thumb": "http://x/t.jpg", "large": "http://x/l.jpg", "variant": "PT01"},
                    {"large": "http://x/images/51abc.jpg", "variant": "MAIN"},
                ],
            }
        ),
    ]
    reviews = [
        json.dumps({"reviewerID": "U1", "asin": "P1", "overall": 5.0, "unixReviewTime": 1300000000}),
        json.dumps(
            {"user_id": "U2", "asin": "V9", "parent_asin": "P2", "rating": 4.0, "timestamp": 1600000000123}
        ),
        json.dumps({"reviewerID": "U1", "asin": "P2", "overall": 3.0, "unixReviewTime": 1300000500}),
    ]
    (d / "meta.jsonl").write_text("\n".join(meta) + "\n")
    with gzip.open(d / "reviews.jsonl.gz", "wt") as f:
        f.write("\n".join(reviews) + "\n")
    return d / "meta.jsonl", d / "reviews.jsonl.gz", d / "images"


def test_amazon_2014_and_2023_field_names_and_local_image_mirror(tmp_path: Path) -> None:
    meta, reviews, images = _amazon_files(tmp_path)
    raw = read_source(
        {"source": "amazon", "items": str(meta), "interactions": str(reviews), "images": str(images)}
    )
    out = ingest(raw, split=SPLIT, seed=0)
    items = out["items"].sort("item_id")
    assert items.get_column("item_id").to_list() == ["P1", "P2"]
    assert items.get_column("category").to_list() == ["Baby > Nursery", "Baby > Feeding"]
    assert items.get_column("description").to_list() == ["A crib", "Glass bottle BPA free"]
    paths = items.get_column("image_path").to_list()
    assert paths[0].endswith("images/P1.jpg") and paths[1].endswith("images/51abc.jpg")  # by id, by URL name
    inter = out["interactions"].sort("timestamp")
    assert inter.get_column("timestamp").to_list() == [1300000000, 1300000500, 1600000000]  # 2023 ms -> s
    assert raw.items.filter(pl.col("item_id") == "P2").item(0, "image_url") == "http://x/images/51abc.jpg"
    _counts_conserved(out)


def test_ingest_run_writes_store_tables_with_negatives_and_stats(tmp_path: Path) -> None:
    d = _mmrec_folder(tmp_path)
    config = Config.from_dict(
        {
            "seed": 1,
            "data": {
                "profile": "toy",
                "source": "mmrec",
                "items": str(d / "toy.inter"),
                "interactions": str(d / "toy.inter"),
                "images": str(d),
                "options": {},
                "ingest": {"negative_ratings": [0], "split": {"method": "labels"}},
            },
            "ingest": {"split": {"method": "random_ratio", "valid_ratio": 0.1, "test_ratio": 0.1}},
        }
    )
    layout = Layout(store=tmp_path / "store", models=tmp_path / "models", reports=tmp_path / "reports")
    summary = stage.run(config, layout)
    assert summary["split_method"] == "labels" and summary["profile"] == "toy"
    neg = read_table(layout.negatives())
    assert neg.num_rows == 3
    m = read_manifest(layout.interactions())
    assert m["split_hash"] == summary["split_hash"] and m["profile"] == "toy"
    stats = json.loads(layout.ingest_stats().read_text())
    assert set(stats["split"]) == {"train", "valid", "test"}
    assert {"users", "items", "interactions", "density", "cold_users", "cold_items"} <= set(
        stats["split"]["train"]
    )
