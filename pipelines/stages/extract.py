"""Extract stage: one feature table per ``extract.features`` entry, through the Beam pipeline.

Only new or changed items are embedded; the rest are reused from the previous table
(``extract.incremental``), which is kept as the drift baseline (``extract.keep_previous``).
Image paths must lie inside ``data.images`` (resolved here, symlinks followed); with no
image folder configured every image is rejected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.beam.extract import FeaturePaths, extract_feature, plan_job
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


def image_root(config: Config) -> Path | None:
    """``data.images`` resolved (from the working directory, symlinks followed), or None."""
    return Path(config.data.images).resolve() if config.data.images else None


def run(config: Config, layout: Layout, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Plan every feature first (a missing model or weights stops the stage before any work),
    then run their pipelines one after the other."""
    ex = config.extract
    root = image_root(config)
    planned = []
    for name, spec in ex.features.items():
        paths = feature_paths(layout, name)
        job = plan_job(
            name, spec, paths=paths, ex=ex, seed=config.seed, extra_beam_args=beam_args, image_root=root
        )
        planned.append((job, paths))
    return {job.name: extract_feature(job, paths, ex) for job, paths in planned}
