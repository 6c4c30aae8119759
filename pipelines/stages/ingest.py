"""Ingest stage: a raw dataset (any adapter) -> items, users, interactions, negatives, rejects.

Every input row ends up accepted, an explicit negative, or a reject with its reason;
the split statistics go to ``reports/ingest.json`` (a DVC metric).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from typing import Any

import polars as pl

from features import schemas
from features.store import fingerprint_file, write_table
from pipelines.adapters import read_source
from pipelines.config import Config
from pipelines.layout import Layout
from pipelines.sources import RawData
from pipelines.tables import ingest, ingest_kwargs

log = logging.getLogger(__name__)


def read_raw(config: Config) -> RawData:
    """The dataset ``data`` describes, with missing images fetched when ``ingest.download`` is on."""
    data = config.data.model_dump()
    raw = read_source(data)
    download = config.effective_ingest().download
    if download.enabled:
        from pipelines.download import fetch_missing_images, record_download_rejects

        fetched, rejects = fetch_missing_images(raw, data, download.model_dump())
        record_download_rejects(data, rejects)
        # The download fills in image paths only: the readers' row counts still hold.
        raw = dataclasses.replace(
            fetched,
            item_input_rows=raw.item_input_rows,
            interaction_input_rows=raw.interaction_input_rows,
        )
    return raw


def data_time(interactions: pl.DataFrame) -> str:
    """The data's own time: its latest interaction timestamp (the epoch when the log has
    none). Tables carry this, never the clock, so the same inputs give the same bytes; a
    run's wall-clock times are in its run manifest."""
    ts = interactions.get_column("timestamp").max() if "timestamp" in interactions.columns else None
    seconds = int(ts) if ts is not None else 0
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()


def run(config: Config, layout: Layout) -> dict[str, Any]:
    ing = config.effective_ingest()
    raw = read_raw(config)
    out = ingest(raw, **ingest_kwargs(ing, config.seed))
    data = config.data
    inputs = {str(p): fingerprint_file(p) for p in raw.inputs if p.is_file()}
    common = {
        "inputs": inputs,
        "source": data.source,
        "profile": data.profile,
        "format": raw.facts,
        "created": data_time(out["interactions"]),
    }
    write_table(layout.items(write=True), out["items"].to_arrow(), schemas.ITEMS, **common)
    write_table(layout.users(write=True), out["users"].to_arrow(), schemas.USERS, **common)
    write_table(
        layout.interactions(write=True),
        out["interactions"].to_arrow(),
        schemas.INTERACTIONS,
        split=ing.split.model_dump(),
        split_stats=out["split_stats"],
        split_hash=out["split_hash"],
        **common,
    )
    write_table(
        layout.negatives(write=True),
        out["negatives"].to_arrow(),
        schemas.INTERACTIONS,
        note="explicit negatives (ingest.negative_ratings): never used as positives",
        **common,
    )
    write_table(
        layout.rejects(write=True), out["rejects"].to_arrow(), schemas.REJECTS, counts=out["counts"], **common
    )
    summary = {
        "profile": data.profile,
        "source": data.source,
        "counts": out["counts"],
        "split": out["split_stats"],
        "split_method": ing.split.method,
        "split_hash": out["split_hash"],
        "dataset": out["summary"],
    }
    stats_path = layout.ingest_stats(write=True)
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    stats_path.write_text(json.dumps(summary, indent=2) + "\n")
    c = out["counts"]
    log.info(
        "ingest %s: items %d in = %d accepted + %d rejected; interactions %d in = %d accepted + "
        "%d negatives + %d rejected; %d users; split %s",
        data.profile or data.source,
        c["items"]["input"],
        c["items"]["accepted"],
        c["items"]["rejected"],
        c["interactions"]["input"],
        c["interactions"]["accepted"],
        c["interactions"]["negatives"],
        c["interactions"]["rejected"],
        c["users"],
        out["split_hash"][:12],
    )
    return summary
