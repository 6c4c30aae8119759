"""Warm-started retraining: rows mapped by raw id, cold with a reason when the previous
checkpoint cannot seed the run, fewer epochs to the same quality, and the same through Ray.

Tiny random data the tests make: a clustered toy world (users prefer their cluster's
items, items carry a noisy cluster vector as content) cut into two snapshots; the second
drops a few items, adds new items and users, and extends every user's history (the first
snapshot's train rows stay train rows: valid/test are each user's latest interactions).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from features.schemas import INTERACTIONS, ITEMS, USERS
from features.store import write_table
from pipelines.config import Config, load_config, to_raw
from pipelines.layout import Layout
from pipelines.stages import train as train_stage
from training.checkpoint import load_checkpoint, save_checkpoint
from training.data import DataSource, TrainData, load_train_data
from training.loop import LocalContext, TrainConfig, train
from training.models import build_model
from training.warm_start import (
    WarmStartError,
    checkpoint_extras,
    describe,
    map_state,
    plan,
    read_ids,
    row_digests,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class World:
    """Users with a cluster each, items with a cluster and a content vector; every user's
    history in time order (mostly their own cluster's items)."""

    user_ids: list[str]
    item_ids: list[str]
    content: np.ndarray
    histories: list[list[int]]


def make_world(n_users: int = 140, n_items: int = 120, clusters: int = 4, per_user: int = 18) -> World:
    rng = np.random.default_rng(0)
    item_cluster = rng.integers(clusters, size=n_items)
    user_cluster = rng.integers(clusters, size=n_users)
    centroids = rng.normal(size=(clusters, 8))
    content = (centroids[item_cluster] + 0.3 * rng.normal(size=(n_items, 8))).astype(np.float32)
    by_cluster = [np.flatnonzero(item_cluster == c) for c in range(clusters)]
    histories = []
    for u in range(n_users):
        own = rng.choice(by_cluster[user_cluster[u]], size=per_user, replace=False)
        other = rng.choice(n_items, size=per_user, replace=False)
        pick = np.where(rng.random(per_user) < 0.85, own, other)
        histories.append(list(dict.fromkeys(pick.tolist())))
    return World(
        [f"user_{u:04d}" for u in range(n_users)],
        [f"item_{i:04d}" for i in range(n_items)],
        content,
        histories,
    )


def write_snapshot(
    world: World, root: Path, *, items: list[int], users: list[int], share: float
) -> tuple[Layout, DataSource]:
    """The snapshot's items/users/interactions tables (dense indexes in raw-id order; per
    user the first ``share`` of the history, the last two rows valid and test)."""
    layout = Layout(store=root / "store", models=root / "models", reports=root / "reports")
    items, users = sorted(items), sorted(users)
    item_idx = {w: i for i, w in enumerate(items)}
    rows = []
    for ui, u in enumerate(users):
        hist = [i for i in world.histories[u] if i in item_idx]
        hist = hist[: max(3, int(np.ceil(share * len(hist))))]
        for k, i in enumerate(hist):
            split = "test" if k == len(hist) - 1 else "valid" if k == len(hist) - 2 else "train"
            rows.append((ui, item_idx[i], k, split))
    write_table(
        layout.items(),
        pa.table({"item_idx": list(range(len(items))), "item_id": [world.item_ids[i] for i in items]})
        .append_column("title", pa.nulls(len(items), pa.string()))
        .append_column("description", pa.nulls(len(items), pa.string()))
        .append_column("category", pa.nulls(len(items), pa.string()))
        .append_column("image_path", pa.nulls(len(items), pa.string())),
        ITEMS,
    )
    write_table(
        layout.users(),
        pa.table({"user_idx": list(range(len(users))), "user_id": [world.user_ids[u] for u in users]}),
        USERS,
    )
    u, i, t, s = zip(*rows, strict=True)
    write_table(
        layout.interactions(),
        pa.table({"user_idx": u, "item_idx": i, "timestamp": t, "rating": [1.0] * len(u), "split": s}),
        INTERACTIONS,
    )
    source = DataSource(items=layout.items(), users=layout.users(), interactions=layout.interactions())
    return layout, source


def with_content(world: World, data: TrainData, source: DataSource) -> TrainData:
    """``data`` plus the world's content vectors as the feature table ``text``."""
    ids = read_ids(source.items, "items")
    index = {w: k for k, w in enumerate(world.item_ids)}
    data.features = {"text": world.content[[index[i] for i in ids]]}
    data.feature_modality = {"text": "text"}
    return data


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Snapshot A (items 0..99, users 0..129) and B: 5 of A's items removed, 20 new items,
    10 new users, every history extended."""
    world = make_world()
    root = tmp_path_factory.mktemp("warm")
    a_items, a_users = list(range(100)), list(range(130))
    removed = [3, 17, 42, 66, 91]
    b_items = [i for i in range(120) if i not in removed]
    b_users = list(range(140))
    la, sa = write_snapshot(world, root / "a", items=a_items, users=a_users, share=0.8)
    lb, sb = write_snapshot(world, root / "b", items=b_items, users=b_users, share=1.0)
    return {
        "world": world,
        "a": (la, sa, load_train_data(sa)),
        "b": (lb, sb, load_train_data(sb)),
        "removed": [world.item_ids[i] for i in removed],
        "new_items": [world.item_ids[i] for i in range(100, 120)],
        "new_users": [world.user_ids[u] for u in range(130, 140)],
    }


def _ckpt(model: torch.nn.Module, source: DataSource, data: TrainData, features: list[str]) -> dict:
    """A checkpoint dict as the train stage writes it (weights + raw ids + digests)."""
    return {
        "model_state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        **checkpoint_extras(source.users, source.items, data, features),
    }


def _rows_by_id(ids: list[str], table: torch.Tensor) -> dict[str, torch.Tensor]:
    return {rid: table[k] for k, rid in enumerate(ids)}


# ------------------------------------------------------------------------------ mapping


def test_carried_rows_keep_their_vectors_new_get_the_mean_removed_are_gone(snapshots) -> None:
    _, sa, da = snapshots["a"]
    _, sb, db = snapshots["b"]
    torch.manual_seed(0)
    old = build_model("bpr", da, {"embedding_dim": 8})
    with torch.no_grad():
        old.item_emb.weight.add_(torch.randn_like(old.item_emb.weight))  # "trained": far from the init
        old.user_emb.weight.add_(1.0)
    ckpt = _ckpt(old, sa, da, [])
    new = build_model("bpr", db, {"embedding_dim": 8})
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    ids = {"users": read_ids(sb.users, "users"), "items": read_ids(sb.items, "items")}
    state, report = map_state(new, ckpt, ids, db, init="content")
    old_items = _rows_by_id(ckpt["ids"]["items"], old.item_emb.weight.detach())
    new_items = _rows_by_id(ids["items"], state["item_emb.weight"])
    carried = [i for i in ids["items"] if i in old_items]
    assert len(carried) == 95 and len(new_items) == 115
    for rid in carried:
        torch.testing.assert_close(new_items[rid], old_items[rid], rtol=0, atol=0)
    assert not set(snapshots["removed"]) & set(new_items)  # dropped
    # bpr has no content: new items start at the carried rows' mean plus the own draw's deviation
    mean = torch.stack([old_items[r] for r in carried]).mean(0)
    f = fresh["item_emb.weight"]
    for rid in snapshots["new_items"]:
        k = ids["items"].index(rid)
        torch.testing.assert_close(new_items[rid], mean + f[k] - f.mean(0), rtol=1e-5, atol=1e-5)
    old_users = _rows_by_id(ckpt["ids"]["users"], old.user_emb.weight.detach())
    for rid in ids["users"][:130]:
        torch.testing.assert_close(state["user_emb.weight"][ids["users"].index(rid)], old_users[rid])
    assert report["items"] == {"carried": 95, "new": 20, "removed": 5, "total": 115}
    assert report["users"] == {"carried": 130, "new": 10, "removed": 0, "total": 140}
    assert report["init"] == {"items": "mean", "users": "mean"}
    msg = describe({**report, "from": "models/bpr/model.pt"})
    assert msg.startswith(
        "warm start from models/bpr/model.pt: 95 of 115 items and 130 of 140 users carried over"
    )
    assert (
        "20 new items initialised at the carried items' mean" in msg and "5 items and 0 users dropped" in msg
    )


def test_content_init_averages_the_content_nearest_carried_items(snapshots) -> None:
    world = snapshots["world"]
    _, sa, da = snapshots["a"]
    _, sb, db = snapshots["b"]
    da, db = with_content(world, da, sa), with_content(world, db, sb)
    # New item_0100 gets exactly item_0007's content: with k=1 it takes item_0007's row.
    index = read_ids(sb.items, "items")
    db.features["text"][index.index("item_0100")] = db.features["text"][index.index("item_0007")]
    torch.manual_seed(0)
    old = build_model("vbpr", da, {"embedding_dim": 8})
    with torch.no_grad():
        old.item_emb.add_(torch.randn_like(old.item_emb))
    ckpt = _ckpt(old, sa, da, ["text"])
    new = build_model("vbpr", db, {"embedding_dim": 8})
    ids = {"users": read_ids(sb.users, "users"), "items": index}
    state, report = map_state(new, ckpt, ids, db, init="content", content_k=1)
    old_row = old.item_emb.detach()[ckpt["ids"]["items"].index("item_0007")]
    torch.testing.assert_close(state["item_emb"][index.index("item_0100")], old_row)
    assert report["init"]["items"] == "content" and report["tables"]["item_emb"] == "items"
    assert report["tables"]["user_emb"] == "users"
    # content init differs from the mean: new items of different clusters start apart
    k = 10
    state_k, _ = map_state(new, ckpt, ids, db, init="content", content_k=k)
    rows = state_k["item_emb"][[index.index(r) for r in snapshots["new_items"]]]
    assert torch.cdist(rows, rows).max() > 0.1


def test_feature_tables_keep_tuned_rows_only_while_the_content_is_unchanged(snapshots) -> None:
    world = snapshots["world"]
    _, sa, da = snapshots["a"]
    _, sb, db = snapshots["b"]
    da, db = with_content(world, da, sa), with_content(world, db, sb)
    b_ids = read_ids(sb.items, "items")
    db.features["text"] = db.features["text"].copy()
    db.features["text"][b_ids.index("item_0005")] += 1.0  # item_0005's text changed
    hp = {"embedding_dim": 8, "feature_weights": None, "knn_k": 5}
    torch.manual_seed(0)
    old = build_model("freedom", da, hp)
    with torch.no_grad():
        old.feats[0].add_(0.5)  # fine-tuned
    ckpt = _ckpt(old, sa, da, ["text"])
    new = build_model("freedom", db, hp)
    ids = {"users": read_ids(sb.users, "users"), "items": b_ids}
    state, report = map_state(new, ckpt, ids, db)
    a_ids = ckpt["ids"]["items"]
    table = state["feats.0"]
    tuned = old.feats[0].detach()
    torch.testing.assert_close(table[b_ids.index("item_0006")], tuned[a_ids.index("item_0006")])
    torch.testing.assert_close(
        table[b_ids.index("item_0005")], torch.from_numpy(db.features["text"][b_ids.index("item_0005")])
    )
    torch.testing.assert_close(
        table[b_ids.index("item_0110")], torch.from_numpy(db.features["text"][b_ids.index("item_0110")])
    )
    assert report["content_changed"] == {"text": 1} and report["tables"]["feats.0"] == "items"
    assert "1 changed items take their new text vectors" in describe({**report, "from": "x"})


def test_a_tensor_of_another_shape_is_refused(snapshots) -> None:
    _, sa, da = snapshots["a"]
    _, sb, db = snapshots["b"]
    old = build_model("bpr", da, {"embedding_dim": 8})
    ckpt = _ckpt(old, sa, da, [])
    ckpt["model_state"]["item_emb.weight"] = torch.zeros(100, 4)
    ids = {"users": read_ids(sb.users, "users"), "items": read_ids(sb.items, "items")}
    with pytest.raises(WarmStartError, match=r"item_emb.weight: rows of shape \(8,\) here, \(4,\)"):
        map_state(build_model("bpr", db, {"embedding_dim": 8}), ckpt, ids, db)


def test_row_digests_tell_changed_rows() -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = x.copy()
    y[2, 1] += 1e-3
    assert (row_digests(x) == row_digests(y)).tolist() == [True, True, False, True]


# ------------------------------------------------------------------------------ planning


def _saved(
    tmp_path: Path, snapshots, hp: dict, *, ids: bool = True, features: list[str] | None = None
) -> Path:
    _, sa, da = snapshots["a"]
    model = build_model("bpr", da, hp)
    extras = checkpoint_extras(sa.users, sa.items, da, []) if ids else {}
    if features is not None:
        extras["features"] = features
    path = tmp_path / "models" / "bpr" / "model.pt"
    save_checkpoint(
        path,
        model_state=model.state_dict(),
        config={"model": "bpr", "hparams": hp},
        best_epoch=3,
        best_valid=0.1,
        **extras,
    )
    return path


def _plan(path: Path, snapshots, hp: dict):
    _, sb, _ = snapshots["b"]
    return plan(
        path, model="bpr", hparams=hp, features=[], users=sb.users, items=sb.items, init="mean", content_k=5
    )


def test_checkpoint_records_raw_ids_and_loads_weights_only(tmp_path, snapshots) -> None:
    path = _saved(tmp_path, snapshots, {"embedding_dim": 8})
    ckpt = load_checkpoint(path)  # weights_only=True
    assert ckpt["ids"]["items"][:2] == ["item_0000", "item_0001"] and len(ckpt["ids"]["users"]) == 130
    p = _plan(path, snapshots, {"embedding_dim": 8})
    assert p.warm and p.spec["checkpoint"] == str(path.resolve()) and p.spec["init"] == "mean"
    assert all(isinstance(v, str | int) for v in p.spec.values())  # plain values: fit for the Ray config


def test_cold_when_no_checkpoint_hparams_changed_no_ids_or_features_changed(tmp_path, snapshots) -> None:
    p = _plan(tmp_path / "nothing" / "model.pt", snapshots, {"embedding_dim": 8})
    assert not p.warm and p.reason.startswith("no previous checkpoint at ")
    path = _saved(tmp_path / "a", snapshots, {"embedding_dim": 8})
    p = _plan(path, snapshots, {"embedding_dim": 16})
    assert (
        not p.warm
        and p.reason == "hyper-parameters changed since the previous checkpoint (embedding_dim 8 -> 16)"
    )
    # A knob now spelt out at the model's default (e.g. one added since) is no change.
    assert _plan(path, snapshots, {"embedding_dim": 8, "reg_weight": 1e-4}).warm
    p = _plan(
        _saved(tmp_path / "b", snapshots, {"embedding_dim": 8}, ids=False), snapshots, {"embedding_dim": 8}
    )
    assert not p.warm and "records no raw user/item ids" in p.reason
    p = _plan(
        _saved(tmp_path / "c", snapshots, {"embedding_dim": 8}, features=["text"]),
        snapshots,
        {"embedding_dim": 8},
    )
    assert not p.warm and "feature tables changed" in p.reason
    bad = tmp_path / "d" / "model.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    p = _plan(bad, snapshots, {"embedding_dim": 8})
    assert not p.warm and "not usable" in p.reason


# ------------------------------------------------------------------------------ training


def _valid_curve(state: dict) -> list[float]:
    return [r["valid_recall@20"] for r in state["history"]]


def _run(cfg: TrainConfig, data: TrainData) -> dict:
    ctx = LocalContext()
    train(cfg, data, ctx)
    assert ctx.final_state is not None
    return ctx.final_state


@pytest.fixture(scope="module")
def trained(snapshots, tmp_path_factory) -> dict:
    """Cold on A, then on B: cold (full budget) and warm from A's checkpoint (own budget)."""
    _, sa, da = snapshots["a"]
    _, sb, db = snapshots["b"]
    base = TrainConfig(
        model="bpr",
        hparams={"embedding_dim": 16, "reg_weight": 1e-4},
        epochs=20,
        patience=20,
        batch_size=256,
        lr=0.01,
        ks=(20,),
        report_every=20,
        checkpoint_every=20,
    )
    a = _run(base, da)  # A's curve levels off by epoch ~16
    path = tmp_path_factory.mktemp("warm_ckpt") / "model.pt"
    save_checkpoint(
        path,
        **{k: a[k] for k in ("model_state", "config", "best_epoch", "best_valid")},
        **checkpoint_extras(sa.users, sa.items, da, []),
    )
    spec = _plan(path, snapshots, base.hparams).spec
    assert spec is not None
    cold = _run(base, db)
    warm = _run(
        TrainConfig(
            **{**base.__dict__, "warm_start": {**spec, "init": "content"}, "epochs": 10, "patience": 4}
        ),
        db,
    )
    return {"a": a, "cold": cold, "warm": warm, "spec": spec, "base": base}


def test_warm_training_reaches_cold_quality_in_fewer_epochs(trained) -> None:
    cold, warm = _valid_curve(trained["cold"]), _valid_curve(trained["warm"])
    target = 0.95 * max(cold)

    def epochs_to(curve: list[float]) -> int:
        return next((k + 1 for k, v in enumerate(curve) if v >= target), 10**6)

    assert max(warm) >= target, (max(warm), max(cold))
    assert epochs_to(warm) * 2 <= epochs_to(cold), (epochs_to(warm), epochs_to(cold))
    assert len(warm) <= 10  # its own budget
    start = trained["warm"]["warm_start"]
    assert start["mode"] == "warm" and start["items"]["carried"] == 95 and start["users"]["new"] == 10


@pytest.mark.slow
def test_warm_start_through_ray(trained, snapshots, ray_session, tmp_path) -> None:
    from training.ray_train import fit

    _, sb, db = snapshots["b"]
    base = trained["base"]
    cfg = TrainConfig(
        **{**base.__dict__, "warm_start": trained["spec"], "epochs": 3, "patience": 5, "report_every": 3}
    )
    ray_params = load_config(ROOT / "params.yaml").train.ray.model_copy(
        update={"storage_path": str(tmp_path)}
    )
    state = fit(cfg, source=sb, workers=1, ray_params=ray_params)
    start = state["warm_start"]
    assert start["mode"] == "warm" and start["from"] == trained["spec"]["checkpoint"]
    assert start["items"] == {"carried": 95, "new": 20, "removed": 5, "total": 115}
    # The same initial weights as in-process: the first epoch's loss matches the warm run's.
    local = _run(cfg, db)
    assert state["history"][0]["loss"] == pytest.approx(local["history"][0]["loss"], rel=1e-4)


# ------------------------------------------------------------------------------ the stage


def _stage_config(**warm) -> Config:
    raw = to_raw(load_config(ROOT / "params.yaml"))
    raw["extract"]["features"] = {}
    raw["train"].update(backend="local", models=["bpr"], threads=1)
    raw["train"]["bpr"] = {"embedding_dim": 16, "reg_weight": 1e-4, "lr": 0.01, "batch_size": 256}
    raw["train"]["common"].update(epochs=6, patience=6, report_every=6, checkpoint_every=6)
    raw["train"]["warm_start"] = {"enabled": True, "epochs": 3, "patience": 3, "init": "mean", **warm}
    raw["ingest"]["split"]["method"] = "temporal"
    return Config.from_dict(raw)


def test_stage_trains_cold_then_warm_and_records_it(snapshots, tmp_path, caplog) -> None:
    la, _, _ = snapshots["a"]
    lb, _, _ = snapshots["b"]
    models, reports = tmp_path / "models", tmp_path / "reports"
    config = _stage_config()
    caplog.set_level(logging.INFO, logger="pipelines.stages.train")
    first = train_stage.run(config, Layout(store=la.store, models=models, reports=reports))["bpr"]
    assert first["warm_start"] == {
        "mode": "cold",
        "reason": f"no previous checkpoint at {models / 'bpr' / 'model.pt'}",
    }
    assert "training cold: no previous checkpoint at" in caplog.text
    caplog.clear()
    second = train_stage.run(config, Layout(store=lb.store, models=models, reports=reports))["bpr"]
    assert second["warm_start"]["mode"] == "warm" and second["epochs"] <= 3
    assert "95 of 115 items and 130 of 140 users carried over, 20 new items initialised" in caplog.text
    selection = json.loads((models / "bpr" / "selection.json").read_text())
    assert selection["warm_start"]["items"]["new"] == 20 and selection["warm_start_runs"][0]["mode"] == "warm"
    ckpt = load_checkpoint(models / "bpr" / "model.pt")
    assert ckpt["ids"]["items"] == read_ids(lb.items(), "items")
    # Changed hyper-parameters: cold, saying which.
    changed = config.updated({"train": {"bpr": {"embedding_dim": 8}}})
    caplog.clear()
    third = train_stage.run(changed, Layout(store=lb.store, models=models, reports=reports))["bpr"]
    assert third["warm_start"]["mode"] == "cold"
    assert "embedding_dim 16 -> 8" in third["warm_start"]["reason"] and "embedding_dim 16 -> 8" in caplog.text
    # Off: cold, and the reason is recorded.
    off = train_stage.run(
        _stage_config(enabled=False), Layout(store=lb.store, models=tmp_path / "m2", reports=reports)
    )["bpr"]
    assert off["warm_start"] == {"mode": "cold", "reason": "train.warm_start.enabled is false"}
