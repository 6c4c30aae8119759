"""One suite per store table: the frame GX sees and the expectations over it.

Thresholds come from ``params.yaml`` (``validate``). Each builder returns the pandas
frame (with derived scalar columns) and the list of expectations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

from features.schemas import SPLITS, embedding_dim
from features.store import arrow_to_embeddings, read_manifest, read_table

Suite = tuple[pd.DataFrame, list[Any], dict[str, Any]]


def interactions_suite(store: Path, th: dict[str, Any]) -> Suite:
    n_users = read_manifest(store / "users")["row_count"]
    n_items = read_manifest(store / "items")["row_count"]
    df = read_table(store / "interactions").to_pandas()
    train = df[df["split"] == "train"]
    heldout = df["split"] != "train"
    df["user_in_train"] = ~heldout | df["user_idx"].isin(set(train["user_idx"]))
    df["item_in_train"] = ~heldout | df["item_idx"].isin(set(train["item_idx"]))
    df["pair"] = df["user_idx"].astype(str) + ":" + df["item_idx"].astype(str)
    cold_items = int((~df["item_in_train"]).sum())
    exps = [
        gxe.ExpectColumnValuesToNotBeNull(column="user_idx"),
        gxe.ExpectColumnValuesToNotBeNull(column="item_idx"),
        gxe.ExpectColumnValuesToBeBetween(column="user_idx", min_value=0, max_value=n_users - 1),
        gxe.ExpectColumnValuesToBeBetween(column="item_idx", min_value=0, max_value=n_items - 1),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        # One row per (user, item) across the whole table: no duplicate within a split
        # and no pair shared between splits (a leaked split).
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_idx", "item_idx"]),
        gxe.ExpectColumnValuesToBeInSet(column="user_in_train", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(
            column="item_in_train", value_set=[True], mostly=1.0 - float(th["max_cold_item_share"])
        ),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
    ]
    return df, exps, {"id_column": "pair", "cold_item_rows": cold_items}


def items_suite(store: Path, th: dict[str, Any]) -> Suite:
    df = read_table(store / "items").to_pandas()
    text = (df["title"].fillna("") + df["description"].fillna("")).str.strip()
    df["has_text"] = text.str.len() > 0
    df["image_exists"] = df["image_path"].map(lambda p: bool(p) and Path(p).is_file())
    exps = [
        gxe.ExpectColumnValuesToBeUnique(column="item_id"),
        gxe.ExpectColumnValuesToBeUnique(column="item_idx"),
        gxe.ExpectColumnValuesToBeBetween(column="item_idx", min_value=0, max_value=max(0, len(df) - 1)),
        gxe.ExpectColumnValuesToBeInSet(
            column="has_text", value_set=[True], mostly=float(th["min_text_share"])
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="image_exists", value_set=[True], mostly=float(th["min_image_share"])
        ),
    ]
    return df, exps, {"id_column": "item_id"}


def feature_frame(path: Path, sample_pairs: int, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Scalar columns per vector: norm, non-finite count, duplicate flag, sampled cosine."""
    manifest = read_manifest(path)
    table = read_table(path)
    emb = arrow_to_embeddings(table.column("embedding"))
    n = len(emb)
    finite = np.isfinite(emb)
    safe = np.where(finite, emb, 0.0)
    norms = np.linalg.norm(safe, axis=1)
    view = np.ascontiguousarray(emb).view(np.dtype((np.void, emb.dtype.itemsize * emb.shape[1]))).ravel()
    _, inverse, counts = np.unique(view, return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)
    pair_cos = np.full(n, np.nan)
    if n > 1:
        rows = rng.choice(n, size=min(n, sample_pairs), replace=False)
        other = (rows + rng.integers(1, n, len(rows))) % n
        unit = safe / np.maximum(norms, 1e-12)[:, None]
        pair_cos[rows] = (unit[rows] * unit[other]).sum(1)
    df = pd.DataFrame(
        {
            "item_idx": table.column("item_idx").to_numpy(),
            "item_id": table.column("item_id").to_pylist(),
            "norm": norms,
            "nonfinite": (~finite).sum(1),
            "dim": np.full(n, emb.shape[1] if n else embedding_dim(table.schema)),
            "duplicate_vector": counts[inverse] > 1 if n else np.zeros(0, bool),
            "pair_cosine": pair_cos,
        }
    )
    return df, manifest


def feature_suite(store: Path, name: str, th: dict[str, Any], seed: int) -> Suite:
    path = store / "features" / name
    df, manifest = feature_frame(path, int(th["pair_sample"]), seed)
    n_items = read_manifest(store / "items")["row_count"]
    counts = manifest.get("counts", {})
    accepted = counts.get("embedded", manifest["row_count"])
    tol = float(th["norm_tolerance"])
    exps = [
        gxe.ExpectTableRowCountToEqual(value=int(accepted)),
        gxe.ExpectColumnValuesToBeUnique(column="item_id"),
        gxe.ExpectColumnValuesToBeBetween(column="item_idx", min_value=0, max_value=n_items - 1),
        gxe.ExpectColumnValuesToBeInSet(column="dim", value_set=[int(manifest["dim"])]),
        gxe.ExpectColumnValuesToBeInSet(column="nonfinite", value_set=[0]),
        gxe.ExpectColumnValuesToBeBetween(column="norm", min_value=float(th["min_norm"]), strict_min=True),
        gxe.ExpectColumnValuesToBeInSet(
            column="duplicate_vector", value_set=[False], mostly=1.0 - float(th["max_duplicate_share"])
        ),
        gxe.ExpectColumnMeanToBeBetween(column="pair_cosine", max_value=float(th["max_mean_pair_cosine"])),
    ]
    if manifest.get("normalized"):
        exps.append(gxe.ExpectColumnValuesToBeBetween(column="norm", min_value=1 - tol, max_value=1 + tol))
    return (
        df,
        exps,
        {
            "id_column": "item_id",
            "encoder_id": manifest.get("encoder_id"),
            "weights": manifest.get("weights"),
            "random_weights": manifest.get("random_weights"),
        },
    )


def graph_suite(path: Path, th: dict[str, Any]) -> Suite:
    manifest = read_manifest(path)
    t = read_table(path)
    k = int(manifest["k"])
    df = t.to_pandas()
    per_item = df.groupby("item_idx").size().rename("neighbors").reset_index()
    df["self_loop"] = df["item_idx"] == df["neighbor_idx"]
    df["finite"] = np.isfinite(df["similarity"].to_numpy())
    exps_edges = [
        gxe.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]),
    ]
    if not manifest.get("self_loops"):
        exps_edges.append(gxe.ExpectColumnValuesToBeInSet(column="self_loop", value_set=[False]))
    # Neighbours per row are checked on a per-item frame joined into the edge frame.
    df = df.merge(per_item, on="item_idx", how="left")
    exps_edges.append(gxe.ExpectColumnValuesToBeInSet(column="neighbors", value_set=[k]))
    df["edge"] = df["item_idx"].astype(str) + "->" + df["neighbor_idx"].astype(str)
    return df, exps_edges, {"id_column": "edge", "k": k}
