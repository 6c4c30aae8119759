"""Checkpoints: a round trip gives the same scores, an unsafe pickle is refused before
anything in it runs, a missing or corrupt file is an error naming it."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from toy_data import toy_data

from training.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from training.data import TrainData
from training.loop import LocalContext, TrainConfig, train
from training.models import build_model


def _toy(n_users: int = 20, n_items: int = 15, seed: int = 0) -> TrainData:
    return toy_data(n_users, n_items, seed, n_pairs=150)


def _trained_bpr(data: TrainData) -> dict:
    ctx = LocalContext()
    train(TrainConfig(model="bpr", hparams={"embedding_dim": 8}, epochs=2, batch_size=32), data, ctx)
    assert ctx.final_state is not None
    return ctx.final_state


def _save(path: Path, state: dict, **extra) -> None:
    """``save_checkpoint`` of a train loop's final state, as the train stage writes it."""
    save_checkpoint(
        path,
        model_state=state["model_state"],
        config=state["config"],
        best_epoch=state["best_epoch"],
        best_valid=state["best_valid"],
        **extra,
    )


def test_round_trip_gives_the_same_scores(tmp_path: Path) -> None:
    data = _toy()
    state = _trained_bpr(data)
    path = tmp_path / "models" / "bpr" / "model.pt"
    _save(path, state, history=state["history"])
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left behind
    model, ckpt = load_model(path, data)
    assert not model.training
    assert ckpt["config"]["model"] == "bpr" and ckpt["best_epoch"] == state["best_epoch"]
    assert ckpt["history"] == state["history"]

    expected = build_model("bpr", data, state["config"]["hparams"])
    expected.load_state_dict(state["model_state"])
    users = torch.arange(data.n_users)
    torch.testing.assert_close(model.score(users), expected.score(users), rtol=0, atol=0)
    ue, ie = model.inference_embeddings()
    assert ue.dtype == ie.dtype == torch.float32 and not ue.requires_grad and not ie.requires_grad
    assert ue.shape == (data.n_users, 8) and ie.shape == (data.n_items, 8)
    torch.testing.assert_close(ue @ ie.T, expected.score(users), rtol=0, atol=0)


def test_the_train_loops_resume_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    train(
        TrainConfig(model="bpr", hparams={"embedding_dim": 8}, epochs=2, batch_size=32),
        _toy(),
        LocalContext(checkpoint_path=path),
    )
    ckpt = load_checkpoint(path)
    assert {"last_state", "optim_state", "torch_rng", "config"} <= set(ckpt)
    assert ckpt["config"]["ks"] == (10, 20)


class _Marker:
    """Unpickling this would create ``path`` (what a malicious checkpoint would do)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"model_state": {}, "config": _Marker(marker), "best_epoch": 0, "best_valid": 0.0}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="model.pt") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "expected" in str(err.value)
    assert not marker.exists()
    # Also a bare pickle (not torch's zip format) that would run code on load.
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Marker(marker), protocol=2))
    with pytest.raises(CheckpointError, match="raw.pt"):
        load_checkpoint(raw)
    assert not marker.exists()


def test_missing_and_corrupt_files_are_errors_naming_them(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "model.pt"
    with pytest.raises(CheckpointError, match="no such file") as err:
        load_checkpoint(missing)
    assert str(missing) in str(err.value)
    assert isinstance(err.value, ValueError)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_checkpoint(corrupt)
    incomplete = tmp_path / "incomplete.pt"
    torch.save({"model_state": {}}, incomplete)
    with pytest.raises(CheckpointError, match=r"incomplete\.pt: no \['config'"):
        load_checkpoint(incomplete)


def test_save_refuses_what_weights_only_could_not_read(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    with pytest.raises(CheckpointError, match=r"config\.hparams\.x.*numpy"):
        save_checkpoint(
            path,
            model_state={},
            config={"model": "bpr", "hparams": {"x": np.float64(1.0)}},
            best_epoch=0,
            best_valid=0.0,
        )
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_a_checkpoint_from_other_data_is_an_error_naming_the_file(tmp_path: Path) -> None:
    data = _toy()
    state = _trained_bpr(data)
    path = tmp_path / "model.pt"
    _save(path, state)
    with pytest.raises(CheckpointError, match="model.pt.*does not fit model 'bpr'"):
        load_model(path, _toy(n_users=21))
