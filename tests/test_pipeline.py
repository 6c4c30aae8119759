"""End to end on a tiny demo through the same stage code `dvc repro` runs."""

from __future__ import annotations

import json
import shutil

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from features.schemas import feature_schema
from features.store import read_manifest, read_table, write_table
from pipelines.cli import app
from training import evaluate_stage, export_stage, report, train_stage
from validation import gate


def test_extract_writes_fixed_size_features_with_manifest(tiny_store) -> None:
    root, p = tiny_store
    n_items = read_manifest(root / "store/items")["row_count"]
    for name in p["extract"]["features"]:
        m = read_manifest(root / "store/features" / name)
        t = read_table(root / "store/features" / name)
        assert t.schema.field("embedding").type.list_size == m["dim"]
        assert m["counts"]["items_read"] == n_items == m["counts"]["embedded"] + m["counts"]["rejected"]
        assert m["encoder_id"] and m["normalized"] is True
        assert set(t.column_names) >= {"item_id", "embedding", "content_hash", "event_timestamp", "created"}
    image = read_manifest(root / "store/features/image_clip")
    assert image["random_weights"] is True and "random-init" in image["weights"]
    text = read_manifest(root / "store/features/text_minilm")
    assert text["random_weights"] is False and text["dim"] == 384


def test_validation_passes_on_the_good_store(tiny_store, tmp_path) -> None:
    root, p = tiny_store
    summary = gate.run(p, root / "store", tmp_path / "v", root / "store/graphs/item_knn")
    assert summary["success"] and (tmp_path / "v/index.html").exists()


def test_validate_cli_stops_on_nan_embedding(tiny_store, tmp_path) -> None:
    root, p = tiny_store
    store = tmp_path / "store"
    shutil.copytree(root / "store", store)
    feat = store / "features/text_minilm"
    t = read_table(feat)
    emb = np.stack(t.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    emb[3, 5] = np.nan
    from features.store import embeddings_to_arrow

    t = t.set_column(t.schema.get_field_index("embedding"), "embedding", embeddings_to_arrow(emb))
    m = read_manifest(feat)
    write_table(
        feat,
        t,
        feature_schema(emb.shape[1]),
        **{
            k: v
            for k, v in m.items()
            if k not in ("table", "schema_version", "row_count", "columns", "created", "producer")
        },
    )
    params = tmp_path / "params.yaml"
    import yaml

    params.write_text(yaml.safe_dump(p))
    res = CliRunner().invoke(
        app, ["validate", "--params", str(params), "--store", str(store), "--out", str(tmp_path / "v")]
    )
    assert res.exit_code == 1
    out = res.output
    assert "features/text_minilm" in out and "expect_column_values_to_be_in_set" in out
    assert "nonfinite" in out and t.column("item_id")[3].as_py() in out


@pytest.mark.slow
def test_train_evaluate_report_end_to_end(tiny_store, tmp_path, ray_session) -> None:
    root, p = tiny_store
    p = {**p, "train": {**p["train"], "backend": "ray", "workers": 2}}
    store, graphs = root / "store", root / "store/graphs/item_knn"
    gate.run(p, store, tmp_path / "validation", graphs)
    summary = train_stage.run(p, store, graphs, tmp_path / "models", tmp_path / "curves")
    assert set(summary) == {"bpr", "lightgcn", "freedom"}
    (tmp_path / "models/train_summary.json").write_text(json.dumps(summary))
    metrics = evaluate_stage.run(
        p, store, graphs, tmp_path / "models", tmp_path / "metrics.json", tmp_path / "per_user"
    )
    for name in ("bpr", "lightgcn", "freedom"):
        t = metrics[name]["test"]
        assert 0 <= t["recall@20"] <= 1 and 0 <= t["ndcg@10"] <= 1 and t["users"] > 0
        assert pq.read_table(tmp_path / f"per_user/{name}.parquet").num_rows == t["users"]
        assert (
            len(json.loads((tmp_path / f"curves/{name}.json").read_text())) == p["train"]["common"]["epochs"]
        )
    shutil.copy(root / "reports/ingest.json", tmp_path / "ingest.json")
    report.run(
        p,
        store,
        tmp_path / "report.html",
        metrics_path=tmp_path / "metrics.json",
        validation_dir=tmp_path / "validation",
        curves_dir=tmp_path / "curves",
        ingest_stats=tmp_path / "ingest.json",
        train_summary=tmp_path / "models/train_summary.json",
    )
    page = (tmp_path / "report.html").read_text()
    assert "freedom" in page and "RANDOMLY INITIALISED" in page

    # Export: what downstream teams read, without importing this project.
    p = {**p, "export": {**p["export"], "k": 5}}
    export_stage.run(p, store, graphs, tmp_path / "models", tmp_path / "out")
    recs = pl.read_parquet(tmp_path / "out/recommendations/freedom/*.parquet")
    n_users = read_manifest(store / "users")["row_count"]
    seen = pl.from_arrow(read_table(store / "interactions")).select("user_idx", "item_idx")
    n_items = read_manifest(store / "items")["row_count"]
    unseen = seen.group_by("user_idx").len().with_columns((n_items - pl.col("len")).clip(0, 5).alias("n"))
    assert recs.height == int(unseen["n"].sum()) + 5 * (n_users - unseen.height)
    assert recs.join(seen, on=["user_idx", "item_idx"]).height == 0  # nothing already seen
    assert recs.group_by("user_idx").agg(pl.col("score").is_sorted(descending=True).all())["score"].all()
    emb = duckdb.sql(
        f"select count(*), max(len(embedding)) from '{tmp_path}/out/embeddings/freedom/items/*.parquet'"
    ).fetchall()[0]
    assert emb == (read_manifest(store / "items")["row_count"], 64)
