"""Report stage: reads the run's metrics, validation, ingest and feature manifests and
writes ``reports/report.html``."""

from __future__ import annotations

import json
from typing import Any

from evaluation.report import ReportInputs, render
from features.store import read_manifest
from pipelines.config import Config
from pipelines.layout import Layout
from pipelines.stages.semantic_ids import published as semantic_id_tables


def _json(path: Any) -> Any:
    return json.loads(path.read_text())


def run(config: Config, layout: Layout) -> dict[str, Any]:
    curves_dir = layout.curves()
    significance = layout.significance()
    inputs = ReportInputs(
        ks=list(config.evaluate.ks),
        metrics=_json(layout.metrics()),
        ingest=_json(layout.ingest_stats()),
        validation=_json(layout.validation_summary()),
        trained=_json(layout.train_summary()),
        features={name: read_manifest(layout.feature(name)) for name in config.feature_names()},
        curves={f.stem: _json(f) for f in sorted(curves_dir.glob("*.json"))},
        significance=_json(significance) if significance.exists() else {},
        semantic_ids={name: read_manifest(layout.semantic_ids(name)) for name in semantic_id_tables(layout)},
    )
    out = layout.report(write=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(inputs))
    return {"report": str(out), "models": sorted(inputs.metrics)}
