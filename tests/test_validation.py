"""The validation gate: every check fails on a table built to break it and names a sample.

Stores are built directly with ``features.store.write_table`` (no encoders), so each case
costs one GX run over a few dozen rows.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from features import schemas
from features.encoders import Encoder
from features.store import (
    base_manifest,
    embeddings_to_arrow,
    read_manifest,
    read_table,
    write_manifest,
    write_table,
)
from pipelines.cli import app
from validation import gate

ROOT = Path(__file__).resolve().parents[1]
N_ITEMS, N_USERS, DIM, K = 40, 20, 16, 3
FEATURE = "text"
REJECTED_ITEM = 39  # the good store has one item the encoder rejected
MANIFEST_BASE = ("table", "schema_version", "row_count", "columns", "created", "producer")


def params() -> dict[str, Any]:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    return {"seed": 0, "validate": copy.deepcopy(p["validate"])}


def unit(rng: np.random.Generator, n: int, d: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def feature_table(ids: list[int], emb: np.ndarray, hashes: list[str] | None = None) -> pa.Table:
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return pa.table(
        {
            "item_idx": np.asarray(ids, np.int64),
            "item_id": [f"it{i:03d}" for i in ids],
            "embedding": embeddings_to_arrow(emb),
            "content_hash": hashes or [f"h{i}" for i in ids],
            "event_timestamp": pa.array([now] * len(ids), pa.timestamp("us", tz="UTC")),
            "created": pa.array([now] * len(ids), pa.timestamp("us", tz="UTC")),
        }
    )


def write_features(path: Path, table: pa.Table, dim: int | None = None, **extra: Any) -> None:
    d = table.schema.field("embedding").type.list_size
    manifest = {"dim": dim or d, "normalized": True, "encoder_id": "test-encoder@1", **extra}
    write_table(path, table, schemas.feature_schema(d), **manifest)


def knn_edges(emb: np.ndarray, k: int) -> pd.DataFrame:
    unit_rows = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sim = unit_rows @ unit_rows.T
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
    items = pd.DataFrame(
        {
            "item_idx": np.arange(N_ITEMS),
            "item_id": [f"it{i:03d}" for i in range(N_ITEMS)],
            "title": [f"title {i}" for i in range(N_ITEMS)],
            "description": [f"about {i}" for i in range(N_ITEMS)],
            "category": ["c"] * N_ITEMS,
            "image_path": paths,
        }
    )
    write_table(store / "items", pa.Table.from_pandas(items), schemas.ITEMS)
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


def rewrite(path: Path, mutate: Callable[[pd.DataFrame], pd.DataFrame], schema: pa.Schema) -> None:
    """Replace a table's rows by ``mutate(rows)``, keeping its manifest's stage facts."""
    m = read_manifest(path)
    df = mutate(read_table(path).to_pandas())
    extra = {k: v for k, v in m.items() if k not in MANIFEST_BASE}
    write_table(path, pa.Table.from_pandas(df, preserve_index=False), schema, **extra)


def rewrite_features(
    store: Path, mutate: Callable[[np.ndarray, pd.DataFrame], None], **manifest: Any
) -> None:
    path = store / "features" / FEATURE
    m = read_manifest(path)
    t = read_table(path)
    emb = np.stack(t.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    df = t.drop(["embedding"]).to_pandas()
    mutate(emb, df)
    t = pa.Table.from_pandas(df, preserve_index=False).append_column("embedding", embeddings_to_arrow(emb))
    extra = {k: v for k, v in m.items() if k not in MANIFEST_BASE} | manifest
    write_table(path, t, schemas.feature_schema(emb.shape[1]), **extra)


def inter(store: Path, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    rewrite(store / "interactions", fn, schemas.INTERACTIONS)


def items(store: Path, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    rewrite(store / "items", fn, schemas.ITEMS)


def graph(store: Path, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    rewrite(store / "graphs/item_knn" / FEATURE, fn, schemas.GRAPH_EDGES)


def with_null_user(store: Path) -> None:
    """Nullable ids cannot pass write_table's schema; write the Parquet part by hand."""
    path = store / "interactions"
    t = read_table(path)
    users = t.column("user_idx").to_pylist()
    users[5] = None
    t = t.set_column(0, pa.field("user_idx", pa.int64()), pa.array(users, pa.int64()))
    for f in path.glob("*.parquet"):
        f.unlink()
    pq.write_table(t, path / "part-00000.parquet")
    write_manifest(path, base_manifest("interactions", t.schema, t.num_rows))


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


# (table, check, how to break it, a substring the failure sample must contain)
CASES: list[tuple[str, str, Callable[[Path], None], str]] = [
    ("interactions", "has_rows", lambda s: inter(s, lambda d: d.head(0)), "rows"),
    ("interactions", "user_idx_present", with_null_user, "split=train"),
    ("interactions", "item_idx_present", lambda s: None, ""),  # set below (needs a null item)
    (
        "interactions",
        "user_idx_in_range",
        lambda s: inter(s, lambda d: set_at(d, 3, "user_idx", 99)),
        "user_idx=99",
    ),
    (
        "interactions",
        "item_idx_in_range",
        lambda s: inter(s, lambda d: set_at(d, 3, "item_idx", 77)),
        "item_idx=77",
    ),
    (
        "interactions",
        "split_valid",
        lambda s: inter(s, lambda d: set_at(d, 6, "split", "holdout")),
        "split=holdout",
    ),
    (
        "interactions",
        "no_duplicate_pair_in_split",
        lambda s: inter(s, lambda d: pd.concat([d, d.iloc[[0]]])),
        "user_idx=0,item_idx=0,split=train",
    ),
    (
        "interactions",
        "no_pair_across_splits",
        lambda s: inter(s, lambda d: pd.concat([d, d.iloc[[1]].assign(split="test")])),
        "user_idx=0,item_idx=1",
    ),
    (
        "interactions",
        "heldout_users_in_train",
        lambda s: inter(s, lambda d: d[~((d["user_idx"] == 0) & (d["split"] == "train"))]),
        "user_idx=0",
    ),
    ("interactions", "heldout_items_in_train", lambda s: inter(s, cold_items), "split="),
    ("items", "has_rows", lambda s: items(s, lambda d: d.head(0)), "rows"),
    ("items", "unique_item_id", lambda s: items(s, lambda d: set_at(d, 1, "item_id", "it000")), "it000"),
    ("items", "unique_item_idx", lambda s: items(s, lambda d: set_at(d, 2, "item_idx", 5)), "it002"),
    ("items", "item_idx_dense", lambda s: items(s, lambda d: set_at(d, 7, "item_idx", 400)), "it007"),
    (
        "items",
        "text_share",
        lambda s: items(s, lambda d: d.assign(title=d["title"].where(d.index >= 3, " "), description=None)),
        "it000",
    ),
    (
        "items",
        "image_share",
        lambda s: items(s, lambda d: d.assign(image_path=d["image_path"].where(d.index >= 3, "/nope.png"))),
        "it000",
    ),
    (
        f"features/{FEATURE}",
        "rows_match_accepted",
        lambda s: _drop_feature_rows(s),
        "missing it003",
    ),
    (f"features/{FEATURE}", "unique_item_id", lambda s: rewrite_features(s, _dup_id), "it000"),
    (
        f"features/{FEATURE}",
        "unique_item_idx",
        lambda s: rewrite_features(s, set_col(4, "item_idx", 0)),
        "it000",
    ),
    (
        f"features/{FEATURE}",
        "item_idx_in_range",
        lambda s: rewrite_features(s, set_col(4, "item_idx", 999)),
        "it004",
    ),
    (f"features/{FEATURE}", "item_id_matches_items", lambda s: rewrite_features(s, swap_ids), "it001"),
    (
        f"features/{FEATURE}",
        "dim_matches_manifest",
        lambda s: rewrite_features(s, lambda e, d: None, dim=32),
        "it000",
    ),
    (f"features/{FEATURE}", "no_nonfinite", lambda s: rewrite_features(s, set_vec(3, np.inf)), "it003"),
    (f"features/{FEATURE}", "no_zero_vectors", lambda s: rewrite_features(s, set_vec(5, 0.0)), "it005"),
    (
        f"features/{FEATURE}",
        "duplicate_share",
        lambda s: rewrite_features(s, lambda e, d: e.__setitem__(slice(1, 3), e[0])),
        "it000",
    ),
    (
        f"features/{FEATURE}",
        "mean_pair_cosine",
        lambda s: rewrite_features(s, collapse_towards_one_point),
        "~",
    ),
    (
        f"features/{FEATURE}",
        "unit_norm",
        lambda s: rewrite_features(s, lambda e, d: e.__imul__(1.01)),
        "it000",
    ),
    (
        f"graphs/{FEATURE}",
        "rows_are_items_times_k",
        lambda s: graph(s, lambda d: d[d["item_idx"] != 2]),
        "item_idx 2",
    ),
    (
        f"graphs/{FEATURE}",
        "k_neighbors_per_item",
        lambda s: graph(s, lambda d: d.drop(index=[0])),
        "item_idx=0",
    ),
    (
        f"graphs/{FEATURE}",
        "item_idx_in_range",
        lambda s: graph(s, lambda d: set_at(d, 0, "item_idx", 400)),
        "400",
    ),
    (
        f"graphs/{FEATURE}",
        "neighbor_idx_in_range",
        lambda s: graph(s, lambda d: set_at(d, 4, "neighbor_idx", 400)),
        "neighbor_idx=400",
    ),
    (
        f"graphs/{FEATURE}",
        "rank_in_range",
        lambda s: graph(s, lambda d: set_at(d, 5, "rank", 7)),
        "item_idx=1",
    ),
    (
        f"graphs/{FEATURE}",
        "unique_edges",
        lambda s: graph(s, lambda d: set_at(d, 1, "neighbor_idx", d.loc[0, "neighbor_idx"])),
        "item_idx=0",
    ),
    (
        f"graphs/{FEATURE}",
        "finite_weights",
        lambda s: graph(s, lambda d: set_at(d, 6, "similarity", np.inf)),
        "item_idx=2",
    ),
    (
        f"graphs/{FEATURE}",
        "similarity_in_range",
        lambda s: graph(s, lambda d: set_at(d, 7, "similarity", 1.5)),
        "item_idx=2",
    ),
    (
        f"graphs/{FEATURE}",
        "no_self_loops",
        lambda s: graph(s, lambda d: set_at(d, 9, "neighbor_idx", 3)),
        "item_idx=3",
    ),
]


def _drop_feature_rows(store: Path) -> None:
    path = store / "features" / FEATURE
    t = read_table(path)
    keep = [i for i in range(t.num_rows) if i not in (3, 4)]
    m = read_manifest(path)
    write_table(
        path,
        t.take(keep),
        t.schema,
        **{k: v for k, v in m.items() if k not in MANIFEST_BASE},
    )


def _dup_id(emb: np.ndarray, df: pd.DataFrame) -> None:
    df.loc[1, "item_id"] = "it000"


def _null_item(store: Path) -> None:
    path = store / "interactions"
    t = read_table(path)
    vals = t.column("item_idx").to_pylist()
    vals[9] = None
    t = t.set_column(1, pa.field("item_idx", pa.int64()), pa.array(vals, pa.int64()))
    for f in path.glob("*.parquet"):
        f.unlink()
    pq.write_table(t, path / "part-00000.parquet")
    write_manifest(path, base_manifest("interactions", t.schema, t.num_rows))


CASES[2] = ("interactions", "item_idx_present", _null_item, "user_idx=1")


def run_gate(store: Path, out: Path, table: str, p: dict[str, Any] | None = None) -> dict[str, Any]:
    return gate.run(p or params(), store, out, tables=[table])


def test_good_store_passes_every_check(good_store: Path, tmp_path: Path) -> None:
    summary = gate.run(params(), good_store, tmp_path / "v")
    assert summary["success"], summary["failures"]
    assert set(summary["tables"]) == {"interactions", "items", f"features/{FEATURE}", f"graphs/{FEATURE}"}
    results = json.loads((tmp_path / "v/results.json").read_text())
    checks = {(t["table"], e["check"]) for t in results["tables"] for e in t["expectations"]}
    # Every check the suites run has a case below that breaks it.
    assert checks == {(t, c) for t, c, _, _ in CASES}
    assert summary["drift"][f"features/{FEATURE}"]["reason"] == "no previous snapshot"
    assert "Validation: passed" in (tmp_path / "v/index.html").read_text()


@pytest.mark.parametrize(
    ("table", "check", "breaker", "sample"), CASES, ids=[f"{t}:{c}" for t, c, _, _ in CASES]
)
def test_broken_table_fails_naming_table_check_and_sample(
    good_store: Path, tmp_path: Path, table: str, check: str, breaker: Callable[[Path], None], sample: str
) -> None:
    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    breaker(store)
    with pytest.raises(gate.ValidationFailed) as err:
        run_gate(store, tmp_path / "v", table)
    lines = [ln for ln in str(err.value).splitlines() if ln.startswith(f"table {table}: {check} (")]
    assert lines, f"{check} did not fail:\n{err.value}"
    assert "expect_" in lines[0] and sample in lines[0].split("; sample: ")[1], lines[0]
    summary = json.loads((tmp_path / "v/summary.json").read_text())
    assert not summary["success"] and summary["tables"][table]["failed"] >= 1
    assert any(
        d["table"] == table and d["check"] == check and d["sample"] for d in summary["failure_details"]
    )


def test_cold_items_within_threshold_pass_and_are_counted(good_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    inter(store, lambda d: d[~((d["split"] == "train") & (d["item_idx"] == 6))])  # item 6: valid for user 0
    p = params()
    p["validate"]["max_cold_item_share"] = 0.1
    summary = run_gate(store, tmp_path / "v", "interactions", p)
    notes = summary["tables"]["interactions"]["notes"]
    assert notes["cold_items"] == 1 and notes["cold_item_rows"] >= 1


def test_self_loops_pass_when_configured(good_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    graph(store, lambda d: set_at(d, 9, "neighbor_idx", 3))
    p = params()
    p["validate"]["allow_self_loops"] = True
    assert run_gate(store, tmp_path / "v", "graphs", p)["success"]


def test_per_feature_override_relaxes_collapse_check(good_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    rewrite_features(store, collapse_towards_one_point)
    p = params()
    p["validate"]["feature_overrides"] = {FEATURE: {"max_mean_pair_cosine": 0.999}}
    assert run_gate(store, tmp_path / "v", f"features/{FEATURE}", p)["success"]


def test_unknown_table_selection_names_what_exists(good_store: Path, tmp_path: Path) -> None:
    with pytest.raises(gate.PlatformError, match="features/text"):
        run_gate(good_store, tmp_path / "v", "features/nope")


def test_cli_validate_selected_table_exits_1_with_summary(good_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    rewrite_features(store, set_vec(3, np.nan))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params()))
    args = ["validate", "--params", str(tmp_path / "params.yaml"), "--store", str(store)]
    ok = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "ok"), "--table", "items"])
    assert ok.exit_code == 0, ok.output
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "v"), "--table", "features"])
    assert res.exit_code == 1
    assert "features/text: no_nonfinite" in res.output and "it003" in res.output


class ConstantEncoder(Encoder):
    """Maps every item to the same vector: a collapsed encoder."""

    name = "constant-test"
    modality = "text"
    dim = 8
    normalized = True
    weights = "none"

    @property
    def id(self) -> str:
        return "constant-test@1"

    def encode(self, batch: Sequence[Any]) -> np.ndarray:
        v = np.ones((len(batch), self.dim), np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_collapsed_encoder_through_extract_fails_the_gate(good_store: Path, tmp_path: Path) -> None:
    """The real Beam extract stage, fed an encoder that returns one vector for every item."""
    from features.encoders import base
    from pipelines import extract

    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    base._REGISTRY["constant-test"] = ConstantEncoder  # type: ignore[assignment]
    try:
        p = yaml.safe_load((ROOT / "params.yaml").read_text())
        p["extract"]["features"] = {"const": {"input": "text", "encoder": "constant-test"}}
        p["extract"]["beam"]["options"] = {"direct_num_workers": 1, "direct_running_mode": "in_memory"}
        extract.run(p, store)
    finally:
        base._REGISTRY.pop("constant-test", None)
    with pytest.raises(gate.ValidationFailed) as err:
        run_gate(store, tmp_path / "v", "features/const")
    msg = str(err.value)
    assert "features/const: duplicate_share" in msg and "features/const: mean_pair_cosine" in msg
    assert "it000" in msg
