"""The Beam pipeline that embeds item text and images (or imports vectors) for one feature.

The extract stage (``pipelines/stages/extract.py``) runs it once per ``extract.features``
entry, with the paths of its inputs and outputs in ``FeaturePaths``:

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import torch
from apache_beam.io.parquetio import ReadFromParquetBatched, WriteToParquet, WriteToParquetBatched
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from features import schemas
from features.cache import cache_key, previous_rows, previous_table
from features.encoders import EncoderError, build_encoder
from features.errors import PlatformError
from features.inputs import INPUT_VERSION, unknown_formats
from features.store import arrow_to_embeddings, base_manifest, publish, read_manifest, write_manifest
from pipelines.beam.transforms import (
    COUNTERS,
    NAMESPACE,
    EmbedBatch,
    KeepReused,
    PrepareInput,
    Rebatch,
    table_rows,
)
from pipelines.config import BeamParams, ExtractParams, FeatureSpec, feature_input

log = logging.getLogger(__name__)
INPUT_COLUMNS = {"image": ["image_path"], "item_id": []}
EPOCH = "1970-01-01T00:00:00+00:00"  # the data time of an items table that states none


@dataclass(frozen=True)
class FeaturePaths:
    """Where one feature's pipeline reads and publishes (the stage fills it from the layout)."""

    items: Path
    table: Path
    rejects: Path
    notes: Path
    previous: Path  # where the replaced table is kept (the drift baseline)


def beam_options(beam_params: BeamParams, extra_args: list[str] | None = None) -> PipelineOptions:
    """Runner and options from params (``runner`` + ``options`` mapping + ``args`` list) and CLI."""
    flags = [f"--runner={beam_params.runner}"]
    for k, v in beam_params.options.items():
        flags.append(f"--{k}={v}")
    flags += list(beam_params.args) + list(extra_args or [])
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


def feature_plan(name: str, spec: FeatureSpec, seed: int) -> tuple[str, dict[str, Any]]:
    """(input kind, encoder spec) of one ``extract.features`` entry, checked."""
    enc_spec = spec.encoder_spec()
    kind = feature_input(spec)
    if enc_spec["encoder"] == "open_clip":
        enc_spec["modality"] = kind
        enc_spec["seed"] = seed
    return kind, enc_spec


# How to supply what an encoder could not find, by encoder (shown when building it fails).
_SUPPLY_HINTS = {
    "open_clip": (
        ("weights", "tag", "checkpoint", "allow_random_init"),
        "give a local checkpoint path in extract.features.{name}.pretrained "
        "(or allow_random_init: true for a demo only)",
    ),
    "hf-llm": (
        ("local folder", "cannot read", "cannot load"),
        "give a local model folder in extract.features.{name}.model",
    ),
    "sentence-transformers": (
        ("local folder", "cannot load"),
        "give a local model folder in extract.features.{name}.model",
    ),
}


def plan_encoder(name: str, enc_spec: dict[str, Any]) -> Any:
    """Build (not load) a feature's encoder; an ``EncoderError`` comes back naming the feature
    and, for missing weights, where to supply them."""
    try:
        return build_encoder(enc_spec)
    except EncoderError as e:
        reason = str(e).split(" Give a local checkpoint path")[0].rstrip(". ")
        words, hint = _SUPPLY_HINTS.get(str(enc_spec.get("encoder")), ((), ""))
        msg = f"extract.features.{name}: {reason}"
        if hint and any(w in reason for w in words):
            msg += "; " + hint.format(name=name)
        raise EncoderError(msg) from e


def image_limits(ex: ExtractParams, image_root: Path | None) -> dict[str, Any]:
    """The input limits PrepareInput and EmbedBatch apply, with the image folder paths must lie in."""
    bad = unknown_formats(ex.image_formats)
    if bad:
        raise PlatformError(
            f"params.yaml extract.image_formats: cannot recognise or decode {bad}; "
            "use Pillow format names such as JPEG, PNG, WEBP, GIF, BMP, TIFF"
        )
    return {
        "image_root": None if image_root is None else str(image_root),
        "image_formats": list(ex.image_formats),
        "max_image_pixels": ex.max_image_pixels,
        "max_image_bytes": ex.max_image_bytes,
        "max_batch_pixels": ex.max_batch_pixels,
        "max_text_chars": ex.max_text_chars,
        "text_separator": ex.text_separator,
    }


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


@dataclass(frozen=True)
class FeatureJob:
    """Everything one feature's pipeline needs, decided before it starts (no model loaded)."""

    name: str
    kind: str
    fields: list[str]
    enc_spec: dict[str, Any]
    desc: dict[str, Any]
    key: str
    items_dir: Path
    items_manifest: dict[str, Any]
    columns: list[str]
    limits: dict[str, Any]
    options: PipelineOptions
    threads: int | None
    previous: Path | None
    cache_reason: str

    @property
    def schema(self) -> Any:
        return schemas.feature_schema(self.desc["dim"])

    @property
    def event_ts(self) -> dt.datetime:
        """The items table's data time (never the clock: same inputs, same bytes)."""
        return dt.datetime.fromisoformat(self.items_manifest.get("created", EPOCH))


def plan_job(
    name: str,
    spec: FeatureSpec,
    *,
    paths: FeaturePaths,
    ex: ExtractParams,
    seed: int,
    extra_beam_args: list[str] | None = None,
    image_root: Path | None = None,
) -> FeatureJob:
    """Check one feature's params against the items table and describe its encoder cheaply.

    ``image_root`` is the resolved ``data.images`` folder every image path must lie in
    (None: no image folder, every image is rejected)."""
    items_dir = paths.items
    items_manifest = read_manifest(items_dir)
    kind, enc_spec = feature_plan(name, spec, seed)
    fields = list(spec.fields)
    encoder = plan_encoder(name, enc_spec)  # resolves weights, dim and id without loading them
    if encoder.modality != kind:
        raise EncoderError(
            f"params.yaml extract.features.{name}: input is {kind!r} but encoder {encoder.name!r} "
            f"embeds {encoder.modality!r}"
        )
    desc = encoder.describe()
    key = cache_key(desc["encoder_id"])
    options = beam_options(ex.beam, extra_beam_args)
    if ex.incremental:
        previous, reason = previous_table(paths.table, key, desc["dim"])
    else:
        previous, reason = None, "incremental: false"
    return FeatureJob(
        name=name,
        kind=kind,
        fields=fields,
        enc_spec=enc_spec,
        desc=desc,
        key=key,
        items_dir=items_dir,
        items_manifest=items_manifest,
        columns=_item_columns(items_dir, kind, fields),
        limits=image_limits(ex, image_root),
        options=options,
        threads=torch_threads(ex.torch_threads, options),
        previous=previous,
        cache_reason=reason,
    )


def write_features(
    tables: beam.PCollection, label: str, prefix: Path, job: FeatureJob, ex: ExtractParams
) -> None:
    """Arrow tables -> row groups of ``row_group_mb`` -> Parquet files ``<prefix>-*.parquet``."""
    _ = (
        tables
        | f"RowGroups{label}" >> beam.ParDo(Rebatch(ex.row_group_mb << 20))
        | f"WriteFeatures{label}"
        >> WriteToParquetBatched(
            str(prefix), schema=job.schema, codec=ex.compression, file_name_suffix=".parquet"
        )
    )


def build_pipeline(
    p: beam.Pipeline,
    job: FeatureJob,
    ex: ExtractParams,
    out: Path,
    rejects: Path,
    notes: Path,
    old_notes: Path,
) -> None:
    """The Beam graph of one feature, writing into the (temporary) ``out``, ``rejects``, ``notes``."""
    rows = (
        p
        | "ReadItems" >> ReadFromParquetBatched(str(job.items_dir / "*.parquet"), columns=job.columns)
        | "Rows" >> beam.FlatMap(table_rows)
    )
    if wants_reshuffle(ex.reshuffle, job.options):
        rows = rows | "Spread" >> beam.Reshuffle()
    prev = job.previous
    side = []
    if prev is not None:  # item_id -> content_hash of the cached table, on every worker
        index = (
            p
            | "ReadCacheIndex"
            >> ReadFromParquetBatched(str(prev / "*.parquet"), columns=["item_id", "content_hash"])
            | "CacheIndex" >> beam.FlatMap(lambda t: zip(*(c.to_pylist() for c in t.columns), strict=True))
        )
        side = [beam.pvalue.AsDict(index)]
    prepared = rows | "Prepare" >> beam.ParDo(
        PrepareInput(job.kind, job.fields, job.limits), *side
    ).with_outputs("rejects", "reuse", main="ok")
    embed = EmbedBatch(
        job.enc_spec,
        job.desc["dim"],
        int(job.event_ts.timestamp() * 1e6),
        threads=job.threads,
        progress_total=job.items_manifest["row_count"] if ex.progress else None,
        label=job.name,
        limits=job.limits,
    )
    batch = beam.BatchElements(min_batch_size=ex.min_batch_size, max_batch_size=ex.max_batch_size)
    embedded = (
        prepared.ok
        | "Batch" >> batch
        | "Embed" >> beam.ParDo(embed).with_outputs("rejects", "notes", main="ok")
    )
    # Embedded and reused rows are written by two writers into the same folder, not through
    # a Flatten: the in-process runners materialise a Flatten's whole input in memory, so
    # memory would follow the catalog; this way each writer is fused with its producer.
    write_features(embedded.ok, "", out / "part", job, ex)
    note_rows = [embedded.notes]
    if prev is not None:
        reuse = beam.pvalue.AsDict(prepared.reuse)  # item_id -> new item_idx of unchanged items
        reused = (
            p
            | "ReadCache" >> ReadFromParquetBatched(str(prev / "*.parquet"))
            | "KeepReused" >> beam.ParDo(KeepReused(job.schema), reuse)
        )
        write_features(reused, "Reused", out / "reused", job, ex)
        if list(old_notes.glob("*.parquet")):
            note_rows.append(
                p
                | "ReadCachedNotes" >> ReadFromParquetBatched(str(old_notes / "*.parquet"))
                | "KeepReusedNotes" >> beam.ParDo(KeepReused(schemas.FEATURE_REJECTS), reuse)
                | "NoteRows" >> beam.FlatMap(lambda t: t.to_pylist())
            )
    for label, pcolls, folder in (
        ("Rejects", (prepared.rejects, embedded.rejects), rejects),
        ("Notes", note_rows, notes),
    ):
        _ = (
            pcolls
            | f"All{label}" >> beam.Flatten()
            | f"Write{label}"
            >> WriteToParquet(
                str(folder / "part"), schema=schemas.FEATURE_REJECTS, file_name_suffix=".parquet"
            )
        )


def checked_counts(job: FeatureJob, result: Any, table_rows_: int, rejected_rows: int) -> dict[str, int]:
    """Beam counters plus derived counts; raises unless every item is embedded, reused or rejected."""
    counts = {k: _count(result, k) for k in COUNTERS}
    prev_rows = previous_rows(job.previous) if job.previous else 0
    counts["changed"] = counts["previous_seen"] - counts["reused"]
    counts["removed"] = prev_rows - counts["previous_seen"] if job.previous else 0
    problems = []
    if counts["items_read"] != job.items_manifest["row_count"]:
        problems.append(f"items {job.items_manifest['row_count']} != read {counts['items_read']}")
    if counts["items_read"] != counts["embedded"] + counts["rejected"] + counts["reused"]:
        problems.append("read != embedded + rejected + reused")
    if table_rows_ != counts["embedded"] + counts["reused"] or rejected_rows != counts["rejected"]:
        problems.append(f"table rows {table_rows_}, rejects rows {rejected_rows}")
    if problems:
        raise RuntimeError(f"extract {job.name}: counts not conserved ({'; '.join(problems)}): {counts}")
    return counts


def extract_feature(job: FeatureJob, paths: FeaturePaths, ex: ExtractParams) -> dict[str, Any]:
    """Run a planned feature's Beam pipeline; publish its table, rejects and notes atomically."""
    t0 = time.time()
    name = job.name
    log.info("extract %s: %s, cache: %s", name, job.desc["encoder_id"], job.cache_reason)
    with contextlib.ExitStack() as stack:
        keep = paths.previous if ex.keep_previous else None
        tmp = stack.enter_context(publish(paths.table, previous=keep))
        rej_tmp = stack.enter_context(publish(paths.rejects))
        notes_tmp = stack.enter_context(publish(paths.notes))
        threads_before = torch.get_num_threads()  # in-process runners set it in this process
        try:
            with beam.Pipeline(options=job.options) as p:
                build_pipeline(p, job, ex, tmp, rej_tmp, notes_tmp, paths.notes)
        finally:
            torch.set_num_threads(threads_before)
        stats = feature_stats(tmp)
        rejected_rows, noted_rows = _rows(rej_tmp), _rows(notes_tmp)
        counts = checked_counts(job, p.result, stats["rows"], rejected_rows)
        manifest = base_manifest(
            name,
            job.schema,
            stats["rows"],
            **job.desc,
            cache_key=job.key,
            input_version=INPUT_VERSION,
            input=job.kind,
            fields=job.fields if job.kind == "text" else None,
            counts=counts,
            cache={
                "used": job.previous is not None,
                "reason": job.cache_reason,
                "previous_rows": previous_rows(job.previous) if job.previous else 0,
            },
            stats=stats,
            inputs={"items": {k: job.items_manifest.get(k) for k in ("row_count", "created")}},
            event_timestamp=job.event_ts.isoformat(),
            beam={
                "runner": str(job.options.view_as(StandardOptions).runner),
                "options": ex.beam.options,
                "local_workers": local_workers(job.options),
                "torch_threads": job.threads,
            },
        )
        write_manifest(tmp, manifest)
        write_manifest(rej_tmp, base_manifest(f"{name}_rejects", schemas.FEATURE_REJECTS, rejected_rows))
        write_manifest(notes_tmp, base_manifest(f"{name}_notes", schemas.FEATURE_REJECTS, noted_rows))
    log.info(
        "extract %s: %d items read = %d embedded + %d reused + %d rejected; %d removed, %d noted "
        "(%d texts truncated, %d extra image sub-batches for max_batch_pixels) in %.1fs; weights %s",
        name,
        *(
            counts[k]
            for k in (
                "items_read",
                "embedded",
                "reused",
                "rejected",
                "removed",
                "noted",
                "text_truncated",
                "pixel_splits",
            )
        ),
        time.time() - t0,
        job.desc["weights"],
    )
    return manifest
