"""Validate stage: run every suite and the drift checks, write the report, fail loudly.

A failure raises ``ValidationFailed`` whose message names table, check/expectation and a
sample of failing ids; the CLI turns it into exit code 1 so ``dvc repro`` stops.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from features.errors import PlatformError
from features.store import read_manifest
from validation.drift import DriftOutcome, drift, skipped, summary_lines
from validation.gx_runner import TableOutcome, validate_frame
from validation.report import failure_summary, write_report
from validation.suites import Suite, feature_suite, graph_suite, interactions_suite, items_suite
from validation.vectors import FeatureVectors, load_vectors

log = logging.getLogger(__name__)

PREVIOUS_DIR = "_previous"  # store/features/_previous/<name>: the snapshot extract replaced


class ValidationFailed(PlatformError, RuntimeError):
    """At least one expectation failed; the message names table, expectation and sample."""


def merge(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """Deep merge: per-feature overrides may set one drift level without repeating the rest."""
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def feature_thresholds(th: dict[str, Any], name: str) -> dict[str, Any]:
    return merge(th, (th.get("feature_overrides") or {}).get(name))


def _subdirs(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _selected(table: str, tables: list[str] | None) -> bool:
    return not tables or any(table == t.rstrip("/") or table.startswith(t.rstrip("/") + "/") for t in tables)


Step = Callable[[], tuple[Suite, DriftOutcome | None]]


def feature_drift(
    store: Path, name: str, params: dict[str, Any], vectors: FeatureVectors | None = None
) -> DriftOutcome:
    """Drift of ``features/<name>`` against ``features/_previous/<name>`` (skipped when absent)."""
    th = feature_thresholds(params["validate"], name)
    table, current = f"features/{name}", store / "features" / name
    if not (th.get("drift") or {}).get("enabled", True):
        return skipped(table, current, "drift disabled in params (validate.drift.enabled)")
    d = drift(
        store / "features" / PREVIOUS_DIR / name,
        current,
        {**(th.get("drift") or {}), "pair_sample": th.get("pair_sample", 2000)},
        seed=int(params.get("seed", 0)),
        table=table,
        sample_size=int(th.get("sample_size", 5)),
        current_vectors=vectors,
    )
    log.info("drift %s: %s%s", table, d.status, f" ({d.reason})" if d.reason else "")
    for line in summary_lines(d):
        log.warning(line)
    return d


def plan(
    store: Path,
    params: dict[str, Any],
    graphs: Path | None = None,
    tables: list[str] | None = None,
) -> list[tuple[str, Step]]:
    """(table name, step) for every table of the store that ``tables`` selects.

    ``tables`` holds names such as ``interactions``, ``features`` (all of them) or
    ``features/text_minilm``; an empty selection means every table. A feature step loads
    the table once and returns its suite and its drift against the previous snapshot.
    """
    th = {**params["validate"], "sample_size": int(params["validate"].get("sample_size", 5))}
    seed = int(params.get("seed", 0))
    graphs = graphs if graphs is not None else store / "graphs" / "item_knn"
    found: list[tuple[str, Step]] = [
        ("interactions", lambda: (interactions_suite(store, th), None)),
        ("items", lambda: (items_suite(store, th), None)),
    ]

    def feature_step(name: str) -> tuple[Suite, DriftOutcome]:
        fv = load_vectors(store / "features" / name)
        suite = feature_suite(store, name, feature_thresholds(th, name), seed, vectors=fv)
        return suite, feature_drift(store, name, params, fv)

    def graph_step(path: Path) -> tuple[Suite, None]:
        return graph_suite(path, th, int(read_manifest(store / "items")["row_count"])), None

    for name in _subdirs(store / "features"):
        found.append((f"features/{name}", lambda name=name: feature_step(name)))
    for name in _subdirs(graphs):
        found.append((f"graphs/{name}", lambda g=graphs / name: graph_step(g)))
    unknown = [t for t in tables or [] if not any(_selected(name, [t]) for name, _ in found)]
    if unknown:
        raise PlatformError(
            f"validate --table {unknown}: no such table under {store} (graphs {graphs}); "
            f"found {[name for name, _ in found]}"
        )
    return [(name, step) for name, step in found if _selected(name, tables)]


def run_tables(
    store: Path, params: dict[str, Any], graphs: Path | None = None, tables: list[str] | None = None
) -> tuple[list[TableOutcome], list[DriftOutcome]]:
    """GX outcome of every selected table, and drift of every selected feature table."""
    sample_size = int(params["validate"].get("sample_size", 5))
    outcomes: list[TableOutcome] = []
    drifts: list[DriftOutcome] = []
    for table, step in plan(store, params, graphs, tables):
        suite, d = step()
        outcome = validate_frame(
            table,
            suite.frame,
            suite.expectations,
            id_columns=suite.id_columns,
            sample_size=sample_size,
            notes=suite.notes,
        )
        outcomes.append(outcome)
        if d is not None:
            drifts.append(d)
        log.info(
            "validate %s: %d rows, %d expectations, %s",
            table,
            outcome.rows,
            len(outcome.expectations),
            "passed" if outcome.success else f"FAILED {len(outcome.failures)}",
        )
    return outcomes, drifts


def run(
    params: dict[str, Any],
    store: Path,
    out_dir: Path,
    graphs: Path | None = None,
    tables: list[str] | None = None,
) -> dict[str, Any]:
    """Run the suites (and drift) selected by ``tables``; write the report; raise on failure."""
    outcomes, drifts = run_tables(store, params, graphs, tables)
    summary = write_report(outcomes, out_dir, drifts)
    if not summary["success"]:
        raise ValidationFailed(
            f"validation failed (report: {out_dir / 'index.html'}):\n" + failure_summary(outcomes, drifts)
        )
    return summary
