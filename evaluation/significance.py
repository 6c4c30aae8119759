"""Paired significance tests between two models' per-user metrics.

Both models are evaluated on the same users, so the right test is paired: the
per-user differences carry the comparison. Reported: the mean difference with a
bootstrap confidence interval, the paired t-test and the Wilcoxon signed-rank test,
and (across every comparison in one report) Holm-adjusted p-values, since testing
several model pairs and metrics at once inflates false positives.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats


def bootstrap_ci(
    diff: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, max_cells: int = 2**22
) -> tuple[float, float]:
    """Percentile CI of the mean of ``diff``, resampling users; memory bounded by ``max_cells``."""
    n = len(diff)
    if n == 0 or n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, max_cells // n)
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        means[start : start + b] = diff[rng.integers(0, n, (b, n))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def paired_test(
    a: np.ndarray, b: np.ndarray, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict[str, float]:
    """Compare per-user values ``a`` and ``b`` (same users, same order)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired test needs aligned per-user arrays; got shapes {a.shape} and {b.shape}")
    diff = a - b
    n = len(diff)
    sd = float(diff.std(ddof=1)) if n > 1 else 0.0
    if n > 1 and sd > 0:
        p_t = float(stats.ttest_rel(a, b).pvalue)
    else:
        p_t = 1.0 if n == 0 or not diff.any() else 0.0
    p_w = float(stats.wilcoxon(diff, zero_method="zsplit").pvalue) if diff.any() else 1.0
    lo, hi = bootstrap_ci(diff, n_boot, alpha, seed)
    return {
        "users": n,
        "mean_a": float(a.mean()) if n else 0.0,
        "mean_b": float(b.mean()) if n else 0.0,
        "diff": float(diff.mean()) if n else 0.0,
        "ci_low": lo,
        "ci_high": hi,
        "effect_size": float(diff.mean() / sd) if sd > 0 else 0.0,  # Cohen's d_z
        "p_ttest": p_t,
        "p_wilcoxon": p_w,
        "a_better_users": int((diff > 0).sum()),
        "b_better_users": int((diff < 0).sum()),
    }


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def compare_models(
    per_user: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]],
    metrics: Sequence[str],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Every pair of models on every metric. ``per_user``: model -> (users, metric arrays).

    Users are matched by id, so the comparison holds even if two models' files list
    users in different orders; only users both models were evaluated on count.
    """
    rows: list[dict[str, Any]] = []
    for (name_a, (users_a, ma)), (name_b, (users_b, mb)) in itertools.combinations(per_user.items(), 2):
        common, ia, ib = np.intersect1d(users_a, users_b, return_indices=True)
        for metric in metrics:
            if metric not in ma or metric not in mb:
                raise ValueError(
                    f"significance metric {metric!r} not among the per-user metrics {sorted(ma)}"
                )
            test = paired_test(ma[metric][ia], mb[metric][ib], n_boot=n_boot, alpha=alpha, seed=seed)
            rows.append({"a": name_a, "b": name_b, "metric": metric, **test})
    for row, p in zip(rows, holm([r["p_wilcoxon"] for r in rows]), strict=True):
        row["p_wilcoxon_holm"] = p
        row["significant"] = bool(p < alpha)
    return {
        "alpha": alpha,
        "bootstrap": n_boot,
        "test": "paired Wilcoxon signed-rank, Holm-adjusted",
        "pairs": rows,
    }
