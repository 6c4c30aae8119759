"""The one random toy dataset the model tests train on (seeded; recorded weight hashes
in tests/test_models.py depend on its exact random draws)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.data import Interactions, TrainData


def toy_data(
    n_users: int,
    n_items: int,
    seed: int = 0,
    *,
    n_pairs: int = 300,
    features: Sequence[tuple[str, int]] = (),
    modalities: bool = False,
) -> TrainData:
    """Random (user, item) pairs split 80/10/10, plus random feature matrices ``(name, dim)``
    (with ``feature_modality`` set from the names when ``modalities``)."""
    rng = np.random.default_rng(seed)
    pairs = np.array(sorted({(int(u), int(i)) for u, i in rng.integers(0, [n_users, n_items], (n_pairs, 2))}))
    split = rng.random(len(pairs))

    def part(mask: np.ndarray) -> Interactions:
        return Interactions(users=pairs[mask, 0], items=pairs[mask, 1])

    data = TrainData(
        n_users, n_items, part(split < 0.8), part((split >= 0.8) & (split < 0.9)), part(split >= 0.9)
    )
    if features:
        data.features = {n: rng.normal(size=(n_items, d)).astype(np.float32) for n, d in features}
    if modalities:
        data.feature_modality = {n: "image" if n == "image" else "text" for n, _ in features}
    return data
