"""Models: sparse propagation equals dense, kNN graph shape and normalisation, pruning bias,
BPR/EmbLoss by hand, VBPR's item vector, LATTICE's sparse graphs equal the dense reference."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from toy_data import toy_data

from training.blocks.item_graph import knn_edges, learned_knn_edges
from training.data import Interactions, TrainData
from training.knn import knn_chunked
from training.loop import LocalContext, TrainConfig, train
from training.models import build_model, model_names
from training.models.base import ModelError, bpr_loss, emb_norm_reg
from training.models.freedom import prune_edges
from training.sparse import (
    bipartite_adjacency,
    bipartite_row_norm_self_loops,
    knn_adjacency,
    propagate_mean,
    sym_norm_values,
    transpose_csr,
    weighted_sym_norm,
)

ALL_MODELS = ["bpr", "lightgcn", "vbpr", "lattice", "freedom"]


def _toy(n_users: int = 30, n_items: int = 25, seed: int = 0) -> TrainData:
    return toy_data(n_users, n_items, seed, features=[("text", 6), ("image", 4)])


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


@pytest.mark.parametrize("name", ALL_MODELS)
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
    assert set(ALL_MODELS) <= set(model_names())
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


# --- dense references -------------------------------------------------------------------


def _dense(t: torch.Tensor) -> torch.Tensor:
    return t.to_dense() if t.layout != torch.strided else t


def _dense_lattice_norm(adj: torch.Tensor) -> torch.Tensor:
    """MMRec's ``compute_normalized_laplacian`` (dense)."""
    d = adj.sum(-1).pow(-0.5)
    d[torch.isinf(d)] = 0.0
    return torch.diag(d) @ adj @ torch.diag(d)


def _dense_knn(sim: torch.Tensor, k: int) -> torch.Tensor:
    """MMRec's ``build_knn_neighbourhood``: keep each row's top-k values in place."""
    val, ind = torch.topk(sim, k, dim=-1)
    return torch.zeros_like(sim).scatter_(-1, ind, val)


def _cos(x: torch.Tensor) -> torch.Tensor:
    xn = x / x.norm(dim=-1, keepdim=True)
    return xn @ xn.T


def test_row_normalised_propagation_equals_dense_with_gradient() -> None:
    users, items = np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 0, 2])
    adj = bipartite_row_norm_self_loops(users, items, 3, 3)
    a = np.eye(6)
    a[users, items + 3] = a[items + 3, users] = 1
    dense = torch.from_numpy(a / a.sum(1, keepdims=True)).float()
    torch.testing.assert_close(_dense(adj), dense)
    x = torch.randn(6, 4, requires_grad=True)
    out = propagate_mean(adj, x, 2, transpose_csr(adj))
    w = torch.randn(6, 4)
    (out * w).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    ((x2 + dense @ x2 + dense @ dense @ x2) / 3 * w).sum().backward()
    torch.testing.assert_close(out, (x + dense @ x + dense @ dense @ x) / 3)
    torch.testing.assert_close(x.grad, x2.grad)


def test_knn_adjacency_normalisation_is_freedoms() -> None:
    """Binary top-k (self included) with D^-1/2 A D^-1/2, D = row degree: every value is 1/k."""
    x = np.random.default_rng(1).normal(size=(40, 6)).astype(np.float32)
    rows, cols, _ = knn_chunked(x, 4, chunk_size=9, self_loops=True)
    dense = _dense(knn_adjacency(rows, cols, 40))
    a = torch.zeros(40, 40)
    a[rows, cols] = 1.0
    d = a.sum(1).pow(-0.5)
    torch.testing.assert_close(dense, d[:, None] * a * d[None, :])
    assert torch.allclose(dense[a > 0], torch.tensor(0.25))
    assert (a.sum(1) == 4).all()


def test_freedom_item_graph_is_weighted_sum_of_feature_graphs() -> None:
    data = _toy()
    model = build_model("freedom", data, {"feature_weights": {"text": 0.9, "image": 0.1}, "knn_k": 3})
    expected = torch.zeros(data.n_items, data.n_items)
    for name, w in (("text", 0.9), ("image", 0.1)):
        sim = _cos(torch.from_numpy(data.features[name]))
        _, ind = torch.topk(sim, 3, dim=-1)
        a = torch.zeros_like(sim).scatter_(-1, ind, 1.0)
        expected += w * a / 3
    torch.testing.assert_close(_dense(model.mm_adj), expected)


def test_stored_knn_graph_is_reused_only_when_it_fits() -> None:
    data = _toy()
    r, c, _ = knn_chunked(data.features["text"], 5)
    data.knn["text"] = (r, c)
    np.testing.assert_array_equal(knn_edges(data, "text", 5)[1], c)
    r3, c3 = knn_edges(data, "text", 3)  # another k: rebuilt, not silently reused
    assert np.bincount(r3, minlength=data.n_items).tolist() == [3] * data.n_items


def test_pruning_samples_proportionally_to_weights() -> None:
    """Keeping one edge is a single draw with probability w / sum(w) (seeded, 4 sigma)."""
    w = np.array([1.0, 2.0, 3.0, 4.0, 10.0], dtype=np.float32)
    users, items = np.zeros(5, int), np.arange(5)
    rng = np.random.default_rng(0)
    n = 20000
    counts = np.bincount([prune_edges(users, items, w, 1, rng)[0] for _ in range(n)], minlength=5)
    p = w / w.sum()
    assert (np.abs(counts / n - p) < 4 * np.sqrt(p * (1 - p) / n)).all()


def test_freedom_pre_epoch_keeps_requested_fraction() -> None:
    data = _toy()
    model = build_model("freedom", data, {"dropout": 0.75})
    model.pre_epoch(np.random.default_rng(0))
    keep = int(len(data.train) * 0.25)
    assert model.adj.to_sparse_coo().coalesce().values().numel() == 2 * keep
    # Renormalised on the kept edges: D^-1/2 A D^-1/2 of the pruned bipartite graph.
    dense = _dense(model.adj)
    a = (dense > 0).float()
    d = a.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0
    torch.testing.assert_close(dense, d[:, None] * a * d[None, :])


def test_mmrec_bpr_loss_and_emb_loss_by_hand() -> None:
    pos, neg = torch.tensor([3.0, -1.0]), torch.tensor([1.0, 1.0])
    expected = -(np.log(1e-10 + 1 / (1 + np.exp(-2.0))) + np.log(1e-10 + 1 / (1 + np.exp(2.0)))) / 2
    assert bpr_loss(pos, neg, gamma=1e-10).item() == pytest.approx(expected, rel=1e-6)
    # EmbLoss: Frobenius norms, not squared, summed over matrices, / batch size.
    u = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    i = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert emb_norm_reg(u, i).item() == pytest.approx((5.0 + 1.0) / 2)


def test_bpr_model_loss_and_gradient_by_hand() -> None:
    data = _toy()
    model = build_model("bpr", data, {"embedding_dim": 2, "reg_weight": 0.5})
    with torch.no_grad():
        model.user_emb.weight[0] = torch.tensor([1.0, 2.0])
        model.item_emb.weight[1] = torch.tensor([1.0, 0.0])
        model.item_emb.weight[2] = torch.tensor([0.0, 1.0])
    loss = model(torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    loss.backward()
    s = 1 / (1 + np.exp(1.0))  # sigmoid(pos - neg) with pos - neg = 1 - 2 = -1
    norms = np.sqrt(5) + 1 + 1
    assert loss.item() == pytest.approx(-np.log(1e-10 + s) + 0.5 * norms, rel=1e-6)
    g = -(1 - s)  # d loss / d (pos - neg)
    u, p, n = np.array([1.0, 2.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0])
    np.testing.assert_allclose(
        model.user_emb.weight.grad[0].numpy(), g * (p - n) + 0.5 * u / np.sqrt(5), rtol=1e-5
    )
    np.testing.assert_allclose(model.item_emb.weight.grad[1].numpy(), g * u + 0.5 * p, rtol=1e-5)
    np.testing.assert_allclose(model.item_emb.weight.grad[2].numpy(), -g * u + 0.5 * n, rtol=1e-5)


def test_vbpr_item_vector_is_id_plus_projected_features() -> None:
    data = _toy()
    model = build_model("vbpr", data, {"embedding_dim": 3})
    users, items = model.embeddings()
    assert users.shape == (data.n_users, 6) and items.shape == (data.n_items, 6)
    raw = np.concatenate([data.features["image"], data.features["text"]], axis=1)  # name order
    lin = model.item_linear
    expected = raw @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()
    np.testing.assert_allclose(items[:, 3:].detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(items[:, :3], model.item_emb)
    scores = model.score(torch.tensor([0, 4]))
    torch.testing.assert_close(scores, users[[0, 4]] @ items.T)


def test_lattice_learned_graph_equals_dense_reference_with_gradient() -> None:
    torch.manual_seed(0)
    n, k = 12, 3
    feats = [torch.randn(n, 5, requires_grad=True), torch.randn(n, 4, requires_grad=True)]
    w = torch.softmax(torch.tensor([0.3, 0.7], requires_grad=True), 0)
    x = torch.randn(n, 2)
    # Sparse: per-feature top-k edges with differentiable values, mixed, then normalised.
    rows, cols, vals = [], [], []
    for m, f in enumerate(feats):
        r, c, v = learned_knn_edges(f, k, chunk_size=5)
        rows.append(r), cols.append(c), vals.append(w[m] * v)
    r, c = torch.cat(rows), torch.cat(cols)
    v = weighted_sym_norm(r, c, torch.cat(vals), n)
    out = torch.sparse.mm(torch.sparse_coo_tensor(torch.stack([r, c]), v, (n, n), check_invariants=False), x)
    grads = torch.autograd.grad(out.pow(2).sum(), feats)
    # Dense, as MMRec computes it.
    dfeats = [f.detach().clone().requires_grad_() for f in feats]
    dense = _dense_lattice_norm(sum(w[m].detach() * _dense_knn(_cos(f), k) for m, f in enumerate(dfeats)))
    dout = dense @ x
    dgrads = torch.autograd.grad(dout.pow(2).sum(), dfeats)
    torch.testing.assert_close(out, dout, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, dgrads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_lattice_item_graph_mixes_learned_and_frozen_as_the_reference() -> None:
    data = _toy()
    k, lam = 4, 0.9
    model = build_model("lattice", data, {"knn_k": k, "lambda_coeff": lam})
    with torch.no_grad():
        adj = _dense(model.item_graph().coalesce())
        w = torch.softmax(model.modal_weight, 0)
        learned = sum(
            w[m] * _dense_knn(_cos(trs(table)), k)
            for m, (table, trs) in enumerate(zip(model.feats, model.trs, strict=True))
        )
        frozen = sum(
            w[m] * _dense_lattice_norm(_dense_knn(_cos(torch.from_numpy(data.features[name])), k))
            for m, name in enumerate(sorted(data.features))
        )
        expected = (1 - lam) * _dense_lattice_norm(learned) + lam * frozen
    torch.testing.assert_close(adj, expected, rtol=1e-5, atol=1e-6)


def test_lattice_graph_gets_gradient_on_first_batch_of_epoch_only() -> None:
    data = _toy()
    model = build_model("lattice", data, {})
    u, p, n = torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])
    model.pre_epoch(np.random.default_rng(0))
    model(u, p, n).backward()
    assert model.trs[0].weight.grad is not None and model.modal_weight.grad is not None
    model.zero_grad(set_to_none=True)
    model(u, p, n).backward()
    assert model.trs[0].weight.grad is None and model.item_emb.weight.grad is not None


@pytest.mark.parametrize("name", ALL_MODELS)
def test_score_ranks_with_embeddings(name: str) -> None:
    data = _toy()
    hp = {"feature_weights": {"text": 0.9, "image": 0.1}} if name == "freedom" else {}
    model = build_model(name, data, hp).eval()
    users = torch.tensor([0, 3, 7])
    with torch.no_grad():
        u, i = model.embeddings()
    assert model.score(users).shape == (3, data.n_items)
    torch.testing.assert_close(model.score(users), u[users] @ i.T)


def test_negatives_come_from_train_items_and_never_a_users_own() -> None:
    from training.sampling import NegativeSampler, epoch_shard

    # Item 9 never appears in train: it must never be drawn. User 0 owns items 0..6.
    users = np.array([0] * 7 + [1, 1, 2, 3, 4, 5])
    items = np.array(list(range(7)) + [7, 8, 0, 1, 2, 3])
    train_pairs = Interactions(users=users, items=items)
    sampler = NegativeSampler(train_pairs, n_items=10)
    rng = np.random.default_rng(0)
    neg = sampler.sample(np.zeros(4000, dtype=np.int64), rng)
    assert set(neg.tolist()) == {7, 8}  # user 0: train items minus its own
    counts = np.bincount(neg, minlength=10)[[7, 8]]
    assert abs(counts[0] / 4000 - 0.5) < 4 * np.sqrt(0.25 / 4000)  # uniform among candidates
    u, p, n = epoch_shard(train_pairs, sampler, seed=1, epoch=0, rank=0, world_size=1)
    assert len(u) == len(train_pairs)  # one negative per positive
    own = set(zip(users.tolist(), items.tolist(), strict=True))
    assert not any((a, b) in own for a, b in zip(u.tolist(), n.tolist(), strict=True))
    assert not (n == 9).any()


def test_touches_most_counts_distinct_rows() -> None:
    from training.models.base import touches_most

    assert touches_most(torch.tensor([0, 1, 1]), torch.tensor([2, 2]), 6)  # 3 of 6 distinct rows
    assert not touches_most(torch.tensor([0, 0, 0]), torch.tensor([1, 1, 1]), 6)  # 2 of 6
    assert not touches_most(torch.tensor([0]), torch.tensor([1]), 6)  # too few draws to cover half


# sha256 (first 32 hex digits) of every model's state dict (key, shape, bytes, in order)
# built on ``_toy()`` with default hyper-parameters after ``torch.manual_seed(0)``: the
# values before the shared set-up moved to ``Recommender`` helpers and ``training.blocks``.
# A change here means the same seed no longer gives the same weights (checkpoints and
# parity runs would not reproduce): keep parameter creation order and init calls.
STATE_DICT_SHA = {
    "bpr": "ac2af479a3d1e93f1651e6d37b0de1a6",
    "cm3": "d63232237a181823970777004aed38da",
    "freedom": "6a2a5a7d8733c78b3e5e55e3d86294fa",
    "lattice": "e3dcd924defea50e8e7c83a83cfaab0f",
    "lightgcn": "78ebc7ada2716d8416d4bcc4d74a5553",
    "lirdrec": "c43033d6291adc051432bc4b549ef7ab",
    "modality_alignment": "80dc98a5790b64995e4e13dc8675b330",
    "sasrec": "245d327f1a538a9dc5101b603a045057",
    "sasrec_content": "0475230b8ad237cc4fd792dfa6bc1f55",
    "sige": "212a0bf7c6959af2bbcda0f1b7136c91",
    "vbpr": "26c07c52d69603e8ef4593285c7a6458",
}


def test_same_seed_gives_the_recorded_initial_weights() -> None:
    assert sorted(STATE_DICT_SHA) == model_names()
    for name, expected in STATE_DICT_SHA.items():
        torch.manual_seed(0)
        state = build_model(name, _toy(), {}).state_dict()
        h = hashlib.sha256()
        for key, t in state.items():
            h.update(key.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        assert h.hexdigest()[:32] == expected, f"{name}: initial state dict changed ({list(state)})"
