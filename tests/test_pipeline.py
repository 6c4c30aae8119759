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
from pipelines.config import to_raw
from pipelines.layout import Layout
from pipelines.stages import evaluate as evaluate_stage
from pipelines.stages import export as export_stage
from pipelines.stages import report, validate
from pipelines.stages import train as train_stage


def test_extract_writes_fixed_size_features_with_manifest(tiny_store) -> None:
    root, config, _ = tiny_store
    n_items = read_manifest(root / "store/items")["row_count"]
    for name in config.feature_names():
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
    root, config, _ = tiny_store
    layout = Layout(store=root / "store", reports=tmp_path)
    summary = validate.run(config, layout)
    assert summary["success"] and (tmp_path / "validation/index.html").exists()


def test_validate_cli_stops_on_nan_embedding(tiny_store, tmp_path) -> None:
    root, config, _ = tiny_store
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

    params.write_text(yaml.safe_dump(to_raw(config)))
    res = CliRunner().invoke(
        app, ["validate", "--params", str(params), "--store", str(store), "--reports", str(tmp_path / "r")]
    )
    assert res.exit_code == 1
    out = res.output
    assert "features/text_minilm" in out and "expect_column_values_to_be_in_set" in out
    assert "nonfinite" in out and t.column("item_id")[3].as_py() in out


@pytest.mark.slow
def test_train_evaluate_report_end_to_end(tiny_store, tmp_path, ray_session) -> None:
    root, config, _ = tiny_store
    config = config.updated({"train": {"backend": "ray", "workers": 2}})
    store = tmp_path / "store"
    shutil.copytree(root / "store", store)
    layout = Layout(store=store, models=tmp_path / "models", reports=tmp_path / "reports")
    validate.run(config, layout)
    summary = train_stage.run(config, layout)
    assert set(summary) == {"bpr", "lightgcn", "freedom"}
    assert json.loads((tmp_path / "models/train_summary.json").read_text()) == summary
    metrics = evaluate_stage.run(config, layout)
    for name in ("bpr", "lightgcn", "freedom"):
        t = metrics[name]["test"]
        assert 0 <= t["recall@20"] <= 1 and 0 <= t["ndcg@10"] <= 1 and t["users"] > 0
        assert pq.read_table(tmp_path / f"reports/per_user/{name}.parquet").num_rows == t["users"]
        curve = json.loads((tmp_path / f"reports/curves/{name}.json").read_text())
        assert len(curve) == config.train.common.epochs
    shutil.copy(root / "reports/ingest.json", tmp_path / "reports/ingest.json")
    report.run(config, layout)
    page = (tmp_path / "reports/report.html").read_text()
    assert "freedom" in page and "RANDOMLY INITIALISED" in page

    # Export: what downstream teams read, without importing this project.
    export_stage.run(config.updated({"export": {"k": 5}}), layout)
    recs = pl.read_parquet(tmp_path / "store/recommendations/freedom/*.parquet")
    n_users = read_manifest(store / "users")["row_count"]
    seen = pl.from_arrow(read_table(store / "interactions")).select("user_idx", "item_idx")
    n_items = read_manifest(store / "items")["row_count"]
    unseen = seen.group_by("user_idx").len().with_columns((n_items - pl.col("len")).clip(0, 5).alias("n"))
    assert recs.height == int(unseen["n"].sum()) + 5 * (n_users - unseen.height)
    assert recs.join(seen, on=["user_idx", "item_idx"]).height == 0  # nothing already seen
    assert recs.group_by("user_idx").agg(pl.col("score").is_sorted(descending=True).all())["score"].all()
    emb = duckdb.sql(
        f"select count(*), max(len(embedding)) from '{store}/embeddings/freedom/items/*.parquet'"
    ).fetchall()[0]
    assert emb == (read_manifest(store / "items")["row_count"], 64)
