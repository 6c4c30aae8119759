"""Runs a list of GX Core expectations over a pandas frame and summarises the outcome.

GX has no polars data source, so tables arrive as pandas. Vector checks are done on
scalar columns computed for validation (norm, non-finite count, ...), so built-in
expectations can say them.

Speed: GX runs with the ``BASIC`` result format (counts plus a few unexpected values).
Asking GX for unexpected row indexes (``COMPLETE`` + ``unexpected_index_column_names``)
took 12 s for three all-failing expectations at 100k rows; instead the failing ids are
looked up here from the unexpected values, which is exact for per-value expectations. Table-
level expectations (row count, mean) carry their sample in ``meta["sample"]``.
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
    """One expectation's result: what was checked, whether it held and which rows broke it."""

    expectation: str
    column: str | None
    kwargs: dict[str, Any]
    success: bool
    check: str | None = None
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
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
        # GX pins this module's logger at INFO; its "temporary directory" line is noise here.
        logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
        _CONTEXT = gx.get_context(mode="ephemeral")
        _CONTEXT.variables.progress_bars = ProgressBarsConfig(globally=False)
        _CONTEXT.data_sources.add_pandas("store")
    return _CONTEXT


def plain(v: Any) -> Any:
    """numpy scalars/containers -> JSON-friendly Python values."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set):
        return [plain(x) for x in v]
    if hasattr(v, "item"):
        try:
            return v.item()
        except (ValueError, AttributeError):
            return str(v)
    return v


def _row_ids(df: pd.DataFrame, mask: pd.Series, id_columns: list[str], n: int) -> list[Any]:
    rows = df.loc[mask, id_columns].head(n)
    if len(id_columns) == 1:
        return plain(rows[id_columns[0]].tolist())
    return [",".join(f"{c}={plain(r[c])}" for c in id_columns) for _, r in rows.iterrows()]


def failing_sample(
    df: pd.DataFrame, column: str | None, values: list[Any], id_columns: list[str], n: int
) -> list[Any]:
    """Ids of up to ``n`` rows whose ``column`` holds one of GX's unexpected ``values``.

    Exact for per-value expectations (in set, between, unique, not null): any row with
    an unexpected value is itself unexpected.
    """
    if not values:
        return []
    if not id_columns or column is None or column not in df:
        return plain(values[:n])
    if all(v is None for v in values):
        mask = df[column].isna()
    else:
        try:
            mask = df[column].isin([v for v in values if v is not None])
        except TypeError:  # unhashable values (lists, dicts): show the values themselves
            return plain(values[:n])
    return _row_ids(df, mask, id_columns, n) or plain(values[:n])


def _exception_message(info: Any) -> list[str]:
    """GX reports an expectation that raised (e.g. a missing column) in ``exception_info``."""
    infos = [info] if isinstance(info, dict) and "raised_exception" in info else (info or {}).values()
    return [
        str(i.get("exception_message"))[:300]
        for i in infos
        if isinstance(i, dict) and i.get("raised_exception")
    ][:1]


def validate_frame(
    table: str,
    df: pd.DataFrame,
    expectations: list[Any],
    *,
    id_columns: list[str] | None = None,
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
    fmt = {"result_format": "BASIC", "partial_unexpected_count": max(1, sample_size)}
    res = vd.run(batch_parameters={"dataframe": df}, result_format=fmt)
    outcomes = []
    for r in res.results:
        cfg = r.expectation_config
        kw = {k: plain(v) for k, v in cfg.kwargs.items() if k != "batch_id"}
        meta = cfg.meta or {}
        success = bool(r.success)
        sample: list[Any] = []
        if not success:
            if meta.get("sample") is not None:
                sample = plain(list(meta["sample"])[:sample_size])
            else:
                values = list(r.result.get("partial_unexpected_list") or [])
                sample = failing_sample(df, kw.get("column"), values, id_columns or [], sample_size)
            sample = sample or _exception_message(r.exception_info)
        outcomes.append(
            ExpectationOutcome(
                expectation=cfg.type,
                column=kw.get("column"),
                kwargs={
                    k: v
                    for k, v in kw.items()
                    if k != "column" and not (k == "value_set" and len(v or []) > 10)
                },
                success=success,
                check=meta.get("check"),
                observed=plain(r.result.get("observed_value")),
                unexpected_count=plain(r.result.get("unexpected_count")),
                unexpected_percent=plain(r.result.get("unexpected_percent")),
                sample=sample,
            )
        )
    return TableOutcome(
        table=table, rows=len(df), success=bool(res.success), expectations=outcomes, notes=notes or {}
    )
