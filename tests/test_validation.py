"""The validation gate: every check fails on a table built to break it and names a sample.

Stores are built directly with ``features.store.write_table`` (no encoders), so each case
costs one GX run over a few dozen rows.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner
from validation_helpers import feature_table, items_table, unit_rows, write_features

from features import schemas
from features.errors import PlatformError
from features.store import (
    base_manifest,
    embeddings_to_arrow,
    read_manifest,
    read_table,
    write_manifest,
    write_table,
)
from pipelines.cli import app
from pipelines.config import Config, deep_merge, load_config, to_raw
from pipelines.layout import Layout
from pipelines.stages import validate
from validation.suites import items_suite

ROOT = Path(__file__).resolve().parents[1]
N_ITEMS, N_USERS, DIM, K = 40, 20, 16, 3
FEATURE = "text"
REJECTED_ITEM = 39  # the good store has one item the encoder rejected
MANIFEST_BASE = ("table", "schema_version", "row_count", "columns", "created", "producer")


def config(features: dict[str, Any] | None = None, **validate_values: Any) -> Config:
    """The project's params.yaml (a text and an image feature) with seed 0; ``features``
    replaces ``extract.features``, ``validate_values`` are merged into ``validate``."""
    raw = to_raw(load_config(ROOT / "params.yaml"))
    raw["seed"] = 0
    if features is not None:
        raw["extract"]["features"] = features
    return Config.from_dict(deep_merge(raw, {"validate": validate_values}))


def unit(rng: np.random.Generator, n: int, d: int = DIM) -> np.ndarray:
    return unit_rows(rng, n, d)


def knn_edges(emb: np.ndarray, k: int) -> pd.DataFrame:
    unit_emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sim = unit_emb @ unit_emb.T
    np.fill_diagonal(sim, -np.inf)
    nb = np.argsort(-sim, axis=1)[:, :k]
    n = len(emb)
    return pd.DataFrame(
        {
            "item_idx": np.repeat(np.arange(n), k),
            "neighbor_idx": nb.ravel(),
            "rank": np.tile(np.arange(k, dtype=np.int32), n),
            "similarity": np.take_along_axis(sim, nb, 1).ravel().astype(np.float32),
        }
    )


def build_store(root: Path) -> Path:
    """A small store that passes every check: 40 items, 20 users, one feature, one graph."""
    rng = np.random.default_rng(0)
    store = root / "store"
    (root / "img").mkdir(parents=True)
    paths = []
    for i in range(N_ITEMS):
        (root / "img" / f"{i}.png").write_bytes(b"png")
        paths.append(str(root / "img" / f"{i}.png"))
    write_table(store / "items", items_table(N_ITEMS, image_paths=paths), schemas.ITEMS)
    users = pd.DataFrame({"user_idx": np.arange(N_USERS), "user_id": [f"u{u}" for u in range(N_USERS)]})
    write_table(store / "users", pa.Table.from_pandas(users), schemas.USERS)
    # User u sees items 2u .. 2u+7 (mod 40): six in train, one in valid, one in test.
    rows = [
        (u, (2 * u + j) % N_ITEMS, j, 1.0, "train" if j < 6 else "valid" if j == 6 else "test")
        for u in range(N_USERS)
        for j in range(8)
    ]
    inter = pd.DataFrame(rows, columns=["user_idx", "item_idx", "timestamp", "rating", "split"])
    write_table(store / "interactions", pa.Table.from_pandas(inter), schemas.INTERACTIONS)
    emb = unit(rng, N_ITEMS)
    kept = [i for i in range(N_ITEMS) if i != REJECTED_ITEM]
    write_features(store / "features" / FEATURE, feature_table(kept, emb[kept]))
    rej = pa.table(
        {
            "item_idx": [REJECTED_ITEM],
            "item_id": [f"it{REJECTED_ITEM:03d}"],
            "reason": ["bad"],
            "detail": ["x"],
        }
    )
    write_table(store / "features/_rejects" / FEATURE, rej, schemas.FEATURE_REJECTS)
    emb[REJECTED_ITEM] = 0
    edges = knn_edges(emb, K)
    write_table(
        store / "graphs/item_knn" / FEATURE,
        pa.Table.from_pandas(edges),
        schemas.GRAPH_EDGES,
        k=K,
        self_loops=False,
        similarity="cosine",
    )
    return store


@pytest.fixture(scope="module")
def good_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("vstore"))


def facts(path: Path) -> dict[str, Any]:
    """What a stage recorded in the table's manifest (beyond the base keys)."""
    return {k: v for k, v in read_manifest(path).items() if k not in MANIFEST_BASE}


def rewrite(path: Path, mutate: Callable[[pd.DataFrame], pd.DataFrame], schema: pa.Schema) -> None:
    """Replace a table's rows by ``mutate(rows)``, keeping its manifest's stage facts."""
    extra = facts(path)
    df = mutate(read_table(path).to_pandas())
    write_table(path, pa.Table.from_pandas(df, preserve_index=False), schema, **extra)


def rewrite_features(
    store: Path, mutate: Callable[[np.ndarray, pd.DataFrame], None], **manifest: Any
) -> None:
    path = store / "features" / FEATURE
    extra = facts(path) | manifest
    t = read_table(path)
    emb = np.stack(t.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    df = t.drop(["embedding"]).to_pandas()
    mutate(emb, df)
    t = pa.Table.from_pandas(df, preserve_index=False).append_column("embedding", embeddings_to_arrow(emb))
    write_table(path, t, schemas.feature_schema(emb.shape[1]), **extra)


def inter(store: Path, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    rewrite(store / "interactions", fn, schemas.INTERACTIONS)


def items(store: Path, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    rewrite(store / "items", fn, schemas.ITEMS)


def graph(store: Path, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    rewrite(store / "graphs/item_knn" / FEATURE, fn, schemas.GRAPH_EDGES)


def with_null(column: str, row: int) -> Callable[[Path], None]:
    """Set one interaction's ``column`` to null. Nullable ids cannot pass write_table's
    schema, so the Parquet part is written by hand."""

    def breaker(store: Path) -> None:
        path = store / "interactions"
        t = read_table(path)
        values = t.column(column).to_pylist()
        values[row] = None
        at = t.schema.get_field_index(column)
        t = t.set_column(at, pa.field(column, pa.int64()), pa.array(values, pa.int64()))
        for f in path.glob("*.parquet"):
            f.unlink()
        pq.write_table(t, path / "part-00000.parquet")
        write_manifest(path, base_manifest("interactions", t.schema, t.num_rows))

    return breaker


def set_at(df: pd.DataFrame, row: int, col: str, value: Any) -> pd.DataFrame:
    df.loc[row, col] = value
    return df


def cold_items(df: pd.DataFrame) -> pd.DataFrame:
    held = df.loc[df["split"] != "train", "item_idx"].head(10)
    return df[~((df["split"] == "train") & df["item_idx"].isin(set(held)))]


def set_col(row: int, col: str, value: Any) -> Callable[[np.ndarray, pd.DataFrame], None]:
    def f(emb: np.ndarray, df: pd.DataFrame) -> None:
        df.loc[row, col] = value

    return f


def set_vec(row: int, value: Any) -> Callable[[np.ndarray, pd.DataFrame], None]:
    def f(emb: np.ndarray, df: pd.DataFrame) -> None:
        emb[row] = value

    return f


def collapse_towards_one_point(emb: np.ndarray, df: pd.DataFrame) -> None:
    rng = np.random.default_rng(1)
    v = unit(rng, 1)[0] + 0.15 * unit(rng, len(emb))
    emb[:] = v / np.linalg.norm(v, axis=1, keepdims=True)


def swap_ids(emb: np.ndarray, df: pd.DataFrame) -> None:
    df.loc[[0, 1], "item_id"] = df.loc[[1, 0], "item_id"].to_numpy()


Breaker = Callable[[Path], None]


Rows = Callable[[pd.DataFrame], pd.DataFrame]
Table = Callable[[Path, Rows], None]


def at(table: Table, row: int, col: str, value: Any) -> Breaker:
    """Break ``table`` (``inter``, ``items``, ``graph``) by setting one cell."""
    return lambda s: table(s, lambda d: set_at(d, row, col, value))


def rows(table: Table, fn: Rows) -> Breaker:
    """Break ``table`` by replacing its rows with ``fn(rows)``."""
    return lambda s: table(s, fn)


def vectors(mutate: Callable[[np.ndarray, pd.DataFrame], None], **manifest: Any) -> Breaker:
    return lambda s: rewrite_features(s, mutate, **manifest)


def no_text(d: pd.DataFrame) -> pd.DataFrame:
    return d.assign(title=d["title"].where(d.index >= 3, " "), description=None)


def no_image(d: pd.DataFrame) -> pd.DataFrame:
    return d.assign(image_path=d["image_path"].where(d.index >= 3, "/nope.png"))


def _dup_id(emb: np.ndarray, df: pd.DataFrame) -> None:
    df.loc[1, "item_id"] = "it000"


F, G = f"features/{FEATURE}", f"graphs/{FEATURE}"
# (table, check, how to break it, a substring the failure sample must contain)
CASES: list[tuple[str, str, Breaker, str]] = [
    ("interactions", "has_rows", rows(inter, lambda d: d.head(0)), "rows"),
    ("interactions", "user_idx_present", with_null("user_idx", 5), "split=train"),
    ("interactions", "item_idx_present", with_null("item_idx", 9), "user_idx=1"),
    ("interactions", "user_idx_in_range", at(inter, 3, "user_idx", 99), "user_idx=99"),
    ("interactions", "item_idx_in_range", at(inter, 3, "item_idx", 77), "item_idx=77"),
    ("interactions", "split_valid", at(inter, 6, "split", "holdout"), "split=holdout"),
    (
        "interactions",
        "no_duplicate_pair_in_split",
        rows(inter, lambda d: pd.concat([d, d.iloc[[0]]])),
        "user_idx=0,item_idx=0,split=train",
    ),
    (
        "interactions",
        "no_pair_across_splits",
        rows(inter, lambda d: pd.concat([d, d.iloc[[1]].assign(split="test")])),
        "user_idx=0,item_idx=1",
    ),
    (
        "interactions",
        "heldout_users_in_train",
        rows(inter, lambda d: d[~((d["user_idx"] == 0) & (d["split"] == "train"))]),
        "user_idx=0",
    ),
    ("interactions", "heldout_items_in_train", rows(inter, cold_items), "split="),
    ("items", "has_rows", rows(items, lambda d: d.head(0)), "rows"),
    ("items", "unique_item_id", at(items, 1, "item_id", "it000"), "it000"),
    ("items", "unique_item_idx", at(items, 2, "item_idx", 5), "it002"),
    ("items", "item_idx_dense", at(items, 7, "item_idx", 400), "it007"),
    ("items", "text_share", rows(items, no_text), "it000"),
    ("items", "image_share", rows(items, no_image), "it000"),
    (F, "rows_match_accepted", lambda s: _drop_feature_rows(s), "missing it003"),
    (F, "unique_item_id", vectors(_dup_id), "it000"),
    (F, "unique_item_idx", vectors(set_col(4, "item_idx", 0)), "it000"),
    (F, "item_idx_in_range", vectors(set_col(4, "item_idx", 999)), "it004"),
    (F, "item_id_matches_items", vectors(swap_ids), "it001"),
    (F, "dim_matches_manifest", vectors(lambda e, d: None, dim=32), "it000"),
    (F, "no_nonfinite", vectors(set_vec(3, np.inf)), "it003"),
    (F, "no_zero_vectors", vectors(set_vec(5, 0.0)), "it005"),
    (F, "duplicate_share", vectors(lambda e, d: e.__setitem__(slice(1, 3), e[0])), "it000"),
    (F, "mean_pair_cosine", vectors(collapse_towards_one_point), "~"),
    (F, "unit_norm", vectors(lambda e, d: e.__imul__(1.01)), "it000"),
    (
        F,
        "reject_share",
        vectors(lambda e, d: None, counts={"items_read": N_ITEMS, "rejected": 3}),
        "3 of 40 items rejected by the encoder, share 0.075 > limit 0.05",
    ),
    (
        F,
        "random_weights",
        vectors(lambda e, d: None, random_weights=True, weights="random-init(seed=0)"),
        "allow_random_weights: true",
    ),
    (G, "rows_are_items_times_k", rows(graph, lambda d: d[d["item_idx"] != 2]), "item_idx 2"),
    (G, "k_neighbors_per_item", rows(graph, lambda d: d.drop(index=[0])), "item_idx=0"),
    (G, "item_idx_in_range", at(graph, 0, "item_idx", 400), "400"),
    (G, "neighbor_idx_in_range", at(graph, 4, "neighbor_idx", 400), "neighbor_idx=400"),
    (G, "rank_in_range", at(graph, 5, "rank", 7), "item_idx=1"),
    (
        G,
        "unique_edges",
        rows(graph, lambda d: set_at(d, 1, "neighbor_idx", d.loc[0, "neighbor_idx"])),
        "item_idx=0",
    ),
    (G, "finite_weights", at(graph, 6, "similarity", np.inf), "item_idx=2"),
    (G, "similarity_in_range", at(graph, 7, "similarity", 1.5), "item_idx=2"),
    (G, "no_self_loops", at(graph, 9, "neighbor_idx", 3), "item_idx=3"),
]


MANIFEST_CHECKS = ("reject_share", "random_weights")


def _drop_feature_rows(store: Path) -> None:
    path = store / "features" / FEATURE
    t = read_table(path)
    write_table(path, t.take([i for i in range(t.num_rows) if i not in (3, 4)]), t.schema, **facts(path))


def layout_of(store: Path, reports: Path) -> Layout:
    return Layout(store=store, models=store.parent / "models", reports=reports)


def run_gate(store: Path, reports: Path, table: str | None, cfg: Config | None = None) -> dict[str, Any]:
    return validate.run(cfg or config(), layout_of(store, reports), tables=[table] if table else None)


def test_good_store_passes_every_check(good_store: Path, tmp_path: Path) -> None:
    summary = run_gate(good_store, tmp_path, None)
    assert summary["success"], summary["failures"]
    assert set(summary["tables"]) == {"interactions", "items", f"features/{FEATURE}", f"graphs/{FEATURE}"}
    results = json.loads((tmp_path / "validation/results.json").read_text())
    checks = {(t["table"], e["check"]) for t in results["tables"] for e in t["expectations"]}
    # Every check the suites run has a case below that breaks it.
    assert checks == {(t, c) for t, c, _, _ in CASES}
    assert summary["drift"][f"features/{FEATURE}"]["reason"] == "no previous snapshot"
    assert "Validation: passed" in (tmp_path / "validation/index.html").read_text()


@pytest.mark.parametrize(
    ("table", "check", "breaker", "sample"), CASES, ids=[f"{t}:{c}" for t, c, _, _ in CASES]
)
def test_broken_table_fails_naming_table_check_and_sample(
    good_store: Path, tmp_path: Path, table: str, check: str, breaker: Callable[[Path], None], sample: str
) -> None:
    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    breaker(store)
    with pytest.raises(validate.ValidationFailed) as err:
        run_gate(store, tmp_path, table)
    lines = [ln for ln in str(err.value).splitlines() if ln.startswith(f"table {table}: {check} (")]
    assert lines, f"{check} did not fail:\n{err.value}"
    kind = "manifest " if check in MANIFEST_CHECKS else "expect_"  # checked in Python / by GX
    assert kind in lines[0] and sample in lines[0].split("; sample: ")[1], lines[0]
    summary = json.loads((tmp_path / "validation/summary.json").read_text())
    assert not summary["success"] and summary["tables"][table]["failed"] >= 1
    assert any(
        d["table"] == table and d["check"] == check and d["sample"] for d in summary["failure_details"]
    )


def test_items_suite_checks_only_the_configured_modalities(tmp_path: Path) -> None:
    """No images in the store: fine for a text-only config, an image_share failure with an image feature."""
    store = tmp_path / "store"
    write_table(store / "items", items_table(N_ITEMS), schemas.ITEMS)
    text_only = config({"t": {"input": "text", "encoder": "sentence-transformers"}})
    assert text_only.extract.modalities() == {"text"}
    summary = run_gate(store, tmp_path / "a", "items", text_only)
    assert summary["success"], summary["failures"]
    suite = items_suite(store / "items", text_only.validate_params, text_only.extract.modalities())
    assert {e.meta["check"] for e in suite.expectations} >= {"text_share"}
    assert "image_share" not in {e.meta["check"] for e in suite.expectations}
    with pytest.raises(validate.ValidationFailed, match=r"table items: image_share \(") as err:
        run_gate(store, tmp_path / "b", "items", config())
    assert "it000" in str(err.value)


def test_items_without_text_pass_when_no_feature_reads_text(tmp_path: Path) -> None:
    store = tmp_path / "store"
    no_text = items_table(N_ITEMS).to_pandas().assign(title="", description=None)
    write_table(store / "items", pa.Table.from_pandas(no_text), schemas.ITEMS)
    ids_only = config({"pre": {"encoder": "precomputed", "path": "x.npy"}})
    assert run_gate(store, tmp_path / "a", "items", ids_only)["success"]
    text = config({"t": {"encoder": "sentence-transformers"}})
    with pytest.raises(validate.ValidationFailed, match=r"table items: text_share \("):
        run_gate(store, tmp_path / "b", "items", text)


def test_cold_items_within_threshold_pass_and_are_counted(good_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    inter(store, lambda d: d[~((d["split"] == "train") & (d["item_idx"] == 6))])  # item 6: valid for user 0
    summary = run_gate(store, tmp_path, "interactions", config(max_cold_item_share=0.1))
    notes = summary["tables"]["interactions"]["notes"]
    assert notes["cold_items"] == 1 and notes["cold_item_rows"] >= 1


def test_self_loops_pass_when_configured(good_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    graph(store, lambda d: set_at(d, 9, "neighbor_idx", 3))
    assert run_gate(store, tmp_path, "graphs", config(allow_self_loops=True))["success"]


def test_per_feature_override_relaxes_collapse_check(good_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    rewrite_features(store, collapse_towards_one_point)
    cfg = config(feature_overrides={FEATURE: {"max_mean_pair_cosine": 0.999}})
    assert run_gate(store, tmp_path, f"features/{FEATURE}", cfg)["success"]


def test_unknown_table_selection_names_what_exists(good_store: Path, tmp_path: Path) -> None:
    with pytest.raises(PlatformError, match="features/text"):
        run_gate(good_store, tmp_path, "features/nope")


def test_cli_validate_selected_table_exits_1_with_summary(good_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    rewrite_features(store, set_vec(3, np.nan))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(to_raw(config())))
    args = ["validate", "--params", str(tmp_path / "params.yaml"), "--store", str(store)]
    ok = CliRunner().invoke(app, [*args, "--reports", str(tmp_path / "ok"), "--table", "items"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "ok/validation/summary.json").exists()
    res = CliRunner().invoke(app, [*args, "--reports", str(tmp_path / "r"), "--table", "features"])
    assert res.exit_code == 1
    assert "features/text: no_nonfinite" in res.output and "it003" in res.output


def test_collapsed_encoder_through_extract_fails_the_gate(good_store: Path, tmp_path: Path) -> None:
    """The real Beam extract stage, fed vectors that are one point for every item."""
    from pipelines.stages import extract

    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    np.save(tmp_path / "const.npy", np.ones((N_ITEMS, 8), np.float32))
    (tmp_path / "ids.txt").write_text("".join(f"it{i:03d}\n" for i in range(N_ITEMS)))
    const = {"encoder": "precomputed", "path": str(tmp_path / "const.npy"), "ids": str(tmp_path / "ids.txt")}
    cfg = config({"const": {**const, "normalize": True}})
    layout = layout_of(store, tmp_path)
    extract.run(cfg, layout)
    with pytest.raises(validate.ValidationFailed) as err:
        validate.run(cfg, layout, tables=["features/const"])
    msg = str(err.value)
    assert "features/const: duplicate_share" in msg and "features/const: mean_pair_cosine" in msg
    assert "it000" in msg


def test_catalog_of_only_corrupt_images_fails_on_reject_share(good_store: Path, tmp_path: Path) -> None:
    """Every image corrupt: an empty feature table, all items rejected; the gate names share and limit."""
    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    path = store / "features" / FEATURE
    t = read_table(path)
    counts = {"items_read": N_ITEMS, "embedded": 0, "reused": 0, "rejected": N_ITEMS}
    write_table(path, t.slice(0, 0), t.schema, **(facts(path) | {"counts": counts}))
    rej = pa.table(
        {
            "item_idx": list(range(N_ITEMS)),
            "item_id": [f"it{i:03d}" for i in range(N_ITEMS)],
            "reason": ["image cannot be decoded"] * N_ITEMS,
            "detail": ["x"] * N_ITEMS,
        }
    )
    write_table(store / "features/_rejects" / FEATURE, rej, schemas.FEATURE_REJECTS)
    with pytest.raises(validate.ValidationFailed) as err:
        run_gate(store, tmp_path, F)
    line = next(ln for ln in str(err.value).splitlines() if f"{F}: reject_share" in ln)
    assert "40 of 40 items rejected by the encoder, share 1 > limit 0.05" in line
    assert "observed 1.0" in line
    summary = json.loads((tmp_path / "validation/summary.json").read_text())
    assert summary["tables"][F]["notes"]["reject_share"] == 1.0


def test_reject_share_limit_is_per_feature(good_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    rewrite_features(store, lambda e, d: None, counts={"items_read": N_ITEMS, "rejected": 3})
    cfg = config(feature_overrides={FEATURE: {"max_reject_share": 0.1}})
    summary = run_gate(store, tmp_path, F, cfg)
    assert summary["success"] and summary["tables"][F]["notes"]["reject_share"] == 0.075
    # The good store's share (1 rejected of 40, from its rejects table) is within the default.
    assert run_gate(good_store, tmp_path / "b", F)["tables"][F]["notes"]["reject_share"] == 0.025


def test_random_weights_fail_unless_allowed_for_the_feature(good_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    rewrite_features(store, lambda e, d: None, random_weights=True, weights="random-init(seed=0)")
    with pytest.raises(validate.ValidationFailed) as err:
        run_gate(store, tmp_path / "a", F)
    msg = str(err.value)
    assert f"{F}: random_weights" in msg and "random encoder weights (random-init(seed=0))" in msg
    assert f"validate.feature_overrides.{FEATURE}.allow_random_weights: true" in msg
    assert f"extract.features.{FEATURE}.pretrained" in msg
    other = config(feature_overrides={"image_clip": {"allow_random_weights": True}})
    with pytest.raises(validate.ValidationFailed, match="random_weights"):
        run_gate(store, tmp_path / "b", F, other)  # allowing another feature does not help
    allowed = config(feature_overrides={FEATURE: {"allow_random_weights": True}})
    assert run_gate(store, tmp_path / "c", F, allowed)["success"]
    assert run_gate(store, tmp_path / "d", F, config(allow_random_weights=True))["success"]
