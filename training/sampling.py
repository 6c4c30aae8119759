"""Vectorised (user, positive, negative) sampling: one uniform negative per positive."""

from __future__ import annotations

import numpy as np

from training.data import Interactions


class NegativeSampler:
    """Negatives drawn uniformly from items seen in train, never a user's own train item.

    Collisions are re-drawn in vectorised rounds (no Python loop per triple).
    """

    def __init__(self, train: Interactions, n_items: int) -> None:
        self.n_items = n_items
        self.pos_keys = np.unique(train.users * n_items + train.items)
        self.candidates = np.unique(train.items)

    def sample(self, users: np.ndarray, rng: np.random.Generator, max_rounds: int = 100) -> np.ndarray:
        neg = self.candidates[rng.integers(0, len(self.candidates), len(users))]
        todo = np.arange(len(users))  # only the clashing draws are checked again
        for _ in range(max_rounds):
            keys = users[todo] * self.n_items + neg[todo]
            pos = np.searchsorted(self.pos_keys, keys)
            pos[pos == len(self.pos_keys)] = 0
            todo = todo[self.pos_keys[pos] == keys]
            if not len(todo):
                break
            neg[todo] = self.candidates[rng.integers(0, len(self.candidates), len(todo))]
        return neg


def epoch_shard(
    train: Interactions, sampler: NegativeSampler, *, seed: int, epoch: int, rank: int, world_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This worker's triples for one epoch.

    The shuffle depends on (seed, epoch) only, so all workers agree on it and take
    disjoint equal-length shards; negatives depend on (seed, epoch, rank). With one
    worker this is exactly the single-process sample.
    """
    perm = np.random.default_rng([seed, epoch]).permutation(len(train))
    per_worker = len(perm) // world_size
    mine = perm[rank * per_worker : (rank + 1) * per_worker]
    users, pos = train.users[mine], train.items[mine]
    neg = sampler.sample(users, np.random.default_rng([seed, epoch, rank, 1]))
    return users, pos, neg
