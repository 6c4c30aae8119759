"""Models: sparse propagation equals dense, kNN graph shape, pruning bias, BPR gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.data import Interactions, TrainData
from training.graph import knn_chunked
from training.loop import LocalContext, TrainConfig, train
from training.models import build_model, model_names
from training.models.base import ModelError, bpr_loss
from training.models.freedom import prune_edges
from training.sparse import bipartite_adjacency, propagate_mean, sym_norm_values


def _toy(n_users: int = 30, n_items: int = 25, seed: int = 0) -> TrainData:
    rng = np.random.default_rng(seed)
    pairs = sorted({(int(u), int(i)) for u, i in rng.integers(0, [n_users, n_items], (300, 2))})
    a = np.array(pairs)
    split = rng.random(len(a))

    def part(mask):
        return Interactions(users=a[mask, 0], items=a[mask, 1])

    data = TrainData(
        n_users, n_items, part(split < 0.8), part((split >= 0.8) & (split < 0.9)), part(split >= 0.9)
    )
    data.features = {
        "text": rng.normal(size=(n_items, 6)).astype(np.float32),
        "image": rng.normal(size=(n_items, 4)).astype(np.float32),
    }
    return data


def test_sparse_propagation_equals_dense() -> None:
    users, items = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2])
    adj = bipartite_adjacency(users, items, 3, 3)
    a = np.zeros((6, 6))
    a[users, items + 3] = a[items + 3, users] = 1
    d = a.sum(1)
    dense = a / np.sqrt(np.outer(d, d))
    x = torch.randn(6, 4, dtype=torch.float32)
    expected = (x + torch.from_numpy(dense).float() @ x + torch.from_numpy(dense @ dense).float() @ x) / 3
    torch.testing.assert_close(propagate_mean(adj, x, 2), expected, rtol=1e-5, atol=1e-6)


def test_knn_graph_has_k_per_row_and_best_neighbours() -> None:
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    rows, cols, sims = knn_chunked(x, 5, chunk_size=7, self_loops=False)
    assert np.bincount(rows, minlength=50).tolist() == [5] * 50
    assert not (rows == cols).any()
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    full = u @ u.T
    np.fill_diagonal(full, -np.inf)
    np.testing.assert_array_equal(np.sort(cols.reshape(50, 5), 1), np.sort(np.argsort(-full, 1)[:, :5], 1))
    r2, c2, _ = knn_chunked(x, 5, self_loops=True)
    assert (c2.reshape(50, 5)[:, 0] == np.arange(50)).all()  # an item is its own nearest neighbour


def test_pruning_keeps_fraction_and_favours_low_degree_edges() -> None:
    # User 0 has 50 edges (high degree), users 1..50 one edge each to item 0..49.
    users = np.concatenate([np.zeros(50, int), np.arange(1, 51)])
    items = np.concatenate([np.arange(50), np.arange(50)])
    w = sym_norm_values(users, items, 51, 50)
    kept_hi = 0
    for s in range(200):
        keep = prune_edges(users, items, w, 20, np.random.default_rng(s))
        assert len(keep) == 20 and len(set(keep.tolist())) == 20
        kept_hi += int((users[keep] == 0).sum())
    # Low-degree edges weigh sqrt(50)/... more: the hub's share must be well under half.
    assert kept_hi / (200 * 20) < 0.3


def test_bpr_loss_and_gradient_by_hand() -> None:
    pos = torch.tensor([2.0], requires_grad=True)
    neg = torch.tensor([0.5], requires_grad=True)
    loss = bpr_loss(pos, neg)
    loss.backward()
    sig = 1 / (1 + np.exp(-1.5))
    assert loss.item() == pytest.approx(-np.log(sig))
    assert pos.grad.item() == pytest.approx(-(1 - sig))
    assert neg.grad.item() == pytest.approx(1 - sig)


@pytest.mark.parametrize("name", ["bpr", "lightgcn", "freedom"])
def test_models_train_and_loss_decreases(name: str) -> None:
    data = _toy()
    hp = {"feature_weights": {"text": 0.9, "image": 0.1}} if name == "freedom" else {}
    cfg = TrainConfig(model=name, hparams=hp, epochs=15, batch_size=64, lr=0.01, patience=100, seed=1)
    ctx = LocalContext()
    train(cfg, data, ctx)
    losses = [r["loss"] for r in ctx.reports]
    assert losses[-1] < losses[0]
    model = build_model(name, data, hp)
    model.load_state_dict(ctx.final_state["model_state"])
    u, i = model.embeddings()
    assert u.shape[0] == data.n_users and i.shape[0] == data.n_items


def test_registry_rejects_unknown_names_and_hparams() -> None:
    assert {"bpr", "lightgcn", "freedom"} <= set(model_names())
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        build_model("nope", _toy(), {})
    with pytest.raises(ModelError, match="unknown hyper-parameter"):
        build_model("bpr", _toy(), {"embeding_dim": 3})


def test_same_seed_same_metrics() -> None:
    data = _toy()
    runs = []
    for _ in range(2):
        ctx = LocalContext()
        train(TrainConfig(model="lightgcn", hparams={}, epochs=5, batch_size=64, seed=3), data, ctx)
        runs.append(ctx.final_state["best_valid"])
    assert runs[0] == runs[1]
