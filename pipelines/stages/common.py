"""What several stages share: the training data's paths from the layout, model lists."""

from __future__ import annotations

from pipelines.config import Config
from pipelines.layout import Layout
from training.data import DataSource, TrainData, load_train_data
from training.models.base import model_class


def data_source(layout: Layout, features: list[str]) -> DataSource:
    """Absolute paths (Ray workers may run elsewhere) of the tables a model reads."""
    return DataSource(
        items=layout.items().resolve(),
        users=layout.users().resolve(),
        interactions=layout.interactions().resolve(),
        features={n: layout.feature(n).resolve() for n in features},
        graphs={n: layout.graph(n).resolve() for n in features},
    )


def load_data(config: Config, layout: Layout) -> TrainData:
    """Interactions, every configured feature and its kNN graph."""
    return load_train_data(data_source(layout, config.feature_names()))


def model_features(name: str, config: Config) -> list[str]:
    """The feature tables a model reads (none for id-only models)."""
    return config.feature_names() if model_class(name).needs_features else []
