"""Validate stage: run every suite and the drift checks, write the report, fail loudly.

Every path comes from the ``Layout``; the suites in ``validation`` get paths, loaded
vectors and typed thresholds. A failure raises ``ValidationFailed`` whose message names
table, check/expectation and a sample of failing ids; the CLI turns it into exit code 1
so ``dvc repro`` stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from features.errors import PlatformError
from features.store import read_manifest
from pipelines.config import Config, Thresholds
from pipelines.layout import Layout
from pipelines.runs import Lineage
from pipelines.stages.semantic_ids import published as semantic_id_tables
from validation.data_docs import failure_summary, write_report
from validation.drift import DriftOutcome, drift, skipped, summary_lines
from validation.gx_runner import TableOutcome, validate_frame
from validation.semantic_ids import semantic_ids_suite
from validation.suites import Suite, feature_suite, graph_suite, interactions_suite, items_suite
from validation.vectors import FeatureVectors, load_vectors

log = logging.getLogger(__name__)


class ValidationFailed(PlatformError, RuntimeError):
    """At least one expectation failed; the message names table, expectation and sample."""


Step = Callable[[], tuple[Suite, DriftOutcome | None]]


def selected(table: str, tables: list[str] | None) -> bool:
    """``tables`` selects ``table`` by its name or a folder above it (``features``)."""
    return not tables or any(table == t.rstrip("/") or table.startswith(t.rstrip("/") + "/") for t in tables)


def feature_drift(
    previous: Path,
    current: Path,
    th: Thresholds,
    *,
    seed: int,
    table: str,
    vectors: FeatureVectors | None = None,
) -> DriftOutcome:
    """Drift of ``current`` against ``previous`` (skipped when absent or disabled), logged."""
    if not th.drift.enabled:
        d = skipped(table, current, "drift disabled in params (validate.drift.enabled)")
    else:
        d = drift(previous, current, th, seed=seed, table=table, current_vectors=vectors)
    log.info("drift %s: %s%s", table, d.status, f" ({d.reason})" if d.reason else "")
    for line in summary_lines(d):
        log.warning(line)
    return d


def plan(config: Config, layout: Layout, tables: list[str] | None = None) -> list[tuple[str, Step]]:
    """(table name, step) for every table of the store that ``tables`` selects.

    ``tables`` holds names such as ``interactions``, ``features`` (all of them) or
    ``features/text_minilm``; an empty selection means every table. A feature step loads
    the table once and returns its suite and its drift against the previous generation.
    """
    v, seed = config.validate_params, config.seed

    def n_rows(path: Path) -> int:
        return int(read_manifest(path)["row_count"])

    def interactions_step() -> tuple[Suite, None]:
        n_users, n_items = n_rows(layout.users()), n_rows(layout.items())
        return interactions_suite(layout.interactions(), n_users, n_items, v), None

    def items_step() -> tuple[Suite, None]:
        return items_suite(layout.items(), v, config.extract.modalities()), None

    def feature_step(name: str) -> tuple[Suite, DriftOutcome]:
        th, path = v.for_feature(name), layout.feature(name)
        fv = load_vectors(path)
        suite = feature_suite(fv, layout.items(), layout.feature_rejects(name), th, seed, name=name)
        previous = layout.feature_previous(name)
        d = feature_drift(previous, path, th, seed=seed, table=f"features/{name}", vectors=fv)
        return suite, d

    def graph_step(name: str) -> tuple[Suite, None]:
        return graph_suite(layout.graph(name), v, n_rows(layout.items())), None

    def semantic_ids_step(name: str) -> tuple[Suite, None]:
        return semantic_ids_suite(layout.semantic_ids(name), v.semantic_ids), None

    found: list[tuple[str, Step]] = [("interactions", interactions_step), ("items", items_step)]
    found += [(f"features/{n}", lambda n=n: feature_step(n)) for n in layout.feature_names()]
    found += [(f"graphs/{n}", lambda n=n: graph_step(n)) for n in layout.graph_names()]
    found += [(f"semantic_ids/{n}", lambda n=n: semantic_ids_step(n)) for n in semantic_id_tables(layout)]
    unknown = [t for t in tables or [] if not any(selected(name, [t]) for name, _ in found)]
    if unknown:
        raise PlatformError(
            f"validate --table {unknown}: no such table under {layout.store}; "
            f"found {[name for name, _ in found]}"
        )
    return [(name, step) for name, step in found if selected(name, tables)]


def run_tables(
    config: Config, layout: Layout, tables: list[str] | None = None
) -> tuple[list[TableOutcome], list[DriftOutcome]]:
    """GX outcome of every selected table, and drift of every selected feature table."""
    sample_size = config.validate_params.sample_size
    outcomes: list[TableOutcome] = []
    drifts: list[DriftOutcome] = []
    for table, step in plan(config, layout, tables):
        suite, d = step()
        outcome = validate_frame(
            table,
            suite.frame,
            suite.expectations,
            id_columns=suite.id_columns,
            sample_size=sample_size,
            notes=suite.notes,
        )
        # Checks of manifest facts (reject share, random weights) join the GX outcome.
        outcome.expectations.extend(suite.checks)
        outcome.success = outcome.success and all(c.success for c in suite.checks)
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


def _table_path(layout: Layout, name: str) -> Path:
    kind, _, rest = name.partition("/")
    by_kind = {"features": layout.feature, "graphs": layout.graph, "semantic_ids": layout.semantic_ids}
    return by_kind[kind](rest) if rest else getattr(layout, kind)()


def run(config: Config, layout: Layout, tables: list[str] | None = None) -> dict[str, Any]:
    """Run the suites (and drift) selected by ``tables``; write the report; raise on failure.

    First the lineage: the tables validated (and then trained on) must be the ones their
    runs recorded, built from the inputs now in the store — not a table left by a killed
    run, nor features of another catalog version (``pipelines.runs``)."""
    consumed = [_table_path(layout, name) for name, _ in plan(config, layout, tables)]
    Lineage(layout.store, layout.runs_root).require_consistent(consumed)
    log.info("validate: lineage of %d table(s) consistent", len(consumed))
    outcomes, drifts = run_tables(config, layout, tables)
    out_dir = layout.validation(write=True)
    summary = write_report(outcomes, out_dir, drifts)
    if not summary["success"]:
        raise ValidationFailed(
            f"validation failed (report: {out_dir / 'index.html'}):\n" + failure_summary(outcomes, drifts)
        )
    return summary
