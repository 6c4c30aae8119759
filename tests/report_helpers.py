"""A rendered report for the report tests: the tiny store run through validate, train,
evaluate, export and report (the stages ``dvc repro`` runs), once per test module."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pipelines.layout import Layout


def run_through_report(root: Path, config: Any, work: Path) -> tuple[Layout, dict[str, Any]]:
    """Copy the tiny store to ``work`` and run every stage after graph on it; returns the
    layout and the report stage's summary."""
    from pipelines.stages import evaluate, export, report, train, validate

    shutil.copytree(root / "store", work / "store")
    layout = Layout(store=work / "store", models=work / "models", reports=work / "reports")
    shutil.copytree(root / "reports", work / "reports", dirs_exist_ok=True)
    validate.run(config, layout)
    train.run(config, layout)
    evaluate.run(config, layout)
    export.run(config, layout)
    return layout, report.run(config, layout)
