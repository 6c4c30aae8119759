"""Scoring in item blocks (large catalogs) gives the whole-catalog top-k and metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.metrics import Csr, chunk_shape, rank, top_k
from training.data import Interactions


def _case(seed: int = 5, n_users: int = 50, n_items: int = 83, d: int = 6):
    rng = np.random.default_rng(seed)
    ue, ie = torch.randn(n_users, d), torch.randn(n_items, d)
    train = Interactions(rng.integers(0, n_users, 400), rng.integers(0, n_items, 400))
    test = Interactions(rng.integers(0, n_users, 150), rng.integers(0, n_items, 150))
    return ue, ie, train, test, n_users, n_items


@pytest.mark.parametrize("block", [1, 7, 20, 82, 83, 500])
def test_item_blocks_give_the_whole_catalog_top_k_and_metrics(block: int) -> None:
    ue, ie, train, test, n_users, n_items = _case()
    users = np.arange(n_users)
    mask = Csr(train, n_users)
    dense = ue @ ie.T
    dense[torch.from_numpy(train.users), torch.from_numpy(train.items)] = -torch.inf
    want_v = torch.topk(dense, 20, dim=1).values.numpy()
    items, scores = top_k(ue, ie, users, mask, 20, chunk_size=9, max_chunk_mb=None, item_block=block)
    # the same items; scores up to the last bits a matmul of another shape may round differently
    np.testing.assert_allclose(scores, want_v, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.take_along_axis(dense.numpy(), items, 1), want_v, rtol=1e-6, atol=1e-6)
    assert all(len(set(r)) == 20 for r in items)  # no item twice across blocks
    whole = rank(ue, ie, test, train, n_users, (5, 20), 9, max_chunk_mb=None, popularity_split=[0.2, 0.5])
    blocked = rank(
        ue,
        ie,
        test,
        train,
        n_users,
        (5, 20),
        9,
        max_chunk_mb=None,
        popularity_split=[0.2, 0.5],
        item_block=block,
    )
    assert blocked.means == pytest.approx(whole.means, abs=1e-12)
    assert blocked.coverage == whole.coverage and blocked.by_popularity == whole.by_popularity


def test_block_shape_stays_under_the_memory_cap() -> None:
    assert chunk_shape(100, 2048, 256) == (2048, 100)  # the whole catalog fits
    assert chunk_shape(1_000_000, 2048, 256) == (2048, 32768)  # 2048 users x 32768 items x 4 B = 256 MB
    rows, block = chunk_shape(10**9, 2048, 1)
    assert block == 4096 and rows * block * 4 <= 2**20 and rows >= 1
    assert chunk_shape(10**9, 2048, 0.001) == (1, 4096)  # never fewer than one user
    assert chunk_shape(50, 7, None) == (7, 50)
