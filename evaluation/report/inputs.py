"""What the report page shows, as plain data (no paths): the stage loads and computes it,
``render`` only lays it out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ItemCard:
    """One item as the page draws it: a thumbnail (a ``data:`` URI) or, without one, its title."""

    idx: int
    item_id: str
    title: str
    category: str | None = None
    image: str | None = None
    missing: str | None = None  # why there is no thumbnail (no image path, unreadable, ...)


@dataclass(frozen=True)
class Gallery:
    """Nearest neighbours of sampled query items in one feature table (cosine)."""

    feature: str
    queries: list[int]
    neighbours: list[list[int]]
    similarities: list[list[float]]


@dataclass(frozen=True)
class ItemMap:
    """A 2-D projection of a sample of one feature table's items."""

    feature: str
    method: str  # e.g. "PCA (axes: 21% and 9% of variance)"
    xy: np.ndarray  # (n, 2)
    categories: list[str | None]
    titles: list[str]


@dataclass(frozen=True)
class Ranking:
    """One ranked list for an example user: ``label`` says where it comes from."""

    label: str
    items: list[int]


@dataclass(frozen=True)
class ExampleUser:
    """A sampled user: recent training history, held-out test items, each model's lists."""

    user_idx: int
    user_id: str
    history: list[int]  # most recent first, at most report.history_max
    n_history: int
    test: list[int]
    rankings: dict[str, list[Ranking]] = field(default_factory=dict)  # model -> lists


@dataclass
class ReportInputs:
    """Everything the page shows, as loaded data (no paths)."""

    ks: list[int]
    metrics: dict[str, Any]
    ingest: dict[str, Any]
    validation: dict[str, Any]
    trained: dict[str, Any]
    features: dict[str, dict[str, Any]]  # feature name -> its table's manifest
    curves: dict[str, list[dict[str, Any]]]  # model -> per-epoch rows
    significance: dict[str, Any] = field(default_factory=dict)
    semantic_ids: dict[str, dict[str, Any]] = field(default_factory=dict)  # table name -> its manifest
    items: dict[int, ItemCard] = field(default_factory=dict)  # every item the page draws
    galleries: list[Gallery] = field(default_factory=list)
    maps: list[ItemMap] = field(default_factory=list)
    examples: list[ExampleUser] = field(default_factory=list)
    ranking_notes: list[str] = field(default_factory=list)  # how the example lists were made
    per_user: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # model -> metric -> values
    history: list[dict[str, Any]] = field(default_factory=list)  # run-log records, oldest first
    notes: list[str] = field(default_factory=list)  # one-line facts about the visuals
    thumb_px: int = 64
    histogram_bins: int = 10
    max_categories: int = 10
