"""Validate stage: run every suite, write the report, exit non-zero on any failure."""

from __future__ import annotations

import html
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from features.errors import PlatformError
from validation.gx_runner import TableOutcome, validate_frame
from validation.suites import feature_suite, graph_suite, interactions_suite, items_suite

log = logging.getLogger(__name__)


class ValidationFailed(PlatformError, RuntimeError):
    """At least one expectation failed; the message names table, expectation and sample."""


def run_suites(
    store: Path, params: dict[str, Any], features: list[str] | None = None, graphs: Path | None = None
) -> list[TableOutcome]:
    th = params["validate"]
    seed = int(params.get("seed", 0))
    outcomes: list[TableOutcome] = []
    plans: list[tuple[str, Any]] = [
        ("interactions", lambda: interactions_suite(store, th)),
        ("items", lambda: items_suite(store, th)),
    ]
    feats = (
        features
        if features is not None
        else sorted(
            p.name for p in (store / "features").iterdir() if p.is_dir() and not p.name.startswith("_")
        )
        if (store / "features").exists()
        else []
    )
    for name in feats:
        th_f = {**th, **((th.get("feature_overrides") or {}).get(name) or {})}
        plans.append(
            (f"features/{name}", lambda name=name, th_f=th_f: feature_suite(store, name, th_f, seed))
        )
    if graphs is not None and graphs.exists():
        for g in sorted(p for p in graphs.iterdir() if p.is_dir() and not p.name.startswith(".")):
            plans.append((f"graphs/{g.name}", lambda g=g: graph_suite(g, th)))
    for table, build in plans:
        df, exps, notes = build()
        id_col = notes.pop("id_column", None)
        outcome = validate_frame(table, df, exps, id_column=id_col, notes=notes)
        outcomes.append(outcome)
        log.info(
            "validate %s: %d rows, %d expectations, %s",
            table,
            outcome.rows,
            len(exps),
            "passed" if outcome.success else f"FAILED {len(outcome.failures)}",
        )
    return outcomes


def failure_summary(outcomes: list[TableOutcome]) -> str:
    lines = []
    for o in outcomes:
        for f in o.failures:
            col = f" column '{f.column}'" if f.column else ""
            obs = f", observed {f.observed}" if f.observed is not None else ""
            cnt = f", {f.unexpected_count} unexpected" if f.unexpected_count else ""
            lines.append(f"table {o.table}: {f.expectation}{col} failed{cnt}{obs}; sample: {f.sample}")
    return "\n".join(lines)


def write_report(outcomes: list[TableOutcome], out_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "success": all(o.success for o in outcomes),
        "tables": {
            o.table: {
                "rows": o.rows,
                "success": o.success,
                "expectations": len(o.expectations),
                "failed": len(o.failures),
                "notes": o.notes,
            }
            for o in outcomes
        },
        "failures": failure_summary(outcomes).splitlines(),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out_dir / "results.json").write_text(
        json.dumps([asdict(o) for o in outcomes], indent=1, default=str) + "\n"
    )
    rows = []
    for o in outcomes:
        for e in o.expectations:
            rows.append(
                f"<tr class={'ok' if e.success else 'bad'}><td>{html.escape(o.table)}</td>"
                f"<td>{html.escape(e.expectation)}</td><td>{html.escape(str(e.column or ''))}</td>"
                f"<td>{'pass' if e.success else 'FAIL'}</td><td>{html.escape(str(e.observed))}</td>"
                f"<td>{e.unexpected_count if e.unexpected_count is not None else ''}</td>"
                f"<td>{html.escape(str(e.sample))}</td></tr>"
            )
    page = f"""<!doctype html><meta charset=utf-8><title>Validation report</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}
.bad{{background:#fdd}} .ok{{background:#efe}}</style>
<h1>Validation: {"passed" if summary["success"] else "FAILED"}</h1>
<table><tr><th>table</th><th>expectation</th><th>column</th><th>result</th><th>observed</th>
<th>unexpected</th><th>sample</th></tr>{"".join(rows)}</table>"""
    (out_dir / "index.html").write_text(page)
    return summary


def run(params: dict[str, Any], store: Path, out_dir: Path, graphs: Path | None = None) -> dict[str, Any]:
    outcomes = run_suites(store, params, graphs=graphs)
    summary = write_report(outcomes, out_dir)
    if not summary["success"]:
        raise ValidationFailed("validation failed:\n" + failure_summary(outcomes))
    return summary
