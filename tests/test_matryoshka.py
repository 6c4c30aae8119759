"""Matryoshka embeddings: the per-prefix loss by hand, prefixes of BPR / LightGCN / FREEDOM
are exact smaller models, params checked in params.yaml, and evaluate / export report and
publish the prefix sizes (tiny random data, a few epochs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from toy_data import toy_data

from features.store import read_manifest
from pipelines.config import Config, ParamsError, to_raw
from pipelines.layout import Layout
from training.blocks.matryoshka import check_sizes, prefix_bpr_loss, prefix_scores, prefix_sizes
from training.data import TrainData
from training.loop import LocalContext, TrainConfig, train
from training.models import build_model
from training.models.base import ModelError, bpr_loss

MODELS = ["bpr", "lightgcn", "freedom"]


def toy(n_users: int = 30, n_items: int = 25, seed: int = 0) -> TrainData:
    return toy_data(n_users, n_items, seed, features=[("text", 6)])


def hp_of(name: str, **extra: object) -> dict[str, object]:
    return {**({"feature_weights": {"text": 1.0}} if name == "freedom" else {}), **extra}


# ------------------------------------------------------------------------------ the loss


def test_prefix_loss_is_the_mean_of_bpr_over_prefixes_by_hand() -> None:
    g = torch.Generator().manual_seed(0)
    u, p, n = (torch.randn(7, 16, generator=g, requires_grad=True) for _ in range(3))
    sizes = [4, 8, 16]
    by_hand = sum(
        bpr_loss((u[:, :d] * p[:, :d]).sum(-1), (u[:, :d] * n[:, :d]).sum(-1), gamma=1e-10) for d in sizes
    ) / len(sizes)
    got = prefix_bpr_loss(u, p, n, sizes, gamma=1e-10)
    assert got.item() == pytest.approx(by_hand.item(), rel=1e-5)
    (gu,) = torch.autograd.grad(got, u, retain_graph=True)
    (hu,) = torch.autograd.grad(by_hand, u)
    assert torch.allclose(gu, hu, atol=1e-6)
    # rescale: each prefix's score difference x dim / d inside its term.
    scaled = sum(
        bpr_loss((16 / d) * (u[:, :d] * p[:, :d]).sum(-1), (16 / d) * (u[:, :d] * n[:, :d]).sum(-1))
        for d in sizes
    ) / len(sizes)
    assert prefix_bpr_loss(u, p, n, sizes, rescale=True).item() == pytest.approx(scaled.item(), rel=1e-5)
    # One size (the full width) is the ordinary loss; logsigmoid form when gamma is 0.
    full = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
    assert prefix_bpr_loss(u, p, n, [16]).item() == pytest.approx(full.item(), rel=1e-5)
    assert prefix_scores(u, p, [4]).squeeze(1).detach().allclose((u[:, :4] * p[:, :4]).sum(-1).detach())


def test_prefix_sizes_are_checked_and_the_full_size_added() -> None:
    assert prefix_sizes([], 64) == [] and prefix_sizes(None, 64) == []
    assert prefix_sizes([8, 16, 32], 64) == [8, 16, 32, 64]
    assert prefix_sizes([8, 16, 32, 64], 64) == [8, 16, 32, 64]
    bad_values = (([16, 8], "increasing"), ([0, 8], "positive"), ([8, 8], "increasing"), (["8"], "integer"))
    for bad, why in bad_values:
        assert why in (check_sizes(bad) or ""), bad
    with pytest.raises(ValueError, match="exceed embedding_dim 64"):
        prefix_sizes([8, 128], 64)


# -------------------------------------------------------------------------------- models


@pytest.mark.parametrize("name", MODELS)
def test_models_take_matryoshka_and_off_is_the_ordinary_model(name: str) -> None:
    data = toy()
    torch.manual_seed(0)
    plain = build_model(name, data, hp_of(name, embedding_dim=16))
    torch.manual_seed(0)
    mrl = build_model(name, data, hp_of(name, embedding_dim=16, matryoshka=[4, 8]))
    assert plain.prefixes == [] and mrl.prefixes == [4, 8, 16]
    mrl.load_state_dict(plain.state_dict())
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8])
    a, b = plain(users, pos, neg), mrl(users, pos, neg)
    assert torch.isfinite(b) and b.item() != pytest.approx(a.item())
    assert mrl.hp["matryoshka_rescale"] is True  # the default: prefix scores x dim / d
    b.backward()
    assert mrl.user_emb.weight.grad is not None and mrl.user_emb.weight.grad.abs().sum() > 0
    with pytest.raises(ModelError, match="matryoshka: prefix sizes \\[8, 32\\] exceed embedding_dim 16"):
        build_model(name, data, hp_of(name, embedding_dim=16, matryoshka=[8, 32]))


@pytest.mark.parametrize("name", ["lightgcn", "freedom"])
def test_a_prefix_of_the_graph_models_is_exactly_a_smaller_model(name: str) -> None:
    """Propagation acts on each column alone: the first d columns of the 16-d model's output
    equal a d-dim model whose id tables are the first d columns of the 16-d ones."""
    data = toy()
    big = build_model(name, data, hp_of(name, embedding_dim=16, matryoshka=[4]))
    small = build_model(name, data, hp_of(name, embedding_dim=4))
    with torch.no_grad():
        small.user_emb.weight.copy_(big.user_emb.weight[:, :4])
        small.item_emb.weight.copy_(big.item_emb.weight[:, :4])
    bu, bi = big.inference_embeddings()
    su, si = small.inference_embeddings()
    assert torch.allclose(bu[:, :4], su, atol=1e-5) and torch.allclose(bi[:, :4], si, atol=1e-5)


def test_matryoshka_training_keeps_small_prefixes_useful() -> None:
    """A few epochs on the toy data: the loss falls and every prefix scores finite metrics."""
    from evaluation.metrics import evaluate_prefixes

    data = toy()
    cfg = TrainConfig(
        model="bpr",
        hparams={"embedding_dim": 16, "matryoshka": [4, 8]},
        epochs=10,
        batch_size=64,
        lr=0.01,
        patience=100,
        report_every=1,
        seed=1,
    )
    ctx = LocalContext()
    train(cfg, data, ctx)
    losses = [r["loss"] for r in ctx.reports]
    assert losses[-1] < losses[0]
    model = build_model("bpr", data, cfg.hparams)
    model.load_state_dict(ctx.final_state["model_state"])
    ue, ie = model.inference_embeddings()
    out = evaluate_prefixes(ue, ie, model.prefixes, data.test, data.train, data.n_users, [5])
    assert list(out) == ["4", "8", "16"] and all(0.0 <= m["recall@5"] <= 1.0 for m in out.values())


# -------------------------------------------------------------------------------- params


def test_params_check_matryoshka_values(tmp_path: Path) -> None:
    from tests.conftest import tiny_raw

    raw = tiny_raw(tmp_path)
    raw["train"]["bpr"]["matryoshka"] = [8, 16, 32, 64]
    assert Config.from_dict(raw).train.section("bpr")["matryoshka"] == [8, 16, 32, 64]
    for bad, msg in (
        ([8, 128], "train.bpr.matryoshka: prefix sizes [8, 128] exceed embedding_dim 64"),
        ([16, 8], "train.bpr.matryoshka: prefix sizes must be strictly increasing"),
        ("8,16", "train.bpr.matryoshka: expected list"),
    ):
        raw["train"]["bpr"]["matryoshka"] = bad
        with pytest.raises(ParamsError) as e:
            Config.from_dict(raw)
        assert msg in str(e.value), str(e.value)
    # A grid over matryoshka is a list of lists (a plain list is one value).
    raw["train"]["bpr"]["matryoshka"] = [[], [8, 16]]
    assert Config.from_dict(raw).train.section("bpr")["matryoshka"] == [[], [8, 16]]
    from training.selection import expand_grid

    assert [c["matryoshka"] for c in expand_grid({"matryoshka": [[], [8, 16]]})] == [[], [8, 16]]
    assert expand_grid({"matryoshka": [8, 16], "reg_weight": [0.0, 1e-4]})[1] == {
        "matryoshka": [8, 16],
        "reg_weight": 1e-4,
    }
    raw["train"]["bpr"]["matryoshka"] = [[8, 128]]
    with pytest.raises(ParamsError, match="exceed embedding_dim 64"):
        Config.from_dict(raw)
    # An embedding_dim grid axis: the prefixes must fit its smallest value.
    raw["train"]["bpr"].update(embedding_dim=[32, 64], matryoshka=[8, 64])
    with pytest.raises(ParamsError, match="exceed embedding_dim 32"):
        Config.from_dict(raw)


# --------------------------------------------------------------------- evaluate and export


def test_evaluate_reports_every_prefix_and_export_records_them(tiny_store, tmp_path) -> None:
    from pipelines.stages import evaluate, export
    from pipelines.stages import train as train_stage

    root, config, _ = tiny_store
    shutil.copytree(root / "store", tmp_path / "store")
    layout = Layout(store=tmp_path / "store", models=tmp_path / "models", reports=tmp_path / "reports")
    raw = to_raw(config)
    raw["train"].update(models=["bpr", "lightgcn"], threads=1)
    raw["train"]["common"].update(epochs=2)
    raw["train"]["bpr"].update(embedding_dim=16, matryoshka=[4, 8])
    cfg = Config.from_dict(raw)
    train_stage.run(cfg, layout)
    results = evaluate.run(cfg, layout)
    assert set(results["bpr"]["prefixes"]) == {"4", "8", "16"}
    assert "prefixes" not in results["lightgcn"]  # an ordinary model: no prefix metrics
    on_disk = json.loads(layout.metrics().read_text())
    assert on_disk["bpr"]["prefixes"]["16"]["recall@20"] == pytest.approx(
        results["bpr"]["test"]["recall@20"], abs=1e-6
    )
    export.run(cfg, layout)
    m = read_manifest(layout.item_embeddings("bpr"))
    assert m["matryoshka_prefixes"] == [4, 8, 16] and "first d values" in m["matryoshka_usage"]
    assert read_manifest(layout.user_embeddings("bpr"))["matryoshka_prefixes"] == [4, 8, 16]
    assert read_manifest(layout.item_embeddings("lightgcn"))["matryoshka_prefixes"] == []
