"""Full-ranking evaluation in chunks of users: the one place metrics are computed.

Scores of a chunk of users against all items are materialised one chunk at a time
(``chunk_size x n_items``), training items are masked, and ``torch.topk`` keeps the
top ``max(ks)``. Memory follows the chunk, not users x items.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from training.data import Interactions

METRICS = ("recall", "ndcg", "precision", "map", "hit")


class Csr:
    """Items per user as CSR arrays (indptr, indices)."""

    def __init__(self, pairs: Interactions, n_users: int) -> None:
        order = np.lexsort((pairs.items, pairs.users))
        self.indices = pairs.items[order]
        self.indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(pairs.users, minlength=n_users), out=self.indptr[1:])

    def counts(self, users: np.ndarray) -> np.ndarray:
        return self.indptr[users + 1] - self.indptr[users]

    def rows(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row position within ``users``, item) of every stored entry of those users."""
        counts = self.counts(users)
        row = np.repeat(np.arange(len(users)), counts)
        starts = np.repeat(self.indptr[users], counts)
        offs = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return row, self.indices[starts + offs]


def topk_items(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    users: np.ndarray,
    mask: Csr | None,
    k: int,
    chunk_size: int = 2048,
) -> np.ndarray:
    """Top-k item indices for ``users`` with the ``mask`` items excluded; (len(users), k)."""
    out = np.empty((len(users), k), dtype=np.int64)
    with torch.no_grad():
        for start in range(0, len(users), chunk_size):
            chunk = users[start : start + chunk_size]
            scores = user_emb[torch.from_numpy(chunk)] @ item_emb.T
            if mask is not None:
                row, item = mask.rows(chunk)
                scores[torch.from_numpy(row), torch.from_numpy(item)] = -torch.inf
            out[start : start + len(chunk)] = torch.topk(scores, k, dim=1).indices.numpy()
    return out


def per_user_metrics(
    top: np.ndarray, truth: Csr, users: np.ndarray, ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """Per-user Recall/NDCG/Precision/MAP/HitRate at each K (binary relevance)."""
    n_items = int(max(top.max(initial=0), truth.indices.max(initial=0))) + 1
    row, item = truth.rows(users)
    truth_keys = np.sort(row * n_items + item)
    keys = np.arange(len(users))[:, None] * n_items + top
    pos = np.searchsorted(truth_keys, keys)
    pos[pos == len(truth_keys)] = 0
    hits = (truth_keys[pos] == keys).astype(np.float64) if len(truth_keys) else np.zeros(top.shape)
    n_true = truth.counts(users).astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    cum_discounts = np.cumsum(discounts)
    cum_hits = np.cumsum(hits, axis=1)
    precision_at_r = cum_hits / np.arange(1, top.shape[1] + 1)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        h = hits[:, :k]
        n_hit = h.sum(1)
        idcg = cum_discounts[np.minimum(n_true, k).astype(np.int64) - 1]
        out[f"recall@{k}"] = n_hit / n_true
        out[f"precision@{k}"] = n_hit / k
        out[f"hit@{k}"] = (n_hit > 0).astype(np.float64)
        out[f"ndcg@{k}"] = (h * discounts[:k]).sum(1) / idcg
        out[f"map@{k}"] = (precision_at_r[:, :k] * h).sum(1) / np.minimum(n_true, k)
    return out


def evaluate(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    truth_pairs: Interactions,
    mask_pairs: Interactions | None,
    n_users: int,
    ks: Sequence[int] = (10, 20),
    chunk_size: int = 2048,
    return_per_user: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, np.ndarray], np.ndarray]:
    """Mean metrics over users with at least one item in ``truth_pairs``."""
    truth = Csr(truth_pairs, n_users)
    users = np.flatnonzero(truth.counts(np.arange(n_users)) > 0)
    mask = Csr(mask_pairs, n_users) if mask_pairs is not None else None
    top = topk_items(user_emb.detach().float(), item_emb.detach().float(), users, mask, max(ks), chunk_size)
    per_user = per_user_metrics(top, truth, users, ks)
    means = {k: float(v.mean()) if len(v) else 0.0 for k, v in per_user.items()}
    means["users"] = int(len(users))
    if return_per_user:
        return means, per_user, users
    return means
