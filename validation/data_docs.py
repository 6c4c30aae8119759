"""The validation report: summary.json (read by the pipeline report), results.json and index.html.

``summary.json`` keeps the keys other stages read (``success``, ``tables`` with
rows/expectations/failed/success/notes, ``failures`` as lines) and adds
``failure_details``, ``drift`` and ``warnings``. ``index.html`` plays the role of GX
Data Docs: one self-contained page per run, a DVC output of the validate stage.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from validation.drift import DriftOutcome, summary_lines
from validation.gx_runner import ExpectationOutcome, TableOutcome


def _label(e: ExpectationOutcome) -> str:
    col = f", column '{e.column}'" if e.column else ""
    return f"{e.check} ({e.expectation}{col})" if e.check else f"{e.expectation}{col}"


def failure_line(table: str, e: ExpectationOutcome, rows: int) -> str:
    cnt = ""
    if e.unexpected_count:
        pct = f" ({e.unexpected_percent:.3g}%)" if e.unexpected_percent is not None else ""
        cnt = f", {e.unexpected_count} of {rows} rows unexpected{pct}"
    obs = f", observed {e.observed}" if e.observed is not None else ""
    expected = f"; expected {e.kwargs}" if e.kwargs else ""
    return f"table {table}: {_label(e)} failed{cnt}{obs}{expected}; sample: {e.sample}"


def failure_summary(outcomes: list[TableOutcome], drifts: list[DriftOutcome] | None = None) -> str:
    lines = [failure_line(o.table, f, o.rows) for o in outcomes for f in o.failures]
    for d in drifts or []:
        lines += summary_lines(d, ("fail",))
    return "\n".join(lines)


def _drift_entry(d: DriftOutcome) -> dict[str, Any]:
    return {
        "status": d.status,
        "reason": d.reason,
        "previous": d.previous,
        "current": d.current,
        "counts": d.counts,
        "shares": d.shares(),
        "stats": d.stats,
        "checks": {
            c.metric: {"value": c.value, "warn": c.warn, "fail": c.fail, "status": c.status} for c in d.checks
        },
    }


def build_summary(outcomes: list[TableOutcome], drifts: list[DriftOutcome]) -> dict[str, Any]:
    drift_failed = any(d.status == "fail" for d in drifts)
    return {
        "success": all(o.success for o in outcomes) and not drift_failed,
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
        "failures": failure_summary(outcomes, drifts).splitlines(),
        "failure_details": [
            {
                "table": o.table,
                "check": f.check,
                "expectation": f.expectation,
                "column": f.column,
                "unexpected_count": f.unexpected_count,
                "observed": f.observed,
                "sample": f.sample,
            }
            for o in outcomes
            for f in o.failures
        ]
        + [
            {
                "table": f"drift {d.table}",
                "check": c.metric,
                "expectation": "drift",
                "column": None,
                "unexpected_count": None,
                "observed": c.value,
                "sample": c.sample,
            }
            for d in drifts
            for c in d.failures
        ],
        "drift": {d.table: _drift_entry(d) for d in drifts},
        "warnings": [ln for d in drifts for ln in summary_lines(d, ("warn",))],
    }


def _e(v: Any) -> str:
    return html.escape(str(v) if v is not None else "")


def _table(head: list[str], rows: list[tuple[str, list[Any]]]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(f"<tr class={cls}>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for cls, r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def render_html(summary: dict[str, Any], outcomes: list[TableOutcome], drifts: list[DriftOutcome]) -> str:
    tables = _table(
        ["table", "rows", "expectations", "failed", "result", "notes"],
        [
            (
                "ok" if v["success"] else "bad",
                [
                    t,
                    v["rows"],
                    v["expectations"],
                    v["failed"],
                    "pass" if v["success"] else "FAIL",
                    ", ".join(f"{k}: {x}" for k, x in v["notes"].items()),
                ],
            )
            for t, v in summary["tables"].items()
        ],
    )
    failures = "".join(f"<li>{_e(x)}</li>" for x in summary["failures"]) or "<li>none</li>"
    warnings = "".join(f"<li>{_e(x)}</li>" for x in summary["warnings"]) or "<li>none</li>"
    drift_rows = []
    for d in drifts:
        if not d.checks:
            drift_rows.append(("skip", [d.table, "", "", "", "", d.status, d.reason]))
        for c in d.checks:
            cls = {"fail": "bad", "warn": "warn", "ok": "ok"}.get(c.status, "skip")
            drift_rows.append(
                (cls, [d.table, c.metric, c.value, c.warn, c.fail, c.status, d.reason or c.sample])
            )
    drift = _table(["feature", "metric", "value", "warn", "fail", "status", "reason / sample"], drift_rows)
    counts = _table(
        ["feature", "previous", "current", "unchanged", "changed", "added", "removed"],
        [
            (
                "skip",
                [d.table]
                + [
                    d.counts.get(k, "")
                    for k in ("previous", "current", "unchanged", "changed", "added", "removed")
                ],
            )
            for d in drifts
            if d.counts
        ],
    )
    details = []
    for o in outcomes:
        details.append(f"<h3>{_e(o.table)} ({o.rows} rows)</h3>")
        details.append(
            _table(
                ["check", "expectation", "column", "expected", "result", "observed", "unexpected", "sample"],
                [
                    (
                        "ok" if e.success else "bad",
                        [
                            e.check,
                            e.expectation,
                            e.column,
                            e.kwargs,
                            "pass" if e.success else "FAIL",
                            e.observed,
                            e.unexpected_count,
                            e.sample if not e.success else "",
                        ],
                    )
                    for e in o.expectations
                ],
            )
        )
    return f"""<!doctype html><meta charset=utf-8><title>Validation report</title>
<style>body{{font-family:sans-serif;max-width:1400px}} td,th{{padding:2px 8px;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top}} .bad{{background:#fdd}} .ok{{background:#efe}}
.warn{{background:#fec}}</style>
<h1>Validation: {"passed" if summary["success"] else "FAILED"}</h1>
<h2>Tables</h2>{tables}
<h2>Failures</h2><ul>{failures}</ul>
<h2>Drift against the previous snapshot</h2>{drift}{counts}
<h2>Warnings</h2><ul>{warnings}</ul>
<h2>Expectations</h2>{"".join(details)}
"""


def write_report(
    outcomes: list[TableOutcome], out_dir: Path, drifts: list[DriftOutcome] | None = None
) -> dict[str, Any]:
    drifts = drifts or []
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = build_summary(outcomes, drifts)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    results = {"tables": [asdict(o) for o in outcomes], "drift": [asdict(d) for d in drifts]}
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out_dir / "index.html").write_text(render_html(summary, outcomes, drifts))
    return summary
