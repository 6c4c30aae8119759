"""The plain PyTorch loop in-process: checkpoint cadence and exact resume."""

from __future__ import annotations

import pytest
import torch

from pipelines.stages.common import load_data
from training.loop import LocalContext, TrainConfig, train


class _Crash(Exception):
    pass


class _CrashAfter(LocalContext):
    """Dies right after persisting the checkpoint of ``epoch``: a killed process."""

    def __init__(self, epoch: int, **kw) -> None:
        super().__init__(**kw)
        self.crash_epoch = epoch

    def report(self, metrics, state) -> None:
        super().report(metrics, state)
        if state is not None and metrics["epoch"] == self.crash_epoch:
            raise _Crash


@pytest.fixture(scope="module")
def bpr_setup(tiny_store):
    _, config, layout = tiny_store
    config = config.updated(
        {"train": {"common": {"epochs": 8, "report_every": 2, "checkpoint_every": 4, "patience": 100}}}
    )
    cfg = TrainConfig.from_config("bpr", config.train, config.evaluate.ks)
    return cfg, load_data(config.updated({"extract": {"features": {}}}), layout)


def test_from_config_reads_checkpoint_and_device_knobs(tiny_store) -> None:
    _, config, _ = tiny_store
    config = config.updated(
        {"train": {"common": {"checkpoint_every": 3, "checkpoint_on_best": True, "device": "cpu"}}}
    )
    cfg = TrainConfig.from_config("bpr", config.train, [10, 20])
    assert (cfg.checkpoint_every, cfg.checkpoint_on_best, cfg.device, cfg.ks) == (3, True, "cpu", (10, 20))


def test_reports_and_checkpoints_on_their_cadence(bpr_setup, tmp_path) -> None:
    cfg, data = bpr_setup
    saved: list[int] = []

    class Recording(LocalContext):
        def report(self, metrics, state) -> None:
            super().report(metrics, state)
            if state is not None:
                saved.append(metrics["epoch"])

    ctx = Recording(checkpoint_path=tmp_path / "state.pt")
    train(cfg, data, ctx)
    assert [r["epoch"] for r in ctx.reports] == [1, 3, 5, 7]
    assert saved == [3, 7]
    ckpt = torch.load(tmp_path / "state.pt", weights_only=False)
    assert {
        "model_state",
        "last_state",
        "optim_state",
        "epoch",
        "best_epoch",
        "best_valid",
        "bad_epochs",
    } <= set(ckpt)
    assert ckpt["epoch"] == 7 and len(ckpt["history"]) == 8 and ckpt["optim_state"]["state"]
    assert "optim_state" not in ctx.final_state  # the returned state carries no resume-only parts


def test_resume_after_a_crash_equals_an_undisturbed_run(bpr_setup, tmp_path) -> None:
    cfg, data = bpr_setup
    undisturbed = LocalContext()
    train(cfg, data, undisturbed)
    path = tmp_path / "state.pt"
    with pytest.raises(_Crash):
        train(cfg, data, _CrashAfter(3, checkpoint_path=path))
    resumed = LocalContext(checkpoint_path=path)
    train(cfg, data, resumed)
    a, b = undisturbed.final_state, resumed.final_state
    assert b["resumed_from"] == [3] and a["resumed_from"] == []
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]
    assert (a["best_epoch"], a["best_valid"]) == (b["best_epoch"], b["best_valid"])
    for k, v in a["model_state"].items():
        assert torch.equal(v, b["model_state"][k]), k


def test_resuming_a_finished_run_returns_it_and_more_epochs_continue_it(bpr_setup, tmp_path) -> None:
    cfg, data = bpr_setup
    path = tmp_path / "state.pt"
    first = LocalContext(checkpoint_path=path)
    train(cfg, data, first)
    again = LocalContext(checkpoint_path=path)
    train(cfg, data, again)
    assert len(again.reports) == 1 and again.final_state["history"] == first.final_state["history"]
    longer = LocalContext(checkpoint_path=path)
    train(TrainConfig(**{**cfg.__dict__, "epochs": 10}), data, longer)
    assert [r["epoch"] for r in longer.final_state["history"]] == list(range(10))
    assert longer.final_state["resumed_from"] == [7, 7]
