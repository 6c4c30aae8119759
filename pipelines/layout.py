"""Where every table, model file and report lives: the one place that joins store paths.

Stages ask a ``Layout`` for paths; libraries receive paths (or data) and never build
them. While a recorder is active (``Layout.recording()``) every path handed out is
noted with the stage that asked, which is how ``tests/test_dvc_deps.py`` checks that
each stage's ``dvc.yaml`` entry declares everything the stage really opens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = "_manifest.json"
DEFAULT_GRAPH_SET = "item_knn"


def published_tables(root: Path) -> list[str]:
    """Names of the published tables (with a manifest) in ``root``; ``_``/``.`` folders excluded."""
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(("_", ".")) and (p / MANIFEST).is_file()
    )


@dataclass
class Access:
    """Paths a stage was handed, by kind (``read`` or ``write``)."""

    read: set[Path] = field(default_factory=set)
    write: set[Path] = field(default_factory=set)


@dataclass(frozen=True)
class Layout:
    """Store, model and report roots and every path under them.

    ``store``: the Parquet feature store (tables downstream teams read); ``models``: the
    train stage's checkpoints; ``reports``: metrics, curves, validation and the HTML report.
    """

    store: Path = Path("store")
    models: Path = Path("models")
    reports: Path = Path("reports")
    _record: list[Access] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "store", Path(self.store))
        object.__setattr__(self, "models", Path(self.models))
        object.__setattr__(self, "reports", Path(self.reports))

    @contextlib.contextmanager
    def recording(self) -> Iterator[Access]:
        """Record every path handed out inside the block."""
        acc = Access()
        self._record.append(acc)
        try:
            yield acc
        finally:
            self._record.remove(acc)

    def _hand(self, path: Path, write: bool) -> Path:
        for acc in self._record:
            (acc.write if write else acc.read).add(path)
        return path

    def _r(self, path: Path) -> Path:
        return self._hand(path, False)

    def _w(self, path: Path) -> Path:
        return self._hand(path, True)

    # ---- ingest tables (written by ingest, read by everyone after it)
    def items(self, *, write: bool = False) -> Path:
        return self._hand(self.store / "items", write)

    def users(self, *, write: bool = False) -> Path:
        return self._hand(self.store / "users", write)

    def interactions(self, *, write: bool = False) -> Path:
        return self._hand(self.store / "interactions", write)

    def negatives(self, *, write: bool = False) -> Path:
        return self._hand(self.store / "negatives", write)

    def rejects(self, *, write: bool = False) -> Path:
        return self._hand(self.store / "rejects", write)

    # ---- feature tables (extract)
    @property
    def features_root(self) -> Path:
        return self.store / "features"

    def feature(self, name: str, *, write: bool = False) -> Path:
        return self._hand(self.features_root / name, write)

    def feature_rejects(self, name: str, *, write: bool = False) -> Path:
        return self._hand(self.features_root / "_rejects" / name, write)

    def feature_notes(self, name: str, *, write: bool = False) -> Path:
        return self._hand(self.features_root / "_notes" / name, write)

    def feature_previous(self, name: str, *, write: bool = False) -> Path:
        """The generation a feature table replaced (the drift baseline)."""
        return self._hand(self.features_root / "_previous" / name, write)

    def feature_names(self) -> list[str]:
        """Published feature tables (special folders and unpublished ones excluded)."""
        return published_tables(self.features_root)

    # ---- graphs (graph stage)
    def graphs(self, graph_set: str = DEFAULT_GRAPH_SET) -> Path:
        return self.store / "graphs" / graph_set

    def graph(self, name: str, *, write: bool = False, graph_set: str = DEFAULT_GRAPH_SET) -> Path:
        return self._hand(self.graphs(graph_set) / name, write)

    def graph_names(self, graph_set: str = DEFAULT_GRAPH_SET) -> list[str]:
        root = self.graphs(graph_set)
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))

    # ---- exported tables (export)
    def user_embeddings(self, model: str, *, write: bool = False) -> Path:
        return self._hand(self.store / "embeddings" / model / "users", write)

    def item_embeddings(self, model: str, *, write: bool = False) -> Path:
        return self._hand(self.store / "embeddings" / model / "items", write)

    def recommendations(self, model: str, *, write: bool = False) -> Path:
        return self._hand(self.store / "recommendations" / model, write)

    # ---- semantic IDs (semantic_ids)
    def semantic_ids(self, name: str, *, write: bool = False) -> Path:
        return self._hand(self.store / "semantic_ids" / name, write)

    def semantic_ids_root(self) -> Path:
        return self.store / "semantic_ids"

    def semantic_id_names(self) -> list[str]:
        """Published semantic-ID tables."""
        return published_tables(self.semantic_ids_root())

    # ---- models (train)
    def model_dir(self, model: str, *, write: bool = False) -> Path:
        return self._hand(self.models / model, write)

    def checkpoint(self, model: str, *, write: bool = False) -> Path:
        return self._hand(self.models / model / "model.pt", write)

    def train_summary(self, *, write: bool = False) -> Path:
        return self._hand(self.models / "train_summary.json", write)

    # ---- reports
    def ingest_stats(self, *, write: bool = False) -> Path:
        return self._hand(self.reports / "ingest.json", write)

    def validation(self, *, write: bool = False) -> Path:
        """The validation report folder (Data Docs index.html, summary.json, results.json)."""
        return self._hand(self.reports / "validation", write)

    def validation_summary(self) -> Path:
        return self._r(self.reports / "validation" / "summary.json")

    def curves(self, *, write: bool = False) -> Path:
        return self._hand(self.reports / "curves", write)

    def metrics(self, *, write: bool = False) -> Path:
        return self._hand(self.reports / "metrics.json", write)

    def per_user(self, *, write: bool = False) -> Path:
        return self._hand(self.reports / "per_user", write)

    def significance(self, *, write: bool = False) -> Path:
        return self._hand(self.reports / "significance.json", write)

    def report(self, *, write: bool = False) -> Path:
        return self._hand(self.reports / "report.html", write)

    # ---- history and runs (the snapshot runner)
    def history(self, table: Path | str) -> Path:
        """The Delta history of a published table, given by its path under the store."""
        rel = Path(table)
        if rel.is_absolute():
            rel = rel.relative_to(self.store)
        return self.store / "history" / rel

    @property
    def runs_root(self) -> Path:
        """Run manifests, the run log, lineage and the runner's skip record."""
        return self.store / "_runs"
