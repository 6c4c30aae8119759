"""``validate-drift``: compare any two snapshots of a feature table outside the pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.stages.validate import ValidationFailed, feature_thresholds
from validation.drift import drift
from validation.report import build_summary, failure_summary, write_report


def run(
    params: dict[str, Any],
    previous: Path,
    current: Path,
    *,
    feature: str | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Print the drift summary as JSON; raise ``ValidationFailed`` past a fail level."""
    th = feature_thresholds(params["validate"], feature or current.name)
    if not (current / "_manifest.json").exists():
        raise FileNotFoundError(
            f"validate-drift --current {current}: not a published table (no _manifest.json)"
        )
    if not (previous / "_manifest.json").exists():
        raise FileNotFoundError(
            f"validate-drift --previous {previous}: not a published table (no _manifest.json)"
        )
    d = drift(
        previous,
        current,
        {**(th.get("drift") or {}), "pair_sample": th.get("pair_sample", 2000)},
        seed=int(params.get("seed", 0)),
        table=feature or current.name,
        sample_size=int(th.get("sample_size", 5)),
    )
    summary = write_report([], out, [d]) if out is not None else build_summary([], [d])
    print(json.dumps(summary["drift"], indent=2, default=str))
    for w in summary["warnings"]:
        print(f"warning: {w}")
    if d.status == "fail":
        raise ValidationFailed("drift failed:\n" + failure_summary([], [d]))
    return summary
