"""``validate-drift``: compare any two snapshots of a feature table outside the pipeline.

An ad-hoc command (not a ``dvc.yaml`` stage): the two tables are given as paths.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from features.store import MANIFEST
from pipelines.config import Config
from pipelines.stages.validate import ValidationFailed
from validation.data_docs import build_summary, failure_summary, write_report
from validation.drift import drift


def run(
    config: Config,
    previous: Path,
    current: Path,
    feature: str | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Print the drift summary as JSON (and write a report to ``out``); raise
    ``ValidationFailed`` past a fail level. ``feature`` (default: the current table's
    folder name) picks the per-feature thresholds."""
    previous, current = Path(previous), Path(current)
    name = feature or current.name
    for flag, path in (("--current", current), ("--previous", previous)):
        if not (path / MANIFEST).exists():
            raise FileNotFoundError(f"validate-drift {flag} {path}: not a published table (no {MANIFEST})")
    th = config.validate_params.for_feature(name)
    d = drift(previous, current, th, seed=config.seed, table=name)  # asked for: runs even if disabled
    summary = write_report([], out, [d]) if out is not None else build_summary([], [d])
    print(json.dumps(summary["drift"], indent=2, default=str))
    for w in summary["warnings"]:
        print(f"warning: {w}")
    if d.status == "fail":
        raise ValidationFailed("drift failed:\n" + failure_summary([], [d]))
    return summary
