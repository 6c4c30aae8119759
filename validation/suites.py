"""One suite per store table: the frame GX sees and the expectations over it.

Suites are handed explicit paths (or loaded data) and typed thresholds
(``pipelines.config.Thresholds``) by the validate stage; they know no store layout.
Each builder returns a ``Suite``: the pandas frame (table columns plus derived scalar
columns), built-in GX expectations each tagged with a short ``check`` name, and the
columns that identify a failing row. Facts only the manifest holds (how many items the
encoder rejected, whether its weights were random) are checked in Python and returned as
``Suite.checks`` (``ExpectationOutcome`` rows the validate stage adds to the table's GX
outcome), so they fail the gate in the same report even when the table has no rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

from features.schemas import SPLITS
from features.store import MANIFEST, read_manifest, read_table
from pipelines.config import Thresholds
from validation.gx_runner import ExpectationOutcome
from validation.vectors import FeatureVectors, cosines, duplicate_flags, sample_pairs


@dataclass
class Suite:
    frame: pd.DataFrame
    expectations: list[Any]
    id_columns: list[str]
    notes: dict[str, Any] = field(default_factory=dict)
    checks: list[ExpectationOutcome] = field(default_factory=list)  # non-GX checks (manifest facts)


def expect(check: str, cls: type, sample: list[Any] | None = None, **kwargs: Any) -> Any:
    """A built-in GX expectation tagged with our check name (and, for table-level ones, a sample)."""
    meta: dict[str, Any] = {"check": check}
    if sample is not None:
        meta["sample"] = sample
    return cls(**kwargs, meta=meta)


# ---- the expectations the suites share


def has_rows(df: pd.DataFrame) -> Any:
    return expect("has_rows", gxe.ExpectTableRowCountToBeBetween, min_value=1, sample=[f"{len(df)} rows"])


def unique(column: str) -> Any:
    return expect(f"unique_{column}", gxe.ExpectColumnValuesToBeUnique, column=column)


def present(column: str) -> Any:
    return expect(f"{column}_present", gxe.ExpectColumnValuesToNotBeNull, column=column)


def in_range(column: str, n: int, check: str | None = None) -> Any:
    """Values of ``column`` in ``[0, n)`` (a dense index over ``n`` rows)."""
    return between(check or f"{column}_in_range", column, 0, max(0, n - 1))


def between(check: str, column: str, low: float | None = None, high: float | None = None, **kw: Any) -> Any:
    bounds = {k: v for k, v in (("min_value", low), ("max_value", high)) if v is not None}
    return expect(check, gxe.ExpectColumnValuesToBeBetween, column=column, **bounds, **kw)


def in_set(check: str, column: str, values: list[Any], mostly: float | None = None) -> Any:
    kw = {} if mostly is None else {"mostly": mostly}
    return expect(check, gxe.ExpectColumnValuesToBeInSet, column=column, value_set=values, **kw)


def share_true(check: str, column: str, min_share: float) -> Any:
    """At least ``min_share`` of the (non-missing) values of ``column`` are True."""
    return in_set(check, column, [True], mostly=float(min_share))


def share(mask: pd.Series | np.ndarray) -> float:
    return round(float(np.mean(mask)), 6) if len(mask) else 0.0


# ---- the suites


def _int_ids(s: pd.Series) -> np.ndarray:
    return s.fillna(-1).to_numpy().astype(np.int64)


def interactions_suite(interactions: Path, n_users: int, n_items: int, th: Thresholds) -> Suite:
    """The interactions table: ids in range, valid splits, no duplicate pairs, few cold rows."""
    df = read_table(interactions, columns=["user_idx", "item_idx", "split"]).to_pandas()
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
        has_rows(df),
        present("user_idx"),
        present("item_idx"),
        in_range("user_idx", n_users),
        in_range("item_idx", n_items),
        in_set("split_valid", "split", list(SPLITS)),
        in_set("no_duplicate_pair_in_split", "duplicate_in_split", [False]),
        in_set("no_pair_across_splits", "splits_of_pair", [1]),
        share_true("heldout_users_in_train", "user_in_train", 1.0 - th.max_cold_user_share),
        share_true("heldout_items_in_train", "item_in_train", 1.0 - th.max_cold_item_share),
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


def items_suite(items: Path, th: Thresholds, modalities: set[str]) -> Suite:
    """The items table; text and image shares are checked only for the inputs some feature reads.

    ``modalities`` is ``Config.extract.modalities()`` (``text``, ``image``, ``item_id``).
    """
    df = read_table(items).to_pandas()
    text = (df["title"].fillna("") + df["description"].fillna("")).str.strip()
    df["has_text"] = text.str.len() > 0
    exps = [
        has_rows(df),
        unique("item_id"),
        unique("item_idx"),
        # Unique and within [0, n) means the dense index has no gaps.
        in_range("item_idx", len(df), check="item_idx_dense"),
    ]
    notes: dict[str, Any] = {"text_share": share(df["has_text"])}
    if "text" in modalities:
        exps.append(share_true("text_share", "has_text", th.min_text_share))
    if "image" in modalities:
        df["image_exists"] = df["image_path"].map(lambda p: bool(p) and Path(p).is_file())
        exps.append(share_true("image_share", "image_exists", th.min_image_share))
        notes["image_share"] = share(df["image_exists"])
    notes["checked_modalities"] = sorted(modalities & {"text", "image"})
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


def rejected_rows(rejects: Path | None, manifest: dict[str, Any]) -> tuple[int, set[int]]:
    """Rows the encoder rejected, from the feature's rejects table (or its manifest counts)."""
    if rejects is not None and (Path(rejects) / MANIFEST).exists():
        t = read_table(rejects, columns=["item_idx"])
        return t.num_rows, set(t.column("item_idx").drop_null().to_pylist())
    return int(manifest.get("counts", {}).get("rejected", 0)), set()


def reject_share(manifest: dict[str, Any], n_rejected: int, n_items: int) -> tuple[int, int, float]:
    """(rejected, items read, share): the manifest's extract counts, else the rejects table
    against the items table."""
    counts = manifest.get("counts") or {}
    if "items_read" in counts and "rejected" in counts:
        rejected, read = int(counts["rejected"]), int(counts["items_read"])
    else:
        rejected, read = n_rejected, n_items
    return rejected, read, (round(rejected / read, 6) if read else 0.0)


def manifest_checks(
    name: str, manifest: dict[str, Any], n_rejected: int, n_items: int, th: Thresholds
) -> list[ExpectationOutcome]:
    """The gate's checks of a feature table's manifest: reject share and random weights."""
    rejected, read, share_ = reject_share(manifest, n_rejected, n_items)
    limit = th.max_reject_share
    share_ok = share_ <= limit
    checks = [
        ExpectationOutcome(
            expectation="manifest counts.rejected / counts.items_read",
            column=None,
            kwargs={"max_reject_share": limit},
            success=share_ok,
            check="reject_share",
            observed=share_,
            sample=[]
            if share_ok
            else [
                f"features/{name}: {rejected} of {read} items rejected by the encoder, share {share_:.4g} "
                f"> limit {limit} (validate.max_reject_share; per feature: "
                f"validate.feature_overrides.{name}.max_reject_share); reasons in "
                f"store/features/_rejects/{name}"
            ],
        )
    ]
    random = bool(manifest.get("random_weights"))
    weights_ok = not random or th.allow_random_weights
    checks.append(
        ExpectationOutcome(
            expectation="manifest random_weights",
            column=None,
            kwargs={"allow_random_weights": th.allow_random_weights},
            success=weights_ok,
            check="random_weights",
            observed=random,
            sample=[]
            if weights_ok
            else [
                f"features/{name} was embedded with random encoder weights "
                f"({manifest.get('weights')}), not trained ones: supply the weights "
                f"(extract.features.{name}.pretrained / model) or, for a demo only, allow them "
                f"with validate.feature_overrides.{name}.allow_random_weights: true"
            ],
        )
    )
    return checks


def feature_suite(
    vectors: FeatureVectors,
    items: Path,
    rejects: Path | None,
    th: Thresholds,
    seed: int,
    name: str | None = None,
) -> Suite:
    """Suite of one loaded feature table against the items table at ``items``.

    ``rejects`` is the feature's rejects table (items the encoder refused); ``th`` the
    feature's own thresholds (``ValidateParams.for_feature``); ``name`` the feature (by
    default the manifest's table name), used in the manifest checks' messages.
    """
    fv = vectors
    manifest = fv.manifest
    df, (rows, other, cos) = feature_frame(fv, th.pair_sample, seed)
    item_ids = read_table(items, columns=["item_idx", "item_id"])
    n_items = item_ids.num_rows
    id_by_idx = pd.Series(
        item_ids.column("item_id").to_pandas().to_numpy(), index=item_ids.column("item_idx").to_numpy()
    )
    id_by_idx = id_by_idx[~id_by_idx.index.duplicated()]
    idx = df["item_idx"].to_numpy()
    df["id_matches_items"] = id_by_idx.reindex(idx).to_numpy() == df["item_id"].to_numpy()
    n_rejected, rejected = rejected_rows(rejects, manifest)
    accepted = n_items - n_rejected
    sample_k = th.sample_size
    if len(df) < accepted:
        lost = sorted(set(range(n_items)) - set(idx.tolist()) - rejected)[:sample_k]
        rows_sample = [f"missing {id_by_idx.get(i)}" for i in lost]
    else:
        dup = df.loc[df["item_id"].duplicated(), "item_id"].head(sample_k).tolist()
        rows_sample = [f"extra {x}" for x in dup] or [f"{len(df)} rows, {accepted} accepted"]
    ids = df["item_id"].to_numpy()
    pair_sample = [f"{ids[rows[j]]}~{ids[other[j]]} cos {cos[j]:.4f}" for j in np.argsort(-cos)[:sample_k]]
    tol = th.norm_tolerance
    dim = int(manifest.get("dim", df["dim"].iloc[0] if len(df) else 0))
    exps = [
        expect("rows_match_accepted", gxe.ExpectTableRowCountToEqual, value=accepted, sample=rows_sample),
        unique("item_id"),
        unique("item_idx"),
        in_range("item_idx", n_items),
        in_set("item_id_matches_items", "id_matches_items", [True]),
        in_set("dim_matches_manifest", "dim", [dim]),
        in_set("no_nonfinite", "nonfinite", [0]),
        between("no_zero_vectors", "norm", th.min_norm, strict_min=True),
        in_set("duplicate_share", "duplicate_vector", [False], mostly=1.0 - th.max_duplicate_share),
    ]
    if len(rows):
        exps.append(
            expect(
                "mean_pair_cosine",
                gxe.ExpectColumnMeanToBeBetween,
                column="pair_cosine",
                max_value=th.max_mean_pair_cosine,
                sample=pair_sample,
            )
        )
    if manifest.get("normalized"):
        exps.append(between("unit_norm", "norm", 1 - tol, 1 + tol))
    name = name or str(manifest.get("table"))
    checks = manifest_checks(name, manifest, n_rejected, n_items, th)
    notes = {
        "encoder_id": manifest.get("encoder_id"),
        "weights": manifest.get("weights"),
        "random_weights": manifest.get("random_weights"),
        "dim": dim,
        "rejected": n_rejected,
        "reject_share": reject_share(manifest, n_rejected, n_items)[2],
        "duplicate_share": share(df["duplicate_vector"]),
        "mean_pair_cosine": round(float(cos.mean()), 6) if len(rows) else None,
    }
    return Suite(df, exps, ["item_id"], notes, checks)


def graph_suite(path: Path, th: Thresholds, n_items: int) -> Suite:
    """The kNN edge table at ``path``: k edges per item of ``n_items``, valid ids and weights."""
    manifest = read_manifest(path)
    k = int(manifest["k"])
    df = read_table(path).to_pandas()
    item, nb = df["item_idx"].to_numpy(), df["neighbor_idx"].to_numpy()
    df["neighbors"] = df.groupby("item_idx")["item_idx"].transform("size").to_numpy()
    df["self_loop"] = item == nb
    df["duplicate_edge"] = df.duplicated(["item_idx", "neighbor_idx"], keep=False).to_numpy()
    df["finite"] = np.isfinite(df["similarity"].to_numpy())
    allow_self = th.allow_self_loops
    allow_self = bool(manifest.get("self_loops")) if allow_self is None else allow_self
    sample_k = th.sample_size
    counts = df.groupby("item_idx").size()
    missing = sorted(set(range(n_items)) - set(counts.index.tolist()))[:sample_k]
    bad = counts[counts != k].index.tolist()[:sample_k]
    rows_sample = [f"item_idx {i}: no edges" for i in missing] + [
        f"item_idx {i}: {counts[i]} edges" for i in bad
    ]
    sim_tol = th.similarity_tolerance
    exps = [
        expect(
            "rows_are_items_times_k",
            gxe.ExpectTableRowCountToEqual,
            value=n_items * k,
            sample=rows_sample or [f"{len(df)} rows"],
        ),
        in_set("k_neighbors_per_item", "neighbors", [k]),
        in_range("item_idx", n_items),
        in_range("neighbor_idx", n_items),
        in_range("rank", k),
        in_set("unique_edges", "duplicate_edge", [False]),
        in_set("finite_weights", "finite", [True]),
    ]
    if manifest.get("similarity", "cosine") == "cosine":
        exps.append(between("similarity_in_range", "similarity", -1 - sim_tol, 1 + sim_tol))
    if not allow_self:
        exps.append(in_set("no_self_loops", "self_loop", [False]))
    notes = {
        "k": k,
        "self_loops_allowed": allow_self,
        "self_loops": int(df["self_loop"].sum()),
        "encoder_id": (manifest.get("source_manifest") or {}).get("encoder_id"),
    }
    return Suite(df, exps, ["item_idx", "neighbor_idx"], notes)
