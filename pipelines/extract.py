"""Extract stage: an Apache Beam pipeline that embeds item text and images (or imports vectors).

One pipeline run per feature in ``params.yaml`` (``extract.features``):

    items ─ReadParquet─▶ rows ─(Reshuffle)─▶ PrepareInput ─▶ BatchElements ─▶ EmbedBatch ─┐
                                            │ reuse: unchanged since the cached table         ├▶ Parquet
    previous table ─ReadParquet─────────────┴─▶ KeepReused (bit for bit) ─────────────────────┘
    rejects and notes of both steps ─▶ _rejects/<name>, _notes/<name>

Runs on the DirectRunner here (in-memory or multi-process); any other runner and its
options pass through ``extract.beam`` (or ``--beam-arg`` on the CLI) with no code change.
The launcher never loads a model (encoders describe themselves from their configs) and
never holds the catalog: counts come from Beam metrics, statistics are streamed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
from apache_beam.io.parquetio import ReadFromParquetBatched, WriteToParquet, WriteToParquetBatched
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from features import schemas
from features.cache import cache_key, previous_rows, previous_table, publish_keeping_previous
from features.encoders import EncoderError, build_encoder
from features.inputs import INPUT_VERSION
from features.store import arrow_to_embeddings, base_manifest, publish, read_manifest, write_manifest
from pipelines.extract_transforms import (
    COUNTERS,
    NAMESPACE,
    EmbedBatch,
    KeepReused,
    PrepareInput,
    Rebatch,
    table_rows,
)

log = logging.getLogger(__name__)
REJECTS_DIR = "_rejects"
NOTES_DIR = "_notes"
FEATURE_KEYS = ("input", "fields")  # the rest of a feature's params are encoder options
INPUT_COLUMNS = {"image": ["image_path"], "item_id": []}


def beam_options(beam_params: dict[str, Any], extra_args: list[str] | None = None) -> PipelineOptions:
    """Runner and options from params (``runner`` + ``options`` mapping + ``args`` list) and CLI."""
    flags = [f"--runner={beam_params.get('runner', 'DirectRunner')}"]
    for k, v in (beam_params.get("options") or {}).items():
        flags.append(f"--{k}={v}")
    flags += list(beam_params.get("args") or []) + list(extra_args or [])
    return PipelineOptions(flags=flags)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_workers(options: PipelineOptions) -> int | None:
    """Worker processes of a DirectRunner run on this machine (None for other runners)."""
    if "DirectRunner" not in str(options.view_as(StandardOptions).runner or "DirectRunner"):
        return None
    d = options.view_as(DirectOptions)
    if (d.direct_running_mode or "in_memory") == "in_memory":
        return 1
    return d.direct_num_workers or cpu_count()


def torch_threads(setting: Any, options: PipelineOptions) -> int | None:
    """Threads per worker: ``auto`` = this machine's cores / local workers (None elsewhere)."""
    if setting not in (None, "auto"):
        return int(setting)
    workers = local_workers(options)
    return None if workers is None else max(1, cpu_count() // workers)


def wants_reshuffle(setting: Any, options: PipelineOptions) -> bool:
    """Spread items over workers: a small catalog file is one split, so one worker would get it all."""
    if setting not in (None, "auto"):
        return bool(setting)
    return local_workers(options) != 1


def feature_stats(folder: Path) -> dict[str, Any]:
    """Row count and norm summary, streamed batch by batch (memory follows one batch)."""
    rows, nonfinite, total = 0, 0, 0.0
    lo, hi = np.inf, -np.inf
    for f in sorted(folder.glob("*.parquet")):
        for rb in pq.ParquetFile(f).iter_batches(columns=["embedding"], batch_size=8192):
            e = arrow_to_embeddings(rb.column(0))
            n = np.linalg.norm(e, axis=1)
            rows += len(n)
            nonfinite += int((~np.isfinite(e).all(axis=1)).sum())
            if len(n):
                total += float(n.sum())
                lo, hi = min(lo, float(n.min())), max(hi, float(n.max()))
    return {
        "rows": rows,
        "nonfinite_rows": nonfinite,
        "norm_mean": total / rows if rows else None,
        "norm_min": lo if rows else None,
        "norm_max": hi if rows else None,
    }


def _rows(folder: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in folder.glob("*.parquet"))


def _count(result: Any, name: str) -> int:
    res = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE).with_name(name))["counters"]
    return int(sum(c.committed or c.attempted or 0 for c in res))


def feature_plan(name: str, spec: dict[str, Any], seed: int) -> tuple[str, dict[str, Any]]:
    """(input kind, encoder spec) of one ``extract.features`` entry, checked."""
    enc_spec = {k: v for k, v in spec.items() if k not in FEATURE_KEYS}
    kind = spec.get("input", "item_id" if enc_spec.get("encoder") == "precomputed" else "text")
    if kind not in ("text", "image", "item_id"):
        raise ValueError(
            f"params.yaml extract.features.{name}.input: expected 'text', 'image' or 'item_id', got {kind!r}"
        )
    if enc_spec.get("encoder") == "open_clip":
        enc_spec.setdefault("modality", kind)
        enc_spec.setdefault("seed", seed)
    return kind, enc_spec


def _item_columns(items_dir: Path, kind: str, fields: list[str]) -> list[str]:
    files = sorted(items_dir.glob("*.parquet"))
    have = pq.ParquetFile(files[0]).schema_arrow.names if files else []
    need = ["item_idx", "item_id"] + (fields if kind == "text" else INPUT_COLUMNS[kind])
    missing = [c for c in need if c not in have]
    if missing:
        raise ValueError(
            f"table {items_dir}: missing column(s) {missing} needed for {kind} input; has {have}"
        )
    return need


def extract_feature(
    name: str,
    spec: dict[str, Any],
    *,
    store: Path,
    extract_params: dict[str, Any],
    seed: int,
    extra_beam_args: list[str] | None = None,
) -> dict[str, Any]:
    """Run one feature's Beam pipeline and publish its table, rejects and notes atomically."""
    t0 = time.time()
    ex = extract_params
    items_dir = store / "items"
    items_manifest = read_manifest(items_dir)
    kind, enc_spec = feature_plan(name, spec, seed)
    fields = list(spec.get("fields", ["title", "description"]))
    encoder = build_encoder(enc_spec)  # cheap: resolves weights, dim and id without loading them
    if encoder.modality != kind:
        raise EncoderError(
            f"params.yaml extract.features.{name}: input is {kind!r} but encoder {encoder.name!r} "
            f"embeds {encoder.modality!r}"
        )
    desc = encoder.describe()
    key = cache_key(desc["encoder_id"])
    schema = schemas.feature_schema(desc["dim"])
    columns = _item_columns(items_dir, kind, fields)
    event_ts = dt.datetime.fromisoformat(items_manifest["created"])
    options = beam_options(ex.get("beam", {}), extra_beam_args)
    threads = torch_threads(ex.get("torch_threads", "auto"), options)
    limits = {
        "max_image_pixels": int(ex.get("max_image_pixels", 50_000_000)),
        "max_image_bytes": int(ex.get("max_image_bytes", 50_000_000)),
        "max_text_chars": int(ex.get("max_text_chars", 20_000)),
        "text_separator": str(ex.get("text_separator", ". ")),
    }
    out_dir = store / "features" / name
    rej_dir = store / "features" / REJECTS_DIR / name
    notes_dir = store / "features" / NOTES_DIR / name
    prev, cache_reason = (
        (None, "incremental: false")
        if not ex.get("incremental", True)
        else previous_table(out_dir, key, desc["dim"])
    )
    prev_rows = previous_rows(prev) if prev else 0
    log.info("extract %s: %s, cache: %s", name, desc["encoder_id"], cache_reason)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(
            publish_keeping_previous(out_dir, keep_previous=bool(ex.get("keep_previous", True)))
        )
        rej_tmp = stack.enter_context(publish(rej_dir))
        notes_tmp = stack.enter_context(publish(notes_dir))
        with beam.Pipeline(options=options) as p:
            rows = (
                p
                | "ReadItems" >> ReadFromParquetBatched(str(items_dir / "*.parquet"), columns=columns)
                | "Rows" >> beam.FlatMap(table_rows)
            )
            if wants_reshuffle(ex.get("reshuffle", "auto"), options):
                rows = rows | "Spread" >> beam.Reshuffle()
            side = []
            if prev is not None:
                side = [
                    beam.pvalue.AsDict(
                        p
                        | "ReadCacheIndex"
                        >> ReadFromParquetBatched(
                            str(prev / "*.parquet"), columns=["item_id", "content_hash"]
                        )
                        | "CacheIndex"
                        >> beam.FlatMap(lambda t: zip(*(c.to_pylist() for c in t.columns), strict=True))
                    )
                ]
            prepared = rows | "Prepare" >> beam.ParDo(PrepareInput(kind, fields, limits), *side).with_outputs(
                "rejects", "reuse", main="ok"
            )
            embedded = (
                prepared.ok
                | "Batch"
                >> beam.BatchElements(
                    min_batch_size=int(ex["min_batch_size"]), max_batch_size=int(ex["max_batch_size"])
                )
                | "Embed"
                >> beam.ParDo(
                    EmbedBatch(
                        enc_spec,
                        desc["dim"],
                        int(event_ts.timestamp() * 1e6),
                        threads=threads,
                        progress_total=items_manifest["row_count"] if ex.get("progress", True) else None,
                        label=name,
                    )
                ).with_outputs("rejects", "notes", main="ok")
            )
            tables, notes = [embedded.ok], [embedded.notes]
            if prev is not None:
                reuse = beam.pvalue.AsDict(prepared.reuse)
                tables.append(
                    p
                    | "ReadCache" >> ReadFromParquetBatched(str(prev / "*.parquet"))
                    | "KeepReused" >> beam.ParDo(KeepReused(schema), reuse)
                )
                if list(notes_dir.glob("*.parquet")):
                    notes.append(
                        p
                        | "ReadCachedNotes" >> ReadFromParquetBatched(str(notes_dir / "*.parquet"))
                        | "KeepReusedNotes" >> beam.ParDo(KeepReused(schemas.FEATURE_REJECTS), reuse)
                        | "NoteRows" >> beam.FlatMap(lambda t: t.to_pylist())
                    )
            _ = (
                tables
                | "AllFeatures" >> beam.Flatten()
                | "RowGroups" >> beam.ParDo(Rebatch(int(ex.get("row_group_mb", 64)) << 20))
                | "WriteFeatures"
                >> WriteToParquetBatched(
                    str(tmp / "part"),
                    schema=schema,
                    codec=ex.get("compression", "zstd"),
                    file_name_suffix=".parquet",
                )
            )
            _ = (
                (prepared.rejects, embedded.rejects)
                | "AllRejects" >> beam.Flatten()
                | "WriteRejects"
                >> WriteToParquet(
                    str(rej_tmp / "part"), schema=schemas.FEATURE_REJECTS, file_name_suffix=".parquet"
                )
            )
            _ = (
                notes
                | "AllNotes" >> beam.Flatten()
                | "WriteNotes"
                >> WriteToParquet(
                    str(notes_tmp / "part"), schema=schemas.FEATURE_REJECTS, file_name_suffix=".parquet"
                )
            )
        counts = {k: _count(p.result, k) for k in COUNTERS}
        counts["changed"] = counts["previous_seen"] - counts["reused"]
        counts["removed"] = prev_rows - counts["previous_seen"] if prev is not None else 0
        stats = feature_stats(tmp)
        rejected_rows, noted_rows = _rows(rej_tmp), _rows(notes_tmp)
        problems = []
        if counts["items_read"] != items_manifest["row_count"]:
            problems.append(f"items {items_manifest['row_count']} != read {counts['items_read']}")
        if counts["items_read"] != counts["embedded"] + counts["rejected"] + counts["reused"]:
            problems.append("read != embedded + rejected + reused")
        if stats["rows"] != counts["embedded"] + counts["reused"] or rejected_rows != counts["rejected"]:
            problems.append(f"table rows {stats['rows']}, rejects rows {rejected_rows}")
        if problems:
            raise RuntimeError(f"extract {name}: counts not conserved ({'; '.join(problems)}): {counts}")
        beam_facts = {
            "runner": str(options.view_as(StandardOptions).runner),
            "options": ex.get("beam", {}).get("options"),
            "local_workers": local_workers(options),
            "torch_threads": threads,
        }
        manifest = base_manifest(
            name,
            schema,
            stats["rows"],
            **desc,
            cache_key=key,
            input_version=INPUT_VERSION,
            input=kind,
            fields=fields if kind == "text" else None,
            counts=counts,
            cache={"used": prev is not None, "reason": cache_reason, "previous_rows": prev_rows},
            stats=stats,
            inputs={
                "items": {"row_count": items_manifest["row_count"], "created": items_manifest["created"]}
            },
            event_timestamp=event_ts.isoformat(),
            beam=beam_facts,
            seconds=round(time.time() - t0, 2),
        )
        write_manifest(tmp, manifest)
        write_manifest(rej_tmp, base_manifest(f"{name}_rejects", schemas.FEATURE_REJECTS, rejected_rows))
        write_manifest(notes_tmp, base_manifest(f"{name}_notes", schemas.FEATURE_REJECTS, noted_rows))
    log.info(
        "extract %s: %d items read = %d embedded + %d reused + %d rejected; %d removed, %d noted "
        "(%d texts truncated) in %.1fs; weights %s",
        name,
        counts["items_read"],
        counts["embedded"],
        counts["reused"],
        counts["rejected"],
        counts["removed"],
        counts["noted"],
        counts["text_truncated"],
        time.time() - t0,
        desc["weights"],
    )
    return manifest


def run(params: dict[str, Any], store: Path, extra_beam_args: list[str] | None = None) -> dict[str, Any]:
    ex = params["extract"]
    seed = int(params.get("seed", 0))
    return {
        name: extract_feature(
            name, spec, store=store, extract_params=ex, seed=seed, extra_beam_args=extra_beam_args
        )
        for name, spec in ex["features"].items()
    }
