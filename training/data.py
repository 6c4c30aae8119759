"""Training data read from the store: interactions by split, item features, kNN graphs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from features.store import read_embedding_matrix, read_manifest, read_table


@dataclass
class Interactions:
    """Parallel int64 arrays of (user, item) pairs."""

    users: np.ndarray
    items: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class TrainData:
    n_users: int
    n_items: int
    train: Interactions
    valid: Interactions
    test: Interactions
    features: dict[str, np.ndarray] = field(default_factory=dict)
    feature_modality: dict[str, str] = field(default_factory=dict)
    knn: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def split(self, name: str) -> Interactions:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]


def load_interactions(store: Path) -> tuple[int, int, dict[str, Interactions]]:
    n_items = read_manifest(store / "items")["row_count"]
    n_users = read_manifest(store / "users")["row_count"]
    table = read_table(store / "interactions", columns=["user_idx", "item_idx", "split"])
    out = {}
    for name in ("train", "valid", "test"):
        part = table.filter(pc.equal(table.column("split"), name))
        out[name] = Interactions(
            users=part.column("user_idx").to_numpy().astype(np.int64),
            items=part.column("item_idx").to_numpy().astype(np.int64),
        )
    return n_users, n_items, out


def load_knn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of a kNN edge table."""
    t = read_table(path, columns=["item_idx", "neighbor_idx"])
    return t.column("item_idx").to_numpy(), t.column("neighbor_idx").to_numpy()


def load_train_data(store: Path, features: list[str] | None = None, graphs: Path | None = None) -> TrainData:
    """Everything a model needs; features and graphs by name from the store."""
    n_users, n_items, splits = load_interactions(store)
    data = TrainData(n_users=n_users, n_items=n_items, **splits)
    for name in features or []:
        path = store / "features" / name
        matrix, _ = read_embedding_matrix(path, n_items)
        data.features[name] = matrix
        data.feature_modality[name] = read_manifest(path).get("modality", "unknown")
        if graphs is not None and (graphs / name).exists():
            data.knn[name] = load_knn(graphs / name)
    return data
