"""One suite per store table: the frame GX sees and the expectations over it.

Thresholds come from ``params.yaml`` (``validate``). Each builder returns a ``Suite``:
the pandas frame (table columns plus derived scalar columns), built-in GX expectations
each tagged with a short ``check`` name, and the columns that identify a failing row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

from features.schemas import SPLITS
from features.store import read_manifest, read_table
from validation.vectors import FeatureVectors, cosines, duplicate_flags, load_vectors, sample_pairs


@dataclass
class Suite:
    frame: pd.DataFrame
    expectations: list[Any]
    id_columns: list[str]
    notes: dict[str, Any] = field(default_factory=dict)


def expect(check: str, cls: type, sample: list[Any] | None = None, **kwargs: Any) -> Any:
    """A built-in GX expectation tagged with our check name (and, for table-level ones, a sample)."""
    meta: dict[str, Any] = {"check": check}
    if sample is not None:
        meta["sample"] = sample
    return cls(**kwargs, meta=meta)


def _int_ids(s: pd.Series) -> np.ndarray:
    return s.fillna(-1).to_numpy().astype(np.int64)


def interactions_suite(store: Path, th: dict[str, Any]) -> Suite:
    n_users = read_manifest(store / "users")["row_count"]
    n_items = read_manifest(store / "items")["row_count"]
    df = read_table(store / "interactions", columns=["user_idx", "item_idx", "split"]).to_pandas()
    u, i = _int_ids(df["user_idx"]), _int_ids(df["item_idx"])
    split = df["split"].to_numpy()
    key = (u + 1) * (n_items + 2) + (i + 1)
    pairs = pd.DataFrame({"key": key, "split": split})
    df["duplicate_in_split"] = pairs.duplicated(keep=False).to_numpy()
    splits_per_pair = pairs.drop_duplicates().groupby("key").size()
    df["splits_of_pair"] = splits_per_pair.reindex(key).to_numpy()
    is_train = split == "train"
    heldout = ~is_train
    # Held-out rows only (train rows are None = missing, so GX's `mostly` is a share of held-out rows).
    user_seen = np.isin(u, np.unique(u[is_train]))
    item_seen = np.isin(i, np.unique(i[is_train]))
    df["user_in_train"] = pd.Series(np.where(heldout, user_seen, None), dtype=object)
    df["item_in_train"] = pd.Series(np.where(heldout, item_seen, None), dtype=object)
    cold_u, cold_i = heldout & ~user_seen, heldout & ~item_seen
    n_held = int(heldout.sum())
    exps = [
        expect("has_rows", gxe.ExpectTableRowCountToBeBetween, min_value=1, sample=[f"{len(df)} rows"]),
        expect("user_idx_present", gxe.ExpectColumnValuesToNotBeNull, column="user_idx"),
        expect("item_idx_present", gxe.ExpectColumnValuesToNotBeNull, column="item_idx"),
        expect(
            "user_idx_in_range",
            gxe.ExpectColumnValuesToBeBetween,
            column="user_idx",
            min_value=0,
            max_value=n_users - 1,
        ),
        expect(
            "item_idx_in_range",
            gxe.ExpectColumnValuesToBeBetween,
            column="item_idx",
            min_value=0,
            max_value=n_items - 1,
        ),
        expect("split_valid", gxe.ExpectColumnValuesToBeInSet, column="split", value_set=list(SPLITS)),
        expect(
            "no_duplicate_pair_in_split",
            gxe.ExpectColumnValuesToBeInSet,
            column="duplicate_in_split",
            value_set=[False],
        ),
        expect(
            "no_pair_across_splits", gxe.ExpectColumnValuesToBeInSet, column="splits_of_pair", value_set=[1]
        ),
        expect(
            "heldout_users_in_train",
            gxe.ExpectColumnValuesToBeInSet,
            column="user_in_train",
            value_set=[True],
            mostly=1.0 - float(th["max_cold_user_share"]),
        ),
        expect(
            "heldout_items_in_train",
            gxe.ExpectColumnValuesToBeInSet,
            column="item_in_train",
            value_set=[True],
            mostly=1.0 - float(th["max_cold_item_share"]),
        ),
    ]
    notes = {
        "heldout_rows": n_held,
        "cold_user_rows": int(cold_u.sum()),
        "cold_users": int(len(np.unique(u[cold_u]))),
        "cold_item_rows": int(cold_i.sum()),
        "cold_items": int(len(np.unique(i[cold_i]))),
        "cold_item_share": round(int(cold_i.sum()) / n_held, 6) if n_held else 0.0,
    }
    return Suite(df, exps, ["user_idx", "item_idx", "split"], notes)


def items_suite(store: Path, th: dict[str, Any]) -> Suite:
    df = read_table(store / "items").to_pandas()
    text = (df["title"].fillna("") + df["description"].fillna("")).str.strip()
    df["has_text"] = text.str.len() > 0
    df["image_exists"] = df["image_path"].map(lambda p: bool(p) and Path(p).is_file())
    exps = [
        expect("has_rows", gxe.ExpectTableRowCountToBeBetween, min_value=1, sample=[f"{len(df)} rows"]),
        expect("unique_item_id", gxe.ExpectColumnValuesToBeUnique, column="item_id"),
        expect("unique_item_idx", gxe.ExpectColumnValuesToBeUnique, column="item_idx"),
        # Unique and within [0, n) means the dense index has no gaps.
        expect(
            "item_idx_dense",
            gxe.ExpectColumnValuesToBeBetween,
            column="item_idx",
            min_value=0,
            max_value=max(0, len(df) - 1),
        ),
        expect(
            "text_share",
            gxe.ExpectColumnValuesToBeInSet,
            column="has_text",
            value_set=[True],
            mostly=float(th["min_text_share"]),
        ),
        expect(
            "image_share",
            gxe.ExpectColumnValuesToBeInSet,
            column="image_exists",
            value_set=[True],
            mostly=float(th["min_image_share"]),
        ),
    ]
    notes = {
        "text_share": round(float(df["has_text"].mean()), 6) if len(df) else 0.0,
        "image_share": round(float(df["image_exists"].mean()), 6) if len(df) else 0.0,
    }
    return Suite(df, exps, ["item_id"], notes)


Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]


def feature_frame(fv: FeatureVectors, sample_pairs_n: int, seed: int) -> tuple[pd.DataFrame, Pairs]:
    """Scalar columns per vector: norm, non-finite count, duplicate flag, sampled pair cosine.

    Also returns the sampled pairs (rows, others, cosines) so a failure can name them.
    """
    n = len(fv)
    rows, other = sample_pairs(n, sample_pairs_n, seed)
    cos = cosines(fv, rows, fv, other)
    pair_cos = np.full(n, np.nan, dtype=np.float32)
    pair_cos[rows] = cos
    df = pd.DataFrame(
        {
            "item_idx": fv.item_idx,
            "item_id": fv.item_id,
            "norm": fv.norms,
            "nonfinite": fv.nonfinite,
            "dim": np.full(n, fv.dim),
            "duplicate_vector": duplicate_flags(fv.emb),
            "pair_cosine": pair_cos,
        }
    )
    return df, (rows, other, cos)


def _rejected_idx(store: Path, name: str, manifest: dict[str, Any]) -> tuple[int, set[int]]:
    """Rows the encoder rejected, from the feature's rejects table (or its manifest counts)."""
    rej = store / "features" / "_rejects" / name
    if (rej / "_manifest.json").exists():
        t = read_table(rej, columns=["item_idx"])
        return t.num_rows, set(t.column("item_idx").drop_null().to_pylist())
    return int(manifest.get("counts", {}).get("rejected", 0)), set()


def feature_suite(
    store: Path, name: str, th: dict[str, Any], seed: int, vectors: FeatureVectors | None = None
) -> Suite:
    """Suite of ``store/features/<name>``; pass ``vectors`` when the table is already loaded."""
    fv = vectors if vectors is not None else load_vectors(store / "features" / name)
    manifest = fv.manifest
    df, (rows, other, cos) = feature_frame(fv, int(th["pair_sample"]), seed)
    items = read_table(store / "items", columns=["item_idx", "item_id"])
    n_items = items.num_rows
    id_by_idx = pd.Series(
        items.column("item_id").to_pandas().to_numpy(), index=items.column("item_idx").to_numpy()
    )
    id_by_idx = id_by_idx[~id_by_idx.index.duplicated()]
    idx = df["item_idx"].to_numpy()
    df["id_matches_items"] = id_by_idx.reindex(idx).to_numpy() == df["item_id"].to_numpy()
    n_rejected, rejected = _rejected_idx(store, name, manifest)
    accepted = n_items - n_rejected
    sample_k = int(th.get("sample_size", 5))
    if len(df) < accepted:
        lost = sorted(set(range(n_items)) - set(idx.tolist()) - rejected)[:sample_k]
        rows_sample = [f"missing {id_by_idx.get(i)}" for i in lost]
    else:
        dup = df.loc[df["item_id"].duplicated(), "item_id"].head(sample_k).tolist()
        rows_sample = [f"extra {x}" for x in dup] or [f"{len(df)} rows, {accepted} accepted"]
    ids = df["item_id"].to_numpy()
    pair_sample = [f"{ids[rows[j]]}~{ids[other[j]]} cos {cos[j]:.4f}" for j in np.argsort(-cos)[:sample_k]]
    tol = float(th["norm_tolerance"])
    dim = int(manifest.get("dim", df["dim"].iloc[0] if len(df) else 0))
    exps = [
        expect(
            "rows_match_accepted",
            gxe.ExpectTableRowCountToEqual,
            value=int(accepted),
            sample=rows_sample,
        ),
        expect("unique_item_id", gxe.ExpectColumnValuesToBeUnique, column="item_id"),
        expect("unique_item_idx", gxe.ExpectColumnValuesToBeUnique, column="item_idx"),
        expect(
            "item_idx_in_range",
            gxe.ExpectColumnValuesToBeBetween,
            column="item_idx",
            min_value=0,
            max_value=max(0, n_items - 1),
        ),
        expect(
            "item_id_matches_items",
            gxe.ExpectColumnValuesToBeInSet,
            column="id_matches_items",
            value_set=[True],
        ),
        expect("dim_matches_manifest", gxe.ExpectColumnValuesToBeInSet, column="dim", value_set=[dim]),
        expect("no_nonfinite", gxe.ExpectColumnValuesToBeInSet, column="nonfinite", value_set=[0]),
        expect(
            "no_zero_vectors",
            gxe.ExpectColumnValuesToBeBetween,
            column="norm",
            min_value=float(th["min_norm"]),
            strict_min=True,
        ),
        expect(
            "duplicate_share",
            gxe.ExpectColumnValuesToBeInSet,
            column="duplicate_vector",
            value_set=[False],
            mostly=1.0 - float(th["max_duplicate_share"]),
        ),
    ]
    if len(rows):
        exps.append(
            expect(
                "mean_pair_cosine",
                gxe.ExpectColumnMeanToBeBetween,
                column="pair_cosine",
                max_value=float(th["max_mean_pair_cosine"]),
                sample=pair_sample,
            )
        )
    if manifest.get("normalized"):
        exps.append(
            expect(
                "unit_norm",
                gxe.ExpectColumnValuesToBeBetween,
                column="norm",
                min_value=1 - tol,
                max_value=1 + tol,
            )
        )
    notes = {
        "encoder_id": manifest.get("encoder_id"),
        "weights": manifest.get("weights"),
        "random_weights": manifest.get("random_weights"),
        "dim": dim,
        "rejected": n_rejected,
        "duplicate_share": round(float(df["duplicate_vector"].mean()), 6) if len(df) else 0.0,
        "mean_pair_cosine": round(float(cos.mean()), 6) if len(rows) else None,
    }
    return Suite(df, exps, ["item_id"], notes)


def graph_suite(path: Path, th: dict[str, Any], n_items: int) -> Suite:
    manifest = read_manifest(path)
    k = int(manifest["k"])
    df = read_table(path).to_pandas()
    item, nb = df["item_idx"].to_numpy(), df["neighbor_idx"].to_numpy()
    df["neighbors"] = df.groupby("item_idx")["item_idx"].transform("size").to_numpy()
    df["self_loop"] = item == nb
    df["duplicate_edge"] = df.duplicated(["item_idx", "neighbor_idx"], keep=False).to_numpy()
    df["finite"] = np.isfinite(df["similarity"].to_numpy())
    allow_self = th.get("allow_self_loops")
    allow_self = bool(manifest.get("self_loops")) if allow_self is None else bool(allow_self)
    sample_k = int(th.get("sample_size", 5))
    counts = df.groupby("item_idx").size()
    missing = sorted(set(range(n_items)) - set(counts.index.tolist()))[:sample_k]
    bad = counts[counts != k].index.tolist()[:sample_k]
    rows_sample = [f"item_idx {i}: no edges" for i in missing] + [
        f"item_idx {i}: {counts[i]} edges" for i in bad
    ]
    sim_tol = float(th["similarity_tolerance"])
    exps = [
        expect(
            "rows_are_items_times_k",
            gxe.ExpectTableRowCountToEqual,
            value=n_items * k,
            sample=rows_sample or [f"{len(df)} rows"],
        ),
        expect("k_neighbors_per_item", gxe.ExpectColumnValuesToBeInSet, column="neighbors", value_set=[k]),
        expect(
            "item_idx_in_range",
            gxe.ExpectColumnValuesToBeBetween,
            column="item_idx",
            min_value=0,
            max_value=max(0, n_items - 1),
        ),
        expect(
            "neighbor_idx_in_range",
            gxe.ExpectColumnValuesToBeBetween,
            column="neighbor_idx",
            min_value=0,
            max_value=max(0, n_items - 1),
        ),
        expect(
            "rank_in_range", gxe.ExpectColumnValuesToBeBetween, column="rank", min_value=0, max_value=k - 1
        ),
        expect("unique_edges", gxe.ExpectColumnValuesToBeInSet, column="duplicate_edge", value_set=[False]),
        expect("finite_weights", gxe.ExpectColumnValuesToBeInSet, column="finite", value_set=[True]),
    ]
    if manifest.get("similarity", "cosine") == "cosine":
        exps.append(
            expect(
                "similarity_in_range",
                gxe.ExpectColumnValuesToBeBetween,
                column="similarity",
                min_value=-1 - sim_tol,
                max_value=1 + sim_tol,
            )
        )
    if not allow_self:
        exps.append(
            expect("no_self_loops", gxe.ExpectColumnValuesToBeInSet, column="self_loop", value_set=[False])
        )
    notes = {
        "k": k,
        "self_loops_allowed": allow_self,
        "self_loops": int(df["self_loop"].sum()),
        "encoder_id": (manifest.get("source_manifest") or {}).get("encoder_id"),
    }
    return Suite(df, exps, ["item_idx", "neighbor_idx"], notes)
