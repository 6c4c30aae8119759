"""Runs a list of GX Core expectations over a pandas frame and summarises the outcome.

GX has no polars data source, so tables arrive as pandas. Vector checks are done on
scalar columns computed for validation (norm, non-finite count, ...), so built-in
expectations can say them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
import great_expectations as gx  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

log = logging.getLogger(__name__)
_CONTEXT: Any = None


@dataclass
class ExpectationOutcome:
    expectation: str
    column: str | None
    kwargs: dict[str, Any]
    success: bool
    observed: Any = None
    unexpected_count: int | None = None
    sample: list[Any] = field(default_factory=list)


@dataclass
class TableOutcome:
    table: str
    rows: int
    success: bool
    expectations: list[ExpectationOutcome]
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if not e.success]


def context() -> Any:
    """One ephemeral GX context per process (building one costs about a second)."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = gx.get_context(mode="ephemeral")
        _CONTEXT.variables.progress_bars = ProgressBarsConfig(globally=False)
        _CONTEXT.data_sources.add_pandas("store")
    return _CONTEXT


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        try:
            return v.item()
        except (ValueError, AttributeError):
            return str(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def validate_frame(
    table: str,
    df: pd.DataFrame,
    expectations: list[Any],
    *,
    id_column: str | None = None,
    sample_size: int = 5,
    notes: dict[str, Any] | None = None,
) -> TableOutcome:
    """Run ``expectations`` (GX expectation objects) over ``df``; failing ids are sampled."""
    ctx = context()
    ds = ctx.data_sources.get("store")
    asset_name = f"{table}-{len(ds.assets)}"
    batch_def = ds.add_dataframe_asset(asset_name).add_batch_definition_whole_dataframe("all")
    suite = ctx.suites.add(gx.ExpectationSuite(name=asset_name))
    for e in expectations:
        suite.add_expectation(e)
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=asset_name, data=batch_def, suite=suite))
    fmt: dict[str, Any] = {"result_format": "COMPLETE" if id_column else "SUMMARY"}
    if id_column:
        fmt["unexpected_index_column_names"] = [id_column]
    res = vd.run(batch_parameters={"dataframe": df}, result_format=fmt)
    outcomes = []
    for r in res.results:
        kw = {k: _plain(v) for k, v in r.expectation_config.kwargs.items() if k != "batch_id"}
        idx = r.result.get("unexpected_index_list") or []
        sample = [_plain(x.get(id_column)) if isinstance(x, dict) else _plain(x) for x in idx[:sample_size]]
        if not sample:
            sample = _plain(list(r.result.get("partial_unexpected_list") or [])[:sample_size])
        outcomes.append(
            ExpectationOutcome(
                expectation=r.expectation_config.type,
                column=kw.get("column"),
                kwargs=kw,
                success=bool(r.success),
                observed=_plain(r.result.get("observed_value")),
                unexpected_count=_plain(r.result.get("unexpected_count")),
                sample=sample,
            )
        )
    return TableOutcome(
        table=table, rows=len(df), success=bool(res.success), expectations=outcomes, notes=notes or {}
    )
