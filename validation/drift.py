"""Drift between two snapshots of one feature table (previous vs current).

Items are matched by ``item_id`` (the raw id; ``item_idx`` may be reassigned when the
catalog changes). For items whose ``content_hash`` did not change the embedding must not
change either (cosine ~ 1): anything else means the encoder or its preprocessing moved
while its id stayed the same. Distribution shift of norms and of sampled pair cosines
is measured as a 1-D earth mover's distance, and the catalog churn as shares of items
added, removed and changed. Each figure has a warn and a fail level (``validate.drift``,
handed in as the feature's ``pipelines.config.Thresholds``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.store import MANIFEST
from pipelines.config import DriftParams, Level, Thresholds
from validation.vectors import FeatureVectors, cosines, load_vectors, sample_pairs, wasserstein

NO_PREVIOUS = "no previous snapshot"

# metric -> True when a higher value is worse (churn, shift); False when lower is worse.
METRICS: dict[str, bool] = {
    "min_unchanged_cosine": False,
    "norm_shift": True,
    "pair_cosine_shift": True,
    "added_share": True,
    "removed_share": True,
    "changed_share": True,
}
VECTOR_METRICS = ("min_unchanged_cosine", "norm_shift", "pair_cosine_shift")


@dataclass
class DriftCheck:
    metric: str
    value: float | None
    warn: float | None
    fail: float | None
    status: str  # ok | warn | fail | skipped
    sample: list[Any] = field(default_factory=list)


@dataclass
class DriftOutcome:
    table: str
    previous: str
    current: str
    status: str  # ok | warn | fail | skipped
    reason: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    checks: list[DriftCheck] = field(default_factory=list)

    @property
    def failures(self) -> list[DriftCheck]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[DriftCheck]:
        return [c for c in self.checks if c.status == "warn"]

    def shares(self) -> dict[str, float | None]:
        return {c.metric: c.value for c in self.checks if c.metric.endswith("_share")}


def _level(value: float | None, warn: float | None, fail: float | None, higher_is_worse: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "skipped"

    def past(limit: float | None) -> bool:
        return limit is not None and (value > limit if higher_is_worse else value < limit)

    return "fail" if past(fail) else "warn" if past(warn) else "ok"


def _check(
    metric: str, value: float | None, levels: DriftParams, sample: list[Any] | None = None
) -> DriftCheck:
    level: Level = getattr(levels, metric)
    status = _level(value, level.warn, level.fail, METRICS[metric])
    return DriftCheck(metric, value, level.warn, level.fail, status, sample or [])


def _unique_ids(fv: FeatureVectors) -> FeatureVectors:
    """Duplicate ids fail the feature suite; drift keeps the first row of each."""
    keep = ~fv.item_id.duplicated().to_numpy()
    if keep.all():
        return fv
    return FeatureVectors(
        fv.path,
        fv.manifest,
        fv.item_idx[keep],
        fv.item_id[keep].reset_index(drop=True),
        fv.content_hash[keep].reset_index(drop=True),
        fv.emb[keep],
        fv.nonfinite[keep],
        fv.norms[keep],
    )


def skipped(
    table: str, current: Path, reason: str = NO_PREVIOUS, previous: Path | None = None
) -> DriftOutcome:
    return DriftOutcome(table, str(previous or ""), str(current), "skipped", reason)


def drift(
    previous: Path,
    current: Path,
    th: Thresholds,
    *,
    seed: int = 0,
    table: str | None = None,
    current_vectors: FeatureVectors | None = None,
) -> DriftOutcome:
    """Compare two feature tables at the levels of ``th.drift`` (a null level is off).

    ``th.pair_sample`` pairs are sampled per snapshot, ``th.sample_size`` ids named per
    check. A missing previous table is not an error: the outcome is ``skipped`` with
    reason "no previous snapshot". Pass ``current_vectors`` when the current table is loaded.
    """
    table = table or str(current)
    if not (Path(previous) / MANIFEST).exists():
        return skipped(table, current, NO_PREVIOUS, previous)
    prev = _unique_ids(load_vectors(Path(previous)))
    cur = _unique_ids(current_vectors if current_vectors is not None else load_vectors(Path(current)))
    return compare(prev, cur, th, seed=seed, table=table)


def compare(
    prev: FeatureVectors, cur: FeatureVectors, th: Thresholds, *, seed: int = 0, table: str = ""
) -> DriftOutcome:
    """Drift of two loaded snapshots (ids unique)."""
    levels, sample_size = th.drift, th.sample_size
    ids_p, ids_c = prev.item_id, cur.item_id
    pos = pd.Index(ids_p).get_indexer(ids_c)  # row of each current item in previous, -1 if new
    common = pos >= 0
    same = np.zeros(len(ids_c), bool)
    same[common] = cur.content_hash.to_numpy()[common] == prev.content_hash.to_numpy()[pos[common]]
    n_common = int(common.sum())
    counts = {
        "previous": len(ids_p),
        "current": len(ids_c),
        "common": n_common,
        "unchanged": int(same.sum()),
        "changed": int((common & ~same).sum()),
        "added": int((~common).sum()),
        "removed": len(ids_p) - n_common,
    }
    in_current = np.zeros(len(ids_p), bool)
    in_current[pos[common]] = True
    checks = [
        _check(
            "added_share",
            counts["added"] / max(1, counts["current"]),
            levels,
            _head(ids_c, ~common, sample_size),
        ),
        _check(
            "removed_share",
            counts["removed"] / max(1, counts["previous"]),
            levels,
            _head(ids_p, ~in_current, sample_size),
        ),
        _check(
            "changed_share",
            counts["changed"] / max(1, n_common),
            levels,
            _head(ids_c, common & ~same, sample_size),
        ),
    ]
    m_prev, m_cur = prev.manifest, cur.manifest
    stats: dict[str, Any] = {
        "encoder_id": {"previous": m_prev.get("encoder_id"), "current": m_cur.get("encoder_id")}
    }
    reason = None
    if m_prev.get("encoder_id") != m_cur.get("encoder_id") or prev.dim != cur.dim:
        reason = (
            f"encoder changed ({m_prev.get('encoder_id')} dim {prev.dim} -> "
            f"{m_cur.get('encoder_id')} dim {cur.dim}): embeddings not comparable, vector drift skipped"
        )
        checks += [DriftCheck(m, None, None, None, "skipped") for m in VECTOR_METRICS]
    else:
        cur_rows = np.flatnonzero(same)
        cos_same = cosines(cur, cur_rows, prev, pos[cur_rows])
        low = [f"{ids_c.iat[cur_rows[j]]} cos {cos_same[j]:.5f}" for j in np.argsort(cos_same)[:sample_size]]
        min_cos = float(cos_same.min()) if len(cos_same) else None
        n_pairs = th.pair_sample
        rp, op = sample_pairs(len(prev), n_pairs, seed)
        rc, oc = sample_pairs(len(cur), n_pairs, seed)
        pc_p, pc_c = cosines(prev, rp, prev, op), cosines(cur, rc, cur, oc)
        norm_p, norm_c = prev.norms, cur.norms
        mean_p = float(norm_p.mean()) if len(norm_p) else 1.0
        norm_shift = wasserstein(norm_p, norm_c) / max(mean_p, 1e-12)
        checks += [
            _check("min_unchanged_cosine", min_cos, levels, low),
            _check("norm_shift", norm_shift, levels),
            _check("pair_cosine_shift", wasserstein(pc_p, pc_c), levels),
        ]
        fail_cos = levels.min_unchanged_cosine.fail
        stats |= {
            "unchanged_cosine": {
                "min": min_cos,
                "mean": float(cos_same.mean()) if len(cos_same) else None,
                "below_fail": int((cos_same < fail_cos).sum()) if fail_cos is not None else None,
            },
            "norm_mean": {"previous": _mean(norm_p), "current": _mean(norm_c)},
            "pair_cosine_mean": {"previous": _mean(pc_p), "current": _mean(pc_c)},
        }
    statuses = {c.status for c in checks}
    status = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "ok"
    return DriftOutcome(table, str(prev.path), str(cur.path), status, reason, counts, stats, checks)


def _head(ids: pd.Series, mask: np.ndarray, n: int) -> list[Any]:
    return ids[mask].head(n).tolist()


def _mean(a: np.ndarray) -> float | None:
    return float(a.mean()) if len(a) else None


def summary_lines(o: DriftOutcome, statuses: tuple[str, ...] = ("fail", "warn")) -> list[str]:
    """One line per drift check in ``statuses``, naming table, metric, level and sample."""
    lines = []
    for c in o.checks:
        if c.status in statuses:
            limit = c.fail if c.status == "fail" else c.warn
            side = "above" if METRICS[c.metric] else "below"
            lines.append(
                f"drift {o.table}: {c.metric} {c.value:.6g} {side} {c.status} level {limit}"
                f" (previous {o.previous}); sample: {c.sample}"
            )
    return lines
