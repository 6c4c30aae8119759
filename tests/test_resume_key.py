"""``--resume`` is keyed by the training data: another dataset's checkpoint is never continued.

Cheap: no Ray. The run name (``training.ray_train.run_name``) holds a digest of the
stage's data fingerprint (``pipelines.stages.train.data_fingerprint``, from the manifests),
and ``resume_message`` is what the stage logs before ``fit`` hands the name to Ray.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pytest

from features.store import base_manifest, read_manifest, write_manifest
from pipelines.config import RayParams
from pipelines.layout import Layout
from pipelines.stages.train import data_fingerprint
from training.loop import TrainConfig
from training.ray_train import config_name, resume_message, run_name, storage_uri

SCHEMA = pa.schema([("x", pa.int64())])


def cfg(**kw) -> TrainConfig:
    return TrainConfig(model="bpr", hparams={"embedding_dim": 8}, **kw)


def store(root: Path, *, split_hash: str = "s1", items: int = 10, cache_key: str = "k1") -> Layout:
    layout = Layout(store=root / "store", models=root / "models", reports=root / "reports")
    for path, rows, extra in (
        (layout.interactions(), 100, {"split_hash": split_hash}),
        (layout.items(), items, {}),
        (layout.users(), 7, {}),
        (layout.feature("text"), items, {"cache_key": cache_key}),
        (layout.graph("text"), items * 3, {"k": 3}),
    ):
        path.mkdir(parents=True, exist_ok=True)
        write_manifest(path, base_manifest(path.name, SCHEMA, rows, **extra))
    return layout


def test_run_name_changes_with_the_data_fingerprint_only() -> None:
    a, b = run_name(cfg(), "data A"), run_name(cfg(), "data B")
    assert (
        a != b and a.startswith(config_name(cfg()) + "-data") and b.startswith(config_name(cfg()) + "-data")
    )
    assert run_name(cfg(), "data A") == a  # stable
    assert run_name(cfg(epochs=999), "data A") == a  # a resumable knob keeps the run
    assert run_name(cfg(lr=0.5), "data A") != a  # a trajectory knob does not


@pytest.mark.parametrize(
    "change",
    [{"split_hash": "s2"}, {"items": 11}, {"cache_key": "k2"}],
    ids=["split_hash", "item_rows", "feature_cache_key"],
)
def test_fingerprint_follows_the_manifests(tmp_path: Path, change: dict) -> None:
    base = data_fingerprint(store(tmp_path / "a"), ["text"])
    assert data_fingerprint(store(tmp_path / "b"), ["text"]) == base  # same data, other folder
    assert data_fingerprint(store(tmp_path / "c", **change), ["text"]) != base
    assert "s1" in base and "k1" in base
    assert read_manifest(store(tmp_path / "d").interactions())["split_hash"] == "s1"


def test_resume_after_reingest_starts_fresh_and_says_the_data_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = storage_uri(RayParams(storage_path=str(tmp_path / "ray_results")))
    old = run_name(cfg(), data_fingerprint(store(tmp_path / "old"), ["text"]))
    (Path(storage) / old / "checkpoint_000000").mkdir(parents=True)  # a checkpoint of the old data
    new = run_name(cfg(), data_fingerprint(store(tmp_path / "new", split_hash="other"), ["text"]))
    assert new != old
    msg = resume_message(storage, cfg(), new)
    assert msg.startswith("resume: the training data changed since the checkpoint of this configuration")
    assert old in msg and f"starting {new} fresh" in msg
    # Same data again: continue the checkpoint; another configuration: nothing to say about data.
    assert resume_message(storage, cfg(), old).startswith(
        f"resume: continuing {old} from its latest checkpoint"
    )
    other = run_name(cfg(lr=0.5), "x")
    assert resume_message(storage, cfg(lr=0.5), other) == (
        f"resume: no checkpoint of {other} under {storage}; starting fresh"
    )


class _Stop(Exception):
    pass


def test_fit_with_resume_logs_the_fresh_start_and_uses_the_data_keyed_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fit`` up to handing the run to Ray (the trainer is a stand-in: no Ray is started)."""
    import ray.train.torch

    from training import ray_train

    seen: dict = {}

    class FakeTrainer:
        def __init__(self, *args, run_config, **kwargs) -> None:
            seen["name"] = run_config.name

        def fit(self):
            raise _Stop

    monkeypatch.setattr(ray_train, "ensure_ray", lambda params: None)
    monkeypatch.setattr(ray.train.torch, "TorchTrainer", FakeTrainer)
    params = RayParams(storage_path=str(tmp_path / "ray_results"), resume=True)
    storage = storage_uri(params)
    old = run_name(cfg(), "old data")
    (Path(storage) / old / "checkpoint_000000").mkdir(parents=True)
    with caplog.at_level(logging.INFO, logger="training.ray_train"), pytest.raises(_Stop):
        ray_train.fit(cfg(), source=None, workers=1, ray_params=params, data_fingerprint="new data")
    assert seen["name"] == run_name(cfg(), "new data") != old
    assert "resume: the training data changed" in caplog.text and old in caplog.text
    assert (Path(storage) / old).is_dir()  # the other dataset's run is left alone, not continued
