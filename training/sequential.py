"""The sequential task's data: users' ordered histories, next-item training windows, the
query history of each split, and its evaluation protocol.

Order: by timestamp, ties by item index (the order ``pipelines.splits.split_temporal``
holds out by); without timestamps, the rows' own order. Training samples are RecBole's
augmentation: every train item after a user's first is a target, its input the up to
``max_len`` train items before it. Valid queries hold the train history, test queries train
+ valid (leave-one-out). Protocol (RecBole's for sequential models): full ranking over all
items, the history is *not* masked unless ``train.sequential.mask_history``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from training.data import Interactions, TrainData


def ordered(pairs: Interactions, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, items): each user's items in time order as CSR arrays."""
    times = pairs.times if pairs.times is not None else np.arange(len(pairs))
    order = np.lexsort((pairs.items, times, pairs.users))
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs.users, minlength=n_users), out=indptr[1:])
    return indptr, pairs.items[order]


def concat(*parts: Interactions) -> Interactions:
    """Interactions of several splits in one (times kept when every part has them)."""
    times = [p.times for p in parts]
    return Interactions(
        users=np.concatenate([p.users for p in parts]),
        items=np.concatenate([p.items for p in parts]),
        times=np.concatenate(times) if all(t is not None for t in times) else None,
    )


def windows(
    items: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded windows (item index + 1, 0 = padding) of the last up to ``max_len`` of
    ``items[starts:ends]`` per row (a user's start and a position in its history); with lengths."""
    starts = np.maximum(starts, ends - max_len)
    lengths = ends - starts
    offs = np.arange(max_len)[None, :]
    valid = offs < lengths[:, None]
    idx = np.minimum(starts[:, None] + offs, max(0, len(items) - 1))
    seq = np.where(valid, items[idx] + 1, 0) if len(items) else np.zeros(valid.shape)
    return seq.astype(np.int64), lengths.astype(np.int64)


@dataclass
class SequenceData:
    """Training windows (``seq``, ``lengths``, ``target``) and per-split query windows."""

    seq: np.ndarray
    lengths: np.ndarray
    target: np.ndarray
    users: np.ndarray
    query: dict[str, tuple[np.ndarray, np.ndarray]]
    max_len: int

    @classmethod
    def from_train_data(cls, data: TrainData, max_len: int) -> SequenceData:
        n = data.n_users
        indptr, items = ordered(data.train, n)
        pos = np.arange(len(items))
        owner = np.repeat(np.arange(n), np.diff(indptr))
        sample = pos > indptr[owner]  # not a user's first item
        seq, lengths = windows(items, indptr[owner[sample]], pos[sample], max_len)
        query = {}
        for name, parts in (
            ("valid", (data.train,)),
            ("test", (data.train, data.valid)),
            ("all", (data.train, data.valid, data.test)),
        ):
            q_ptr, q_items = ordered(concat(*parts), n)
            query[name] = windows(q_items, q_ptr[:-1], q_ptr[1:], max_len)
        return cls(seq, lengths, items[sample], owner[sample], query, max_len)

    def __len__(self) -> int:
        return len(self.target)

    def queries(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(windows, lengths), one row per user: the history before ``split``'s held-out items."""
        return self.query[split]

    def epoch(
        self, *, seed: int, epoch: int, rank: int, world_size: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's share of the samples in an order seeded by (seed, epoch)."""
        order = np.random.default_rng([seed, epoch, 11]).permutation(len(self))[rank::world_size]
        return tuple(torch.from_numpy(a[order]).to(device) for a in (self.seq, self.lengths, self.target))  # type: ignore[return-value]


def is_sequential(model: Any) -> bool:
    """Whether a model (or model class) is trained on next-item windows."""
    return bool(getattr(model, "sequential", False))


def history_mask(data: TrainData, split: str) -> Interactions:
    """The items of a user's query history for ``split`` (what ``mask_history`` excludes)."""
    return data.train if split == "valid" else concat(data.train, data.valid)


@torch.no_grad()
def ranking_inputs(
    model: Any, data: TrainData, split: str, *, sequential_task: bool, mask_history: bool
) -> tuple[torch.Tensor, torch.Tensor, Interactions | None]:
    """(user vectors, item vectors, masked pairs) that rank ``split``'s held-out items.

    General task: the model's embeddings, train items masked. Sequential task: the history
    before ``split`` encoded (sequential models) and masked only with ``mask_history``.
    """
    if not sequential_task:
        ue, ie = model.inference_embeddings()
        return ue, ie, data.train
    model.eval()
    if is_sequential(model):
        ue, ie = model.query_embeddings(split), model.item_vectors()
    else:
        ue, ie = model.embeddings()
    mask = history_mask(data, split) if mask_history else None
    return ue.detach().float(), ie.detach().float(), mask


def check_task(task: str, models: list[str], split_method: str) -> None:
    """Fail before training when the task, the models and the split do not fit together."""
    from training.models.base import ModelError, model_class

    seq = [m for m in models if is_sequential(model_class(m))]
    if task == "general" and seq:
        raise ModelError(
            f"params.yaml train.models: {seq} are next-item models; set train.task: sequential "
            "(the general task would rank with histories that include the test items)"
        )
    if task == "sequential" and split_method != "temporal":
        raise ModelError(
            f"params.yaml train.task sequential needs ingest.split.method temporal "
            f"(leave-last-out by time), got {split_method!r}"
        )
