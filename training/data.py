"""Training data: interactions by split, item features, kNN graphs, read from explicit paths.

``DataSource`` names the tables (the stage layer fills it from the store layout); it is
small and picklable, so Ray Train workers load the data themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.reader import load_features
from features.store import read_manifest, read_table


@dataclass
class Interactions:
    """Parallel int64 arrays of (user, item) pairs; ``times`` (int64) when the log has
    timestamps (the sequential task orders histories by them)."""

    users: np.ndarray
    items: np.ndarray
    times: np.ndarray | None = None

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


@dataclass(frozen=True)
class DataSource:
    """Paths of everything a model reads: id tables, interactions, features and graphs by name."""

    items: Path
    users: Path
    interactions: Path
    features: dict[str, Path] = field(default_factory=dict)
    graphs: dict[str, Path] = field(default_factory=dict)


def load_interactions(source: DataSource) -> tuple[int, int, dict[str, Interactions]]:
    n_items = read_manifest(source.items)["row_count"]
    n_users = read_manifest(source.users)["row_count"]
    cols = ["user_idx", "item_idx", "split"]
    files = sorted(Path(source.interactions).glob("*.parquet"))
    if files and "timestamp" in pq.read_schema(files[0]).names:
        cols.append("timestamp")
    table = read_table(source.interactions, columns=cols)
    timed = "timestamp" in table.column_names and table.column("timestamp").null_count == 0
    out = {}
    for name in ("train", "valid", "test"):
        part = table.filter(pc.equal(table.column("split"), name))
        out[name] = Interactions(
            users=part.column("user_idx").to_numpy().astype(np.int64),
            items=part.column("item_idx").to_numpy().astype(np.int64),
            times=part.column("timestamp").to_numpy().astype(np.int64) if timed else None,
        )
    return n_users, n_items, out


def load_knn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of a kNN edge table."""
    t = read_table(path, columns=["item_idx", "neighbor_idx"])
    return t.column("item_idx").to_numpy(), t.column("neighbor_idx").to_numpy()


def load_train_data(source: DataSource) -> TrainData:
    """Everything a model needs: the interactions, each named feature and its kNN graph."""
    n_users, n_items, splits = load_interactions(source)
    data = TrainData(n_users=n_users, n_items=n_items, **splits)
    for name, path in source.features.items():
        f = load_features(path, n_items=n_items)
        data.features[name] = f.matrix
        data.feature_modality[name] = f.manifest.get("modality", "unknown")
        graph = source.graphs.get(name)
        if graph is not None and graph.exists():
            data.knn[name] = load_knn(graph)
    return data
