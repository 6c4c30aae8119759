"""Model zoo part 2 (CM3, LIRDRec, modality alignment, SIGE): the distinctive pieces.

Calibrated uniformity vs the standard one, slerp / spherical Bezier on the sphere, the
DCT round trip, MMD of identical samples, anchor-based InfoNCE, LIRDRec's decay schedule
and weight copying, the co-occurrence graph, the modulus perturbation, and that every
model trains, resumes its schedule from a checkpoint and scores from the full graph.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F
from toy_data import toy_data

from training.blocks.dct import dct_ortho, idct_ortho
from training.blocks.dilated_attention import DilatedConvAttention, _conv
from training.blocks.fusion import sample_mix, slerp, spherical_bezier
from training.blocks.losses import (
    alignment,
    anchor_info_nce,
    calibrated_uniformity,
    gaussian_mmd,
    info_nce,
    uniformity,
)
from training.blocks.semantic_graphs import cooccurrence_topk, similarity_values
from training.data import TrainData
from training.loop import LocalContext, TrainConfig, train
from training.models import build_model
from training.models.lirdrec import decayed_weight
from training.models.sige import modulus_perturbation

ZOO2 = ["cm3", "lirdrec", "modality_alignment", "sige"]


def _toy(n_users: int = 40, n_items: int = 30, seed: int = 0, n_features: int = 2) -> TrainData:
    names = [("image", 16), ("text", 12), ("text_llm", 10)][:n_features]
    return toy_data(n_users, n_items, seed, n_pairs=500, features=names, modalities=True)


def _pdist_uniformity(x: torch.Tensor, t: float, sim: torch.Tensor | None = None) -> torch.Tensor:
    """The references' form: torch.pdist pairs, exp().mean().log()."""
    d = torch.pdist(x, p=2).pow(2)
    if sim is not None:
        i, j = torch.triu_indices(len(x), len(x), 1)
        d = d - 2 + 2 * sim[i, j]
    return d.mul(-t).exp().mean().log()


# --- CM3: calibrated uniformity -------------------------------------------------------


def test_uniformity_matches_the_pdist_form() -> None:
    x = F.normalize(torch.randn(50, 8, dtype=torch.float64), dim=1)
    torch.testing.assert_close(uniformity(x, 2.0), _pdist_uniformity(x, 2.0))
    sim = (x @ x.T).clamp(0.0, 0.8)
    torch.testing.assert_close(calibrated_uniformity(x, sim, 2.0), _pdist_uniformity(x, 2.0, sim))


def test_calibrated_uniformity_equals_standard_when_similarities_are_zero() -> None:
    """s_ij = 0 everywhere: the same loss up to the constant 2t, so the same gradients;
    s_ij = 1 everywhere: exactly the standard loss."""
    t = 2.0
    x1 = F.normalize(torch.randn(40, 6, dtype=torch.float64), dim=1).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    zeros = torch.zeros(40, 40, dtype=torch.float64)
    cal, std = calibrated_uniformity(x1, zeros, t), uniformity(x2, t)
    torch.testing.assert_close(cal - 2 * t, std)
    cal.backward()
    std.backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    ones = torch.ones(40, 40, dtype=torch.float64)
    torch.testing.assert_close(calibrated_uniformity(x2.detach(), ones, t), std.detach())


def test_calibration_weakens_repulsion_between_similar_items() -> None:
    """Two items: the pair's gradient pushes them apart less when their content is similar."""
    x = F.normalize(torch.tensor([[1.0, 0.2], [0.8, 0.6], [-1.0, 0.1]], dtype=torch.float64), dim=1)
    grads = []
    for s01 in (0.0, 0.9):
        xi = x.clone().requires_grad_()
        sim = torch.zeros(3, 3, dtype=torch.float64)
        sim[0, 1] = sim[1, 0] = s01
        calibrated_uniformity(xi, sim).backward()
        grads.append(xi.grad[0] @ (x[0] - x[1]))  # component along the 0 -> 1 separation
    assert grads[1] > grads[0]  # descent moves 0 away from 1 less when s_01 is high


def test_uniformity_has_finite_gradient_with_duplicate_rows() -> None:
    x = F.normalize(torch.randn(5, 4), dim=1)
    x = torch.cat([x, x[:2]]).requires_grad_()  # a user twice in a batch
    uniformity(x).backward()
    assert torch.isfinite(x.grad).all()


def test_alignment() -> None:
    x, y = torch.randn(7, 3), torch.randn(7, 3)
    torch.testing.assert_close(alignment(x, y), ((x - y) ** 2).sum(1).mean())


# --- CM3: spherical fusion ------------------------------------------------------------


def test_slerp_stays_on_the_unit_sphere_and_hits_its_ends() -> None:
    a, b = torch.randn(100, 16, dtype=torch.float64), torch.randn(100, 16, dtype=torch.float64)
    t = torch.rand(100, dtype=torch.float64)
    out = slerp(a, b, t)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(100, dtype=torch.float64))
    torch.testing.assert_close(slerp(a, b, 0.0), F.normalize(a, dim=1))
    torch.testing.assert_close(slerp(a, b, 1.0), F.normalize(b, dim=1))
    # Constant angular speed: the angle to a is t times the angle between a and b.
    an, bn = F.normalize(a, dim=1), F.normalize(b, dim=1)
    theta = torch.acos((an * bn).sum(1))
    torch.testing.assert_close(torch.acos((an * out).sum(1).clamp(-1, 1)), t * theta, rtol=1e-5, atol=1e-5)


def test_slerp_matches_the_reference_formula() -> None:
    """CM3's code: sin(p th)/sin th * txt + sin((1-p) th)/sin th * img = slerp(img, txt, p)."""
    img, txt = F.normalize(torch.randn(20, 8), dim=1), F.normalize(torch.randn(20, 8), dim=1)
    p = torch.rand(20)
    th = torch.acos((img * txt).sum(1))
    ref = (torch.sin(p * th) / torch.sin(th))[:, None] * txt + (torch.sin((1 - p) * th) / torch.sin(th))[
        :, None
    ] * img
    torch.testing.assert_close(slerp(img, txt, p), ref, rtol=1e-4, atol=1e-5)


def test_spherical_bezier_reduces_to_slerp_for_two_and_stays_on_sphere_for_more() -> None:
    pts = [torch.randn(30, 8, dtype=torch.float64) for _ in range(4)]
    t = torch.rand(30, dtype=torch.float64)
    torch.testing.assert_close(spherical_bezier(pts[:2], t), slerp(pts[0], pts[1], t))
    for n in (3, 4):
        out = spherical_bezier(pts[:n], t)
        torch.testing.assert_close(out.norm(dim=1), torch.ones(30, dtype=torch.float64))
        torch.testing.assert_close(spherical_bezier(pts[:n], 0.0), F.normalize(pts[0], dim=1))
        torch.testing.assert_close(spherical_bezier(pts[:n], 1.0), F.normalize(pts[n - 1], dim=1))
    torch.testing.assert_close(spherical_bezier(pts[:1], t), F.normalize(pts[0], dim=1))


def test_mixing_parameter_is_beta_distributed() -> None:
    torch.manual_seed(0)
    t = sample_mix(20000, 0.5)
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    assert abs(float(t.mean()) - 0.5) < 0.01
    assert abs(float(t.var()) - 0.125) < 0.01  # Beta(a, a): 1 / (4 (2a + 1))


# --- LIRDRec: DCT channel and weight copying ------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7, 8, 384])
def test_dct_matches_scipy_and_is_invertible(n: int) -> None:
    x = torch.randn(5, n, dtype=torch.float64)
    y = dct_ortho(x)
    np.testing.assert_allclose(y.numpy(), scipy.fft.dct(x.numpy(), type=2, norm="ortho", axis=-1), atol=1e-10)
    torch.testing.assert_close(idct_ortho(y), x)
    torch.testing.assert_close(y.norm(dim=1), x.norm(dim=1))  # orthonormal: norms kept


def test_decay_schedule_follows_the_reference() -> None:
    w1, base = 0.9, 0.9
    expected = []
    for epoch in range(1, 6):  # reference: update_weights(w1, w2, epoch) with w2 = 1 - w1
        d = w1 * base**epoch
        w1 = d / (d + (1 - w1))
        expected.append(w1)
    got, w = [], 0.9
    for epoch in range(1, 6):
        w = decayed_weight(w, epoch, base)
        got.append(w)
    np.testing.assert_allclose(got, expected)
    assert all(a > b for a, b in zip(got, got[1:], strict=False))


def test_lirdrec_copies_the_last_training_attention_and_evaluation_does_not() -> None:
    data = _toy()
    torch.manual_seed(0)
    model = build_model("lirdrec", data, {})
    model.train()
    model.pre_epoch(np.random.default_rng(0))
    users, items = torch.from_numpy(data.train.users[:64]), torch.from_numpy(data.train.items[:64])
    model(users, items, items.flip(0)).backward()
    trained = model.fusion.last_att.clone()
    model.eval()
    with torch.no_grad():
        model.user_pref.add_(1.0)  # evaluation with other weights must not touch the copy
        model.embeddings()
    torch.testing.assert_close(model.fusion.last_att, trained)
    w1 = float(model.fusion.w1)
    model.pre_epoch(np.random.default_rng(1))
    torch.testing.assert_close(model.fusion.theta.detach(), trained)
    assert float(model.fusion.w1) == pytest.approx(decayed_weight(w1, 2, 0.9))
    torch.testing.assert_close(model.fusion.last_att.sum(1), torch.ones(data.n_users))


def test_lirdrec_items_come_from_features_only() -> None:
    model = build_model("lirdrec", _toy(), {})
    assert not any(p.shape[0] == model.n_items for p in model.parameters())


# --- modality alignment: MMD and dilated attention ------------------------------------


def test_mmd_is_zero_for_identical_samples_and_positive_otherwise() -> None:
    x = torch.randn(64, 8, dtype=torch.float64)
    assert float(gaussian_mmd(x, x, 1.0)) == pytest.approx(0.0, abs=1e-12)
    assert float(gaussian_mmd(x, x[torch.randperm(64)], 1.5)) == pytest.approx(0.0, abs=1e-12)
    assert float(gaussian_mmd(x, x + 2.0, 1.0)) > 0.01


def test_mmd_matches_the_broadcast_form() -> None:
    x, y = torch.randn(20, 4, dtype=torch.float64), torch.randn(25, 4, dtype=torch.float64)

    def k(a: torch.Tensor, b: torch.Tensor, s: float) -> torch.Tensor:
        return torch.exp(-((a[:, None] - b[None]) ** 2).sum(2) / (2 * s**2))

    expected = k(x, x, 1.5).mean() + k(y, y, 1.5).mean() - 2 * k(x, y, 1.5).mean()
    torch.testing.assert_close(gaussian_mmd(x, y, 1.5), expected)


def test_dilated_attention_on_one_position_equals_the_padded_convolution() -> None:
    """The single-position fast path equals the real dilated convolution over zero padding."""
    torch.manual_seed(0)
    block = DilatedConvAttention(8, 8)
    x = torch.randn(10, 8, 1)
    for branch in block.branches:
        conv = branch.conv
        torch.testing.assert_close(_conv(conv, x), conv(x))  # conv(x): padded, dilated
    out = block(x[..., 0])
    assert out.shape == (10, 8) and torch.isfinite(out).all()
    torch.testing.assert_close(block(x)[..., 0], out)


# --- SIGE -----------------------------------------------------------------------------


def test_anchor_info_nce_reduces_to_info_nce_for_one_view() -> None:
    a, v = torch.randn(16, 8), torch.randn(16, 8)
    torch.testing.assert_close(anchor_info_nce(a, [v], 0.2), info_nce(a, v, 0.2))


def test_anchor_info_nce_by_hand() -> None:
    a, v1, v2 = torch.randn(6, 4), torch.randn(6, 4), torch.randn(6, 4)
    an, n1, n2 = (F.normalize(t, dim=1) for t in (a, v1, v2))
    tau = 0.5
    total = 0.0
    for i in range(6):
        den = torch.logsumexp(torch.cat([an[i] @ n1.T, an[i] @ n2.T]) / tau, 0)
        total += (den - an[i] @ n1[i] / tau) + (den - an[i] @ n2[i] / tau)
    torch.testing.assert_close(anchor_info_nce(a, [v1, v2], tau), total / 12)


def test_modulus_perturbation_scales_with_each_embedding() -> None:
    torch.manual_seed(0)
    h = torch.randn(50, 8) * torch.linspace(0.01, 10, 50)[:, None]
    noise = modulus_perturbation(h, 0.1)
    torch.testing.assert_close(noise.norm(dim=1), 0.1 * h.norm(dim=1))
    assert ((noise * h) >= 0).all()  # same orthant as the embedding


def test_cooccurrence_topk_equals_the_dense_count() -> None:
    rng = np.random.default_rng(3)
    users, items = rng.integers(0, 20, 120), rng.integers(0, 15, 120)
    rows, cols, vals = cooccurrence_topk(users, items, 20, 15, k=3, chunk=4)
    r = np.zeros((20, 15))
    r[users, items] = 1
    c = r.T @ r
    np.fill_diagonal(c, 0)
    for i in range(15):
        got = cols[rows == i]
        order = np.lexsort((np.arange(15), -c[i]))
        want = [j for j in order if c[i, j] > 0][:3]
        assert list(got) == want
        np.testing.assert_allclose(vals[rows == i], c[i, want])


def test_similarity_graph_values_are_symmetrically_normalised() -> None:
    rows, cols = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0])
    sims = np.array([1.0, 0.5, 1.0, 0.5], np.float32)
    deg = np.array([1.5, 1.5])
    np.testing.assert_allclose(
        similarity_values(rows, cols, sims, 2), sims / np.sqrt(deg[rows] * deg[cols]), rtol=1e-6
    )


# --- every model ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ZOO2)
@pytest.mark.parametrize("n_features", [1, 3])
def test_zoo2_models_train_and_score(name: str, n_features: int) -> None:
    data = _toy(n_features=n_features)
    ctx = LocalContext()
    summary = train(TrainConfig(model=name, hparams={}, epochs=2, batch_size=64, report_every=100), data, ctx)
    assert summary["epochs_run"] == 2
    assert all(math.isfinite(r["loss"]) for r in ctx.final_state["history"])
    model = build_model(name, data, {})
    model.load_state_dict(ctx.final_state["model_state"])
    model.eval()
    with torch.no_grad():
        u1, i1 = model.embeddings()
        u2, i2 = model.embeddings()
    assert u1.shape[0] == data.n_users and i1.shape[0] == data.n_items
    torch.testing.assert_close(u1 @ i1.T, u2 @ i2.T)  # evaluation is deterministic (no mixing / noise)


def test_cm3_scores_from_the_current_weights_not_a_training_cache() -> None:
    data = _toy()
    torch.manual_seed(0)
    model = build_model("cm3", data, {})
    users, items = torch.from_numpy(data.train.users[:64]), torch.from_numpy(data.train.items[:64])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    loss = model(users, items, items.flip(0))
    opt.zero_grad()
    loss.backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        u, i = model.embeddings()
        expected_u, expected_i, _ = model.propagate(0.5)
    torch.testing.assert_close(u, expected_u)
    torch.testing.assert_close(i, expected_i)


def test_lirdrec_schedule_survives_a_checkpoint(tmp_path) -> None:
    """A run resumed from a checkpoint reaches the same weights and w1 as an undisturbed one."""
    data = _toy()
    cfg = TrainConfig(
        model="lirdrec", hparams={}, epochs=4, batch_size=64, report_every=1, checkpoint_every=2
    )
    full = LocalContext()
    train(cfg, data, full)
    first = LocalContext(checkpoint_path=tmp_path / "ckpt.pt")
    train(TrainConfig(**{**cfg.__dict__, "epochs": 2}), data, first)
    resumed = LocalContext(checkpoint_path=tmp_path / "ckpt.pt")
    train(cfg, data, resumed)
    a, b = full.final_state["history"], resumed.final_state["history"]
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-5)


@pytest.mark.parametrize("name", ZOO2)
def test_constant_tensors_are_visible_to_move_to_device(name: str) -> None:
    """``training.loop.move_to_device`` moves plain tensor attributes of every submodule;
    a tensor hidden in a list or tuple attribute would stay on the CPU."""
    model = build_model(name, _toy(), {})
    for module in model.modules():
        for key, value in vars(module).items():
            if isinstance(value, list | tuple) and not key.startswith("_"):
                assert not any(isinstance(v, torch.Tensor) for v in value), f"{type(module).__name__}.{key}"


@pytest.mark.slow
def test_zoo2_through_the_train_and_evaluate_stages(tiny_store, tmp_path, ray_session) -> None:
    """Adding the names to train.models is all it takes; Ray Train (2 workers, DDP) runs
    the models with buffers, BatchNorm and a per-epoch schedule."""
    from pipelines.layout import Layout
    from pipelines.stages import evaluate as evaluate_stage
    from pipelines.stages import train as train_stage

    root, config, _ = tiny_store
    local = config.updated({"train": {"models": ZOO2, "backend": "local", "common": {"epochs": 2}}})
    layout = Layout(store=root / "store", models=tmp_path / "models", reports=tmp_path / "reports")
    summary = train_stage.run(local, layout)
    assert set(summary) == set(ZOO2)
    metrics = evaluate_stage.run(local, layout)
    for name in ZOO2:
        assert 0 <= metrics[name]["test"]["recall@20"] <= 1
    ray_models = ["lirdrec", "modality_alignment"]
    ray = local.updated({"train": {"models": ray_models, "backend": "ray", "workers": 2}})
    ray_layout = Layout(store=root / "store", models=tmp_path / "ray_models", reports=tmp_path / "ray_rep")
    summary = train_stage.run(ray, ray_layout)
    assert set(summary) == set(ray_models)
