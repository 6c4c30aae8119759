"""SASRec and the sequential task on tiny random data: windows, shapes, causal masking,
learning, the temporal split, the evaluation protocol and the params checks."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from pipelines.config import Config
from pipelines.splits import split_temporal
from training.data import Interactions, TrainData
from training.loop import LocalContext, TrainConfig, train
from training.models import build_model
from training.models.base import ModelError
from training.sequential import SequenceData, check_task, ranking_inputs

SMALL = {"hidden_size": 16, "inner_size": 32, "max_seq_length": 6, "hidden_dropout": 0.0, "attn_dropout": 0.0}


def _log(n_users: int = 12, n_items: int = 15, per_user: int = 9, seed: int = 0) -> pl.DataFrame:
    """A log where each user walks the catalog in steps of 1 or 2 (a learnable next item)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        item = int(rng.integers(n_items))
        for t in range(per_user):
            rows.append((u, item, 1000 * u + 10 * t))
            item = (item + 1 + int(rng.integers(2))) % n_items
    df = pl.DataFrame(rows, schema=["user_idx", "item_idx", "timestamp"], orient="row")
    return df.unique(["user_idx", "item_idx"], keep="first")


def _data(df: pl.DataFrame, n_users: int = 12, n_items: int = 15) -> TrainData:
    split = split_temporal(df)

    def part(name: str) -> Interactions:
        p = split.filter(pl.col("split") == name)
        return Interactions(
            users=p.get_column("user_idx").to_numpy().astype(np.int64),
            items=p.get_column("item_idx").to_numpy().astype(np.int64),
            times=p.get_column("timestamp").to_numpy().astype(np.int64),
        )

    return TrainData(n_users, n_items, part("train"), part("valid"), part("test"))


def test_windows_follow_time_and_leave_one_out() -> None:
    df = _log()
    data = _data(df)
    seqs = SequenceData.from_train_data(data, max_len=4)
    user0 = df.filter(pl.col("user_idx") == 0).sort("timestamp").get_column("item_idx").to_list()
    # the temporal split held out the last two items by time: valid then test
    assert data.valid.items[data.valid.users == 0].tolist() == [user0[-2]]
    assert data.test.items[data.test.users == 0].tolist() == [user0[-1]]
    train0 = user0[:-2]
    rows = np.flatnonzero(seqs.users == 0)
    assert seqs.target[rows].tolist() == train0[1:]  # every train item after the first is a target
    last = rows[-1]  # input: the 4 items before the last target, right-padded windows of index + 1
    assert seqs.seq[last, : seqs.lengths[last]].tolist() == [i + 1 for i in train0[-5:-1]]
    first = rows[0]
    assert seqs.lengths[first] == 1 and seqs.seq[first].tolist() == [train0[0] + 1, 0, 0, 0]
    q, n = seqs.queries("test")  # test query: train + valid, the last 4
    assert q[0, : n[0]].tolist() == [i + 1 for i in user0[-5:-1]]
    q, n = seqs.queries("valid")
    assert q[0, : n[0]].tolist() == [i + 1 for i in user0[-6:-2]]


def test_shapes_and_future_items_do_not_change_earlier_positions() -> None:
    data = _data(_log())
    torch.manual_seed(0)
    model = build_model("sasrec", data, SMALL).eval()
    seq = torch.tensor([[3, 5, 7, 9, 0, 0], [2, 4, 0, 0, 0, 0]])
    lengths = torch.tensor([4, 2])
    assert model.encode(seq, lengths).shape == (2, 16)
    pos = torch.arange(6)
    x = model.norm(model.item_embedding(seq) + model.position_embedding(pos)[None])
    before = model.hidden_states(x, seq)
    changed = seq.clone()
    changed[0, 3] = 11  # a different future item at position 3 ...
    x2 = model.norm(model.item_embedding(changed) + model.position_embedding(pos)[None])
    after = model.hidden_states(x2, changed)
    torch.testing.assert_close(after[0, :3], before[0, :3])  # ... leaves positions 0-2 alone
    assert not torch.allclose(after[0, 3], before[0, 3])
    users, items = model.embeddings()
    assert users.shape == (12, 16) and items.shape == (15, 16)
    assert model.query_embeddings("valid").shape == (12, 16)


def test_loss_decreases_through_the_training_loop() -> None:
    data = _data(_log())
    cfg = TrainConfig(
        model="sasrec",
        hparams=SMALL,
        epochs=30,
        batch_size=32,
        lr=1e-2,
        patience=100,
        valid_metric="ndcg@10",
        ks=(5, 10),
        task="sequential",
    )
    ctx = LocalContext()
    train(cfg, data, ctx)
    losses = [r["loss"] for r in ctx.final_state["history"]]
    assert losses[-1] < 0.7 * losses[0]
    assert "valid_ndcg@10" in ctx.final_state["history"][-1]


def test_protocol_masks_history_only_when_asked() -> None:
    data = _data(_log())
    model = build_model("sasrec", data, SMALL)
    _, _, mask = ranking_inputs(model, data, "test", sequential_task=True, mask_history=False)
    assert mask is None  # RecBole: no history masking for sequential models
    ue, _, mask = ranking_inputs(model, data, "test", sequential_task=True, mask_history=True)
    assert mask is not None and len(mask) == len(data.train) + len(data.valid)
    torch.testing.assert_close(ue, model.query_embeddings("test"))


def test_task_checks() -> None:
    with pytest.raises(ModelError, match="train.task: sequential"):
        check_task("general", ["bpr", "sasrec"], "temporal")
    with pytest.raises(ModelError, match="temporal"):
        check_task("sequential", ["sasrec"], "random_ratio")
    check_task("sequential", ["sasrec", "bpr"], "temporal")
    cfg = Config().updated({"train": {"task": "sequential", "sequential": {"mask_history": True}}})
    assert TrainConfig.from_config("sasrec", cfg.train, [10]).mask_history is True


@pytest.mark.parametrize("ids", [True, False])
def test_content_sasrec_items_come_from_features(ids: bool) -> None:
    data = _data(_log())
    rng = np.random.default_rng(1)
    data.features = {"text": rng.normal(size=(15, 6)).astype(np.float32)}
    model = build_model("sasrec_content", data, {**SMALL, "id_embeddings": ids})
    table = model.item_table()
    assert table.shape == (16, 16)
    seq, lengths, target = model.seqs.epoch(seed=0, epoch=0, rank=0, world_size=1, device=torch.device("cpu"))
    loss = model(seq[:8], lengths[:8], target[:8])
    loss.backward()
    assert torch.isfinite(loss) and model.proj.weight.grad is not None
    assert "feats.t0" not in model.state_dict()  # the feature table is a constant input
    with torch.no_grad():
        model.feats.t0[3] += 1.0  # an item's content moves its vector
    assert not torch.allclose(model.item_table()[4], table[4])
