"""Grids, seeds and selection on valid: expansion, overrides, choice, mean/std, the stage."""

from __future__ import annotations

import json

import pytest

from pipelines.layout import Layout
from pipelines.stages import train as train_stage
from training.checkpoint import load_checkpoint
from training.loop import TrainConfig
from training.selection import ConfigResult, aggregate, choose, expand_grid, make_config, mean_std, seeds_of


def test_expand_grid_is_the_product_of_list_values_in_order() -> None:
    assert expand_grid({"a": 1}) == [{"a": 1}]
    assert expand_grid(None) == [{}]
    grid = expand_grid({"dropout": [0.8, 0.9], "reg_weight": [0, 1e-4], "k": 10, "w": {"t": 0.9}})
    assert grid == [
        {"dropout": 0.8, "reg_weight": 0, "k": 10, "w": {"t": 0.9}},
        {"dropout": 0.8, "reg_weight": 1e-4, "k": 10, "w": {"t": 0.9}},
        {"dropout": 0.9, "reg_weight": 0, "k": 10, "w": {"t": 0.9}},
        {"dropout": 0.9, "reg_weight": 1e-4, "k": 10, "w": {"t": 0.9}},
    ]
    with pytest.raises(ValueError, match="empty list"):
        expand_grid({"a": []})


def test_make_config_routes_train_fields_and_hyper_parameters() -> None:
    base = TrainConfig(model="lattice", hparams={}, lr=1e-3, seed=1)
    cfg = make_config(base, {"lr": 5e-4, "weight_decay": 1e-6, "reg_weight": 0.1}, seed=7)
    assert (cfg.lr, cfg.weight_decay, cfg.seed) == (5e-4, 1e-6, 7)
    assert cfg.hparams == {"reg_weight": 0.1}
    assert base.lr == 1e-3 and base.seed == 1  # the base is not changed


def test_seeds() -> None:
    from pipelines.config import TrainParams

    assert seeds_of(TrainParams(seed=5)) == [5]
    assert seeds_of(TrainParams(seed=5, seeds=[1, 2, 3])) == [1, 2, 3]
    with pytest.raises(ValueError, match="empty"):
        seeds_of(TrainParams(seeds=[]))


def test_choice_uses_mean_valid_over_seeds_and_first_on_ties() -> None:
    a = ConfigResult({"x": 1}, seeds=[1, 2], valid=[0.30, 0.10])  # one lucky seed, mean 0.20
    b = ConfigResult({"x": 2}, seeds=[1, 2], valid=[0.22, 0.22])  # mean 0.22
    c = ConfigResult({"x": 3}, seeds=[1, 2], valid=[0.22, 0.22])
    assert choose([a, b, c]) == 1
    assert b.best_seed_index() == 0 and a.best_seed_index() == 0


def test_mean_std_is_the_sample_spread() -> None:
    m = mean_std([0.1, 0.2, 0.3])
    assert m["mean"] == pytest.approx(0.2) and m["std"] == pytest.approx(0.1) and m["n"] == 3
    assert mean_std([0.4])["std"] == 0.0
    agg = aggregate([{"recall@20": 0.1, "users": 5}, {"recall@20": 0.3, "users": 5}])
    assert set(agg) == {"recall@20"} and agg["recall@20"]["mean"] == pytest.approx(0.2)


def test_train_stage_grid_and_seeds_save_the_valid_choice(tiny_store, tmp_path) -> None:
    root, config, _ = tiny_store
    # lr 0 cannot learn: its valid score stays at the initial one, so lr 0.05 must win.
    config = config.updated(
        {
            "train": {
                "models": ["bpr"],
                "seeds": [1, 2],
                "backend": "local",
                "common": {"epochs": 3, "patience": 10},
                "bpr": {"embedding_dim": 8, "reg_weight": 1e-4, "lr": [0.0, 0.05]},
            }
        }
    )
    layout = Layout(store=root / "store", models=tmp_path / "models", reports=tmp_path / "reports")
    summary = train_stage.run(config, layout)
    sel = json.loads((tmp_path / "models/bpr/selection.json").read_text())
    assert len(sel["configs"]) == 2 and sel["seeds"] == [1, 2]
    means = [c["valid"]["mean"] for c in sel["configs"]]
    assert sel["chosen"] == int(means.index(max(means)))
    assert sel["test"]["recall@20"]["n"] == 2 and sel["test"]["recall@20"]["std"] >= 0
    assert summary["bpr"]["configs"] == 2 and "recall@20" in summary["bpr"]["test_mean"]
    ckpt = load_checkpoint(tmp_path / "models/bpr/model.pt")
    assert ckpt["config"]["seed"] == sel["saved_seed"] and ckpt["config"]["lr"] == sel["chosen_config"]["lr"]
    assert ckpt["best_valid"] == max(sel["configs"][sel["chosen"]]["valid_per_seed"])
