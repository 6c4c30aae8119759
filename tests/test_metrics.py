"""Full-ranking metrics on a hand-computed case, and chunking equals one dense pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluation.metrics import evaluate
from training.data import Interactions


def _pairs(rows: list[tuple[int, int]]) -> Interactions:
    a = np.array(rows, dtype=np.int64).reshape(-1, 2)
    return Interactions(users=a[:, 0], items=a[:, 1])


def test_hand_computed_case() -> None:
    # One user, 5 items; scores rank items 4,3,2,1,0. Item 4 is a train item (masked).
    user = torch.tensor([[1.0]])
    items = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    train = _pairs([(0, 4)])
    test = _pairs([(0, 3), (0, 1)])  # ranked list after masking: 3, 2, 1, 0
    m = evaluate(user, items, test, train, n_users=1, ks=(1, 3))
    assert m["recall@1"] == pytest.approx(0.5)
    assert m["precision@1"] == pytest.approx(1.0)
    assert m["recall@3"] == pytest.approx(1.0)
    assert m["precision@3"] == pytest.approx(2 / 3)
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / idcg)
    assert m["map@3"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert m["hit@1"] == 1.0


def test_chunked_equals_dense_reference() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items, d = 50, 40, 8
    ue, ie = torch.randn(n_users, d), torch.randn(n_items, d)
    train = _pairs(sorted({(int(u), int(i)) for u, i in rng.integers(0, [n_users, n_items], (300, 2))}))
    train_set = set(zip(train.users.tolist(), train.items.tolist(), strict=True))
    test = _pairs(
        sorted({(int(u), int(i)) for u, i in rng.integers(0, [n_users, n_items], (150, 2))} - train_set)
    )
    chunked = evaluate(ue, ie, test, train, n_users, ks=(5, 10), chunk_size=7)
    # Dense reference: the whole users x items matrix at once (fine at this size).
    scores = (ue @ ie.T).numpy()
    scores[train.users, train.items] = -np.inf
    truth: dict[int, set[int]] = {}
    for u, i in zip(test.users.tolist(), test.items.tolist(), strict=True):
        truth.setdefault(u, set()).add(i)
    recalls, ndcgs = [], []
    for u, t in truth.items():
        top = np.argsort(-scores[u], kind="stable")[:10]
        hits = [1.0 if i in t else 0.0 for i in top]
        recalls.append(sum(hits) / len(t))
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        ndcgs.append(dcg / sum(1 / math.log2(r + 2) for r in range(min(len(t), 10))))
    assert chunked["recall@10"] == pytest.approx(np.mean(recalls))
    assert chunked["ndcg@10"] == pytest.approx(np.mean(ndcgs))
    assert chunked["users"] == len(truth)
