"""Paired significance tests between models' per-user metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from evaluation.significance import bootstrap_ci, compare_models, holm, paired_test


def test_paired_test_matches_scipy_and_detects_a_real_difference() -> None:
    rng = np.random.default_rng(0)
    b = rng.random(400)
    a = b + 0.05 + rng.normal(0, 0.05, 400)
    r = paired_test(a, b, n_boot=500)
    assert r["p_ttest"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert r["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a - b, zero_method="zsplit").pvalue)
    assert r["diff"] == pytest.approx((a - b).mean()) and r["ci_low"] < r["diff"] < r["ci_high"]
    assert r["ci_low"] > 0 and r["p_wilcoxon"] < 1e-6


def test_identical_models_are_not_different() -> None:
    a = np.array([0.0, 0.5, 1.0, 0.25])
    r = paired_test(a, a.copy())
    assert r["diff"] == 0 and r["p_ttest"] == 1.0 and r["p_wilcoxon"] == 1.0


def test_bootstrap_ci_is_bounded_and_covers_the_mean() -> None:
    diff = np.random.default_rng(1).normal(0.1, 1.0, 5000)
    lo, hi = bootstrap_ci(diff, n_boot=300, max_cells=10_000)  # forces many small batches
    assert lo < diff.mean() < hi and hi - lo < 0.2


def test_holm_adjustment() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_compare_models_matches_users_by_id() -> None:
    users = np.arange(50)
    rng = np.random.default_rng(2)
    m1 = {"recall@20": rng.random(50)}
    shuffled = rng.permutation(50)
    m2 = {"recall@20": m1["recall@20"][shuffled]}  # same values, users listed in another order
    out = compare_models({"x": (users, m1), "y": (users[shuffled], m2)}, ["recall@20"], n_boot=100)
    (row,) = out["pairs"]
    assert row["a"] == "x" and row["b"] == "y" and row["users"] == 50 and row["diff"] == 0.0
    with pytest.raises(ValueError, match="ndcg@5"):
        compare_models({"x": (users, m1), "y": (users, m1)}, ["ndcg@5"])
