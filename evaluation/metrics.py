"""Full-ranking evaluation in chunks of users: the one place metrics are computed.

Scores of a chunk of users are materialised one block of items at a time (the whole
catalog when it fits), training items are masked, ``torch.topk`` keeps each block's top
``max(ks)`` and merges it into the chunk's, and the chunk's per-user metrics are computed
before the next chunk is scored. A block holds at most ``chunk_size`` users and
``max_chunk_mb`` of scores, so memory follows the block and the catalog (item
embeddings, one flag per item), never users x items.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from training.data import Interactions

METRICS = ("recall", "ndcg", "precision", "map", "hit")
DEFAULT_CHUNK_MB = 256
MIN_ITEM_BLOCK = 4096  # items per score block, at the least (smaller blocks make thin matmuls)


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


def chunk_rows(n_items: int, chunk_size: int, max_chunk_mb: float | None = DEFAULT_CHUNK_MB) -> int:
    """Users per chunk: ``chunk_size``, fewer when their float32 scores would pass ``max_chunk_mb``."""
    if not max_chunk_mb:
        return max(1, chunk_size)
    return max(1, min(chunk_size, int(max_chunk_mb * 2**20) // (4 * max(1, n_items))))


def chunk_shape(
    n_items: int,
    chunk_size: int,
    max_chunk_mb: float | None = DEFAULT_CHUNK_MB,
    item_block: int | None = None,
) -> tuple[int, int]:
    """(users, items) of one block of float32 scores within ``max_chunk_mb``.

    The whole catalog when ``chunk_size`` users fit; otherwise ``chunk_size`` users against
    item blocks of what the cap leaves (at least ``MIN_ITEM_BLOCK``), rather than a handful of
    users against every item: one matmul then reuses each item block across many users
    (at 1M items and 256 MB: 2048 users x 32768 items instead of 67 users x 1M items)."""
    if item_block is None:
        if not max_chunk_mb:
            return max(1, chunk_size), max(1, n_items)
        cap = int(max_chunk_mb * 2**20) // 4
        item_block = max(cap // max(1, chunk_size), min(n_items, MIN_ITEM_BLOCK))
    block = max(1, min(n_items, item_block))
    rows = chunk_size if not max_chunk_mb else min(chunk_size, int(max_chunk_mb * 2**20) // (4 * block))
    return max(1, rows), block


def iter_topk(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    users: np.ndarray,
    mask: Csr | None,
    k: int,
    chunk_size: int = 2048,
    max_chunk_mb: float | None = DEFAULT_CHUNK_MB,
    *,
    item_block: int | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(start offset into ``users``, top-k item indices, their scores) chunk by chunk;
    masked items score ``-inf`` (a user who has seen nearly everything gets some).

    Scores go into one reused buffer (no fresh allocation, and its page faults, per chunk),
    an item block at a time (``chunk_shape``); each block's top-k is merged into the chunk's
    running top-k, so the result is the top-k over all items."""
    n_items = item_emb.shape[0]
    rows, block = chunk_shape(n_items, chunk_size, max_chunk_mb, item_block)
    device = item_emb.device
    k = min(k, n_items)
    dtype = torch.result_type(user_emb, item_emb)
    with torch.no_grad():
        buf = torch.empty(min(rows, max(1, len(users))) * block, dtype=dtype, device=device)
        for start in range(0, len(users), rows):
            chunk = users[start : start + rows]
            u = user_emb[torch.from_numpy(chunk).to(device)]
            m_row, m_item = mask.rows(chunk) if mask is not None else (None, None)
            top_v = top_i = None
            for lo in range(0, n_items, block):
                hi = min(lo + block, n_items)
                scores = buf[: len(chunk) * (hi - lo)].view(len(chunk), hi - lo)
                torch.mm(u, item_emb[lo:hi].T, out=scores)
                if m_item is not None:
                    sel = (m_item >= lo) & (m_item < hi) if block < n_items else slice(None)
                    r = torch.from_numpy(m_row[sel]).to(device)
                    scores[r, torch.from_numpy(m_item[sel] - lo).to(device)] = -torch.inf
                v, i = torch.topk(scores, min(k, hi - lo), dim=1)
                if top_v is None:
                    top_v, top_i = v, i
                    continue
                both_v, both_i = torch.cat([top_v, v], 1), torch.cat([top_i, i + lo], 1)
                top_v, j = torch.topk(both_v, min(k, both_v.shape[1]), dim=1)
                top_i = torch.gather(both_i, 1, j)
            yield start, top_i.cpu().numpy(), top_v.float().cpu().numpy()
        del buf


def top_k(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    users: np.ndarray,
    mask: Csr | None,
    k: int,
    chunk_size: int = 2048,
    max_chunk_mb: float | None = DEFAULT_CHUNK_MB,
    *,
    item_block: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (item indices, scores) for ``users`` with the ``mask`` items excluded; each
    ``(len(users), k)``. The export stage's recommendations."""
    k = min(k, item_emb.shape[0])
    items = np.empty((len(users), k), dtype=np.int64)
    scores = np.empty((len(users), k), dtype=np.float32)
    chunks = iter_topk(user_emb, item_emb, users, mask, k, chunk_size, max_chunk_mb, item_block=item_block)
    for start, top, val in chunks:
        items[start : start + len(top)] = top
        scores[start : start + len(top)] = val
    return items, scores


def hit_matrix(top: np.ndarray, truth: Csr, users: np.ndarray) -> np.ndarray:
    """``hits[r, j]`` = 1.0 when ``top[r, j]`` is one of ``users[r]``'s truth items."""
    row, item = truth.rows(users)
    if not len(item):
        return np.zeros(top.shape)
    n_items = int(max(top.max(initial=0), item.max())) + 1
    truth_keys = np.sort(row * n_items + item)
    keys = np.arange(len(users))[:, None] * n_items + top
    pos = np.searchsorted(truth_keys, keys)
    pos[pos == len(truth_keys)] = 0
    return (truth_keys[pos] == keys).astype(np.float64)


def metrics_from_hits(hits: np.ndarray, n_true: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-user Recall/NDCG/Precision/MAP/HitRate at each K (binary relevance).

    Recall = hits / |truth|; NDCG against the ideal list of min(|truth|, K) hits;
    MAP@K = sum of precision at each hit rank / min(|truth|, K).
    """
    n_true = n_true.astype(np.float64)
    depth = hits.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, depth + 2))
    cum_discounts = np.cumsum(discounts)
    precision_at_r = np.cumsum(hits, axis=1) / np.arange(1, depth + 1)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        h = hits[:, :k]
        n_hit = h.sum(1)
        ideal = np.minimum(n_true, min(k, depth))
        idcg = cum_discounts[ideal.astype(np.int64) - 1]
        out[f"recall@{k}"] = n_hit / n_true
        out[f"precision@{k}"] = n_hit / k
        out[f"hit@{k}"] = (n_hit > 0).astype(np.float64)
        out[f"ndcg@{k}"] = (h * discounts[:k]).sum(1) / idcg
        out[f"map@{k}"] = (precision_at_r[:, :k] * h).sum(1) / ideal
    return out


def popularity_buckets(
    mask: Csr | None, n_items: int, split: Sequence[float]
) -> tuple[np.ndarray, list[str]]:
    """Bucket of every item by train popularity: items sorted most popular first and cut
    at the given shares of the catalog (``[0.2, 0.5]``: top 20%, next 30%, the rest)."""
    if not split:
        return np.zeros(n_items, dtype=np.int16), ["all"]
    counts = np.bincount(mask.indices, minlength=n_items) if mask is not None else np.zeros(n_items, np.int64)
    order = np.lexsort((np.arange(n_items), -counts))  # most popular first, ties by index
    cuts = [0, *(int(round(s * n_items)) for s in split), n_items]
    bucket = np.empty(n_items, dtype=np.int16)
    names = []
    for b, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        bucket[order[lo:hi]] = b
        names.append(f"{100 * lo // n_items}-{100 * hi // n_items}%")
    return bucket, names


@dataclass
class RankingResult:
    """Everything one full-ranking pass yields.

    ``means``: metric@K averaged over users (+ ``users``); ``per_user``: one array per
    metric aligned with ``users``; ``coverage``: share of the catalog recommended in
    some top-K; ``by_popularity``: per item-popularity bucket, recall of the truth
    items in that bucket (micro-averaged) and the share of recommended slots it gets;
    ``few_interactions``: means over users with at most ``few_train_max`` train items.
    """

    means: dict[str, float]
    per_user: dict[str, np.ndarray]
    users: np.ndarray
    coverage: dict[str, float] = field(default_factory=dict)
    by_popularity: dict[str, dict[str, float]] = field(default_factory=dict)
    few_interactions: dict[str, float] = field(default_factory=dict)

    def summary(self, digits: int = 6) -> dict[str, object]:
        """JSON-ready: means, coverage, buckets and few-interaction users, rounded."""

        def r(d: dict[str, float]) -> dict[str, float]:
            return {k: round(v, digits) if isinstance(v, float) else v for k, v in d.items()}

        return {
            **r(self.means),
            "coverage": r(self.coverage),
            "by_popularity": {b: r(v) for b, v in self.by_popularity.items()},
            "few_interactions": r(self.few_interactions),
        }


def rank(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    truth_pairs: Interactions,
    mask_pairs: Interactions | None,
    n_users: int,
    ks: Sequence[int] = (10, 20),
    chunk_size: int = 2048,
    *,
    max_chunk_mb: float | None = DEFAULT_CHUNK_MB,
    popularity_split: Sequence[float] | None = None,
    few_train_max: int | None = None,
    item_block: int | None = None,
) -> RankingResult:
    """One chunked full-ranking pass over users with at least one truth item.

    Per-user metrics, item coverage and popularity-bucket counts are accumulated chunk
    by chunk; only (users x metrics) and (items) sized arrays outlive a chunk.
    """
    ks = sorted(set(int(k) for k in ks))
    n_items = int(item_emb.shape[0])
    truth = Csr(truth_pairs, n_users)
    users = np.flatnonzero(truth.counts(np.arange(n_users)) > 0)
    mask = Csr(mask_pairs, n_users) if mask_pairs is not None else None
    per_user = {f"{m}@{k}": np.empty(len(users)) for k in ks for m in METRICS}
    recommended = np.zeros((len(ks), n_items), dtype=bool)
    bucket, names = popularity_buckets(mask, n_items, popularity_split or [])
    n_b = len(names)
    bucket_hits = np.zeros((len(ks), n_b))
    bucket_slots = np.zeros((len(ks), n_b))
    ue, ie = user_emb.detach().float(), item_emb.detach().float()
    chunks = iter_topk(ue, ie, users, mask, max(ks), chunk_size, max_chunk_mb, item_block=item_block)
    for start, top, _ in chunks:
        chunk = users[start : start + len(top)]
        hits = hit_matrix(top, truth, chunk)
        for name, values in metrics_from_hits(hits, truth.counts(chunk), ks).items():
            per_user[name][start : start + len(chunk)] = values
        top_bucket = bucket[top]
        for j, k in enumerate(ks):
            recommended[j, top[:, :k].ravel()] = True
            if n_b > 1:
                bucket_hits[j] += np.bincount(top_bucket[:, :k].ravel(), hits[:, :k].ravel(), minlength=n_b)
                bucket_slots[j] += np.bincount(top_bucket[:, :k].ravel(), minlength=n_b)
    means: dict[str, float] = {k: float(v.mean()) if len(v) else 0.0 for k, v in per_user.items()}
    means["users"] = int(len(users))
    result = RankingResult(means=means, per_user=per_user, users=users)
    result.coverage = {f"coverage@{k}": float(recommended[j].mean()) for j, k in enumerate(ks)}
    if n_b > 1:
        truth_in_bucket = np.bincount(bucket[truth.indices], minlength=n_b)
        items_in_bucket = np.bincount(bucket, minlength=n_b)
        for b, name in enumerate(names):
            row: dict[str, float] = {"items": int(items_in_bucket[b]), "truth_pairs": int(truth_in_bucket[b])}
            for j, k in enumerate(ks):
                row[f"recall@{k}"] = (
                    float(bucket_hits[j, b] / truth_in_bucket[b]) if truth_in_bucket[b] else 0.0
                )
                row[f"share@{k}"] = float(bucket_slots[j, b] / bucket_slots[j].sum()) if len(users) else 0.0
            result.by_popularity[name] = row
    if few_train_max is not None and mask is not None:
        few = mask.counts(users) <= few_train_max
        result.few_interactions = {
            "max_train_items": int(few_train_max),
            "users": int(few.sum()),
            **{k: float(v[few].mean()) if few.any() else 0.0 for k, v in per_user.items()},
        }
    return result


def evaluate(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    truth_pairs: Interactions,
    mask_pairs: Interactions | None,
    n_users: int,
    ks: Sequence[int] = (10, 20),
    chunk_size: int = 2048,
    return_per_user: bool = False,
    *,
    max_chunk_mb: float | None = DEFAULT_CHUNK_MB,
) -> dict[str, float] | tuple[dict[str, float], dict[str, np.ndarray], np.ndarray]:
    """Mean metrics over users with at least one item in ``truth_pairs`` (what early
    stopping, model selection and the evaluate stage all use)."""
    res = rank(
        user_emb, item_emb, truth_pairs, mask_pairs, n_users, ks, chunk_size, max_chunk_mb=max_chunk_mb
    )
    if return_per_user:
        return res.means, res.per_user, res.users
    return res.means


def evaluate_prefixes(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    sizes: Sequence[int],
    truth_pairs: Interactions,
    mask_pairs: Interactions | None,
    n_users: int,
    ks: Sequence[int] = (10, 20),
    chunk_size: int = 2048,
    *,
    max_chunk_mb: float | None = DEFAULT_CHUNK_MB,
) -> dict[str, dict[str, float]]:
    """``evaluate`` with only the first d dimensions of the user and item vectors, per size d
    (Matryoshka embeddings: what a consumer that truncates to d gets); keyed by ``str(d)``."""
    return {
        str(d): evaluate(
            user_emb[:, :d],
            item_emb[:, :d],
            truth_pairs,
            mask_pairs,
            n_users,
            ks,
            chunk_size,
            max_chunk_mb=max_chunk_mb,
        )
        for d in sizes
    }
