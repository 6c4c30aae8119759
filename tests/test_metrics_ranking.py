"""The chunked ranking pass equals a dense users x items reference on a small case:
every metric at every K, coverage, popularity buckets and few-interaction users."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluation.metrics import chunk_rows, popularity_buckets, rank
from training.data import Interactions


def _pairs(pairs: set[tuple[int, int]]) -> Interactions:
    a = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    return Interactions(users=a[:, 0], items=a[:, 1])


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(3)
    n_users, n_items, d = 60, 45, 8
    ue, ie = torch.randn(n_users, d), torch.randn(n_items, d)
    # Skewed popularity, so buckets differ; some users with very few train items.
    pop = rng.zipf(1.6, n_items).astype(float)
    p = pop / pop.sum()
    train = {(u, int(i)) for u in range(n_users) for i in rng.choice(n_items, rng.integers(1, 12), p=p)}
    test = {(int(u), int(i)) for u, i in rng.integers(0, [n_users, n_items], (200, 2))} - train
    return ue, ie, _pairs(train), _pairs(test), n_users, n_items


def _dense_reference(ue, ie, train, test, n_users, n_items, ks):
    scores = (ue @ ie.T).numpy().astype(np.float64)
    scores[train.users, train.items] = -np.inf
    truth: dict[int, set[int]] = {}
    for u, i in zip(test.users.tolist(), test.items.tolist(), strict=True):
        truth.setdefault(u, set()).add(i)
    rows: dict[str, list[float]] = {}
    tops: dict[int, np.ndarray] = {}
    for u in sorted(truth):
        t = truth[u]
        top = np.argsort(-scores[u], kind="stable")[: max(ks)]
        tops[u] = top
        for k in ks:
            hits = [1.0 if i in t else 0.0 for i in top[:k]]
            n_hit = sum(hits)
            ideal = min(len(t), k)
            dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
            idcg = sum(1 / math.log2(r + 2) for r in range(ideal))
            ap = sum(hits[r] * sum(hits[: r + 1]) / (r + 1) for r in range(k)) / ideal
            for name, v in (
                ("recall", n_hit / len(t)),
                ("precision", n_hit / k),
                ("hit", float(n_hit > 0)),
                ("ndcg", dcg / idcg),
                ("map", ap),
            ):
                rows.setdefault(f"{name}@{k}", []).append(v)
    return {k: float(np.mean(v)) for k, v in rows.items()}, truth, tops


@pytest.mark.parametrize(("chunk_size", "max_mb"), [(7, None), (2048, 45 * 4 * 5 / 2**20)])
def test_all_metrics_equal_dense_reference(case, chunk_size, max_mb) -> None:
    ue, ie, train, test, n_users, n_items = case
    ks = (1, 5, 10, 20)
    res = rank(ue, ie, test, train, n_users, ks, chunk_size, max_chunk_mb=max_mb)
    ref, truth, _ = _dense_reference(ue, ie, train, test, n_users, n_items, ks)
    assert res.means["users"] == len(truth)
    for name, value in ref.items():
        assert res.means[name] == pytest.approx(value, abs=1e-12), name
    assert list(res.users) == sorted(truth)


def test_memory_cap_limits_users_per_chunk() -> None:
    # 1M items x 64 users x 4 bytes = 256 MB: the cap, not chunk_size, decides.
    assert chunk_rows(1_000_000, 2048, 256) == 67
    assert chunk_rows(100, 2048, 256) == 2048
    assert chunk_rows(10**9, 2048, 1) == 1


def test_coverage_buckets_and_few_users_equal_reference(case) -> None:
    ue, ie, train, test, n_users, n_items = case
    ks = (5, 10)
    res = rank(ue, ie, test, train, n_users, ks, 11, popularity_split=[0.2, 0.5], few_train_max=3)
    _, truth, tops = _dense_reference(ue, ie, train, test, n_users, n_items, ks)
    counts = np.bincount(train.items, minlength=n_items)
    order = sorted(range(n_items), key=lambda i: (-counts[i], i))
    head, mid = set(order[:9]), set(order[9:22])  # round(0.2 * 45) = 9, round(0.5 * 45) = 22
    bucket_of = {i: 0 if i in head else 1 if i in mid else 2 for i in range(n_items)}
    for k in ks:
        recommended = {int(i) for u in tops for i in tops[u][:k]}
        assert res.coverage[f"coverage@{k}"] == pytest.approx(len(recommended) / n_items)
        for b, name in enumerate(["0-20%", "20-48%", "48-100%"]):
            pairs = [(u, i) for u, t in truth.items() for i in t if bucket_of[i] == b]
            hit = sum(1 for u, i in pairs if i in set(tops[u][:k].tolist()))
            slots = sum(1 for u in tops for i in tops[u][:k] if bucket_of[int(i)] == b)
            row = res.by_popularity[name]
            assert row["truth_pairs"] == len(pairs)
            assert row[f"recall@{k}"] == pytest.approx(hit / len(pairs) if pairs else 0.0)
            assert row[f"share@{k}"] == pytest.approx(slots / (len(tops) * k))
    train_count = np.bincount(train.users, minlength=n_users)
    few = [u for u in sorted(truth) if train_count[u] <= 3]
    assert res.few_interactions["users"] == len(few) > 0
    mask = np.isin(res.users, few)
    assert res.few_interactions["recall@10"] == pytest.approx(res.per_user["recall@10"][mask].mean())


def test_popularity_buckets_split_the_catalog() -> None:
    from evaluation.metrics import Csr

    train = _pairs({(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (0, 2)})
    bucket, names = popularity_buckets(Csr(train, 3), 10, [0.2, 0.5])
    assert names == ["0-20%", "20-50%", "50-100%"]
    assert bucket[:2].tolist() == [0, 0] and bucket[2] == 1 and np.bincount(bucket).tolist() == [2, 3, 5]
