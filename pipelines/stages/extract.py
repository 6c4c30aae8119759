"""Extract stage: one feature table per ``extract.features`` entry, through the Beam pipeline.

Only new or changed items are embedded; the rest are reused from the previous table
(``extract.incremental``), which is kept as the drift baseline (``extract.keep_previous``).
"""

from __future__ import annotations

from typing import Any

from pipelines.beam.extract import FeaturePaths, extract_feature
from pipelines.config import Config
from pipelines.layout import Layout


def feature_paths(layout: Layout, name: str) -> FeaturePaths:
    return FeaturePaths(
        items=layout.items(),
        table=layout.feature(name, write=True),
        rejects=layout.feature_rejects(name, write=True),
        notes=layout.feature_notes(name, write=True),
        previous=layout.feature_previous(name, write=True),
    )


def run(config: Config, layout: Layout, beam_args: list[str] | None = None) -> dict[str, Any]:
    ex = config.extract
    return {
        name: extract_feature(
            name, spec, paths=feature_paths(layout, name), ex=ex, seed=config.seed, extra_beam_args=beam_args
        )
        for name, spec in ex.features.items()
    }
