"""Extract stage: an Apache Beam pipeline that embeds item text and images.

One pipeline run per feature in ``params.yaml`` (``extract.features``). Runs on the
DirectRunner here; any other runner and its options pass through ``extract.beam``
(or ``--beam-arg`` on the CLI) with no code change. Each encoder is built once per
DoFn instance in ``setup()``, never per bundle or element.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from features import schemas
from features.encoders import build_encoder
from features.inputs import Rejected, content_hash, decode_image, item_text, read_image_bytes
from features.store import (
    arrow_to_embeddings,
    base_manifest,
    embeddings_to_arrow,
    publish,
    read_manifest,
    write_manifest,
)

log = logging.getLogger(__name__)
NAMESPACE = "extract"
REJECTS_DIR = "_rejects"


def _reject_row(row: dict[str, Any], rej: Rejected) -> dict[str, Any]:
    return {
        "item_idx": row.get("item_idx"),
        "item_id": row.get("item_id"),
        "reason": rej.reason,
        "detail": rej.detail[:500],
    }


class PrepareInput(beam.DoFn):
    """Item row -> (item_idx, item_id, content_hash, encoder input), or a tagged reject."""

    def __init__(self, kind: str, fields: list[str], max_pixels: int) -> None:
        self.kind, self.fields, self.max_pixels = kind, fields, max_pixels
        self.read = Metrics.counter(NAMESPACE, "items_read")
        self.rejected = Metrics.counter(NAMESPACE, "rejected")

    def process(self, row: dict[str, Any]):
        self.read.inc()
        if self.kind == "text":
            text = item_text(row, self.fields)
            if isinstance(text, Rejected):
                self.rejected.inc()
                yield beam.pvalue.TaggedOutput("rejects", _reject_row(row, text))
                return
            yield (row["item_idx"], row["item_id"], content_hash("text", text.encode()), text)
            return
        data = read_image_bytes(row.get("image_path"))
        img = data if isinstance(data, Rejected) else decode_image(data, max_pixels=self.max_pixels)
        if isinstance(img, Rejected):
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput("rejects", _reject_row(row, img))
            return
        yield (row["item_idx"], row["item_id"], content_hash("image", data), img)


class EmbedBatch(beam.DoFn):
    """A batch of prepared inputs -> one Arrow table of embeddings (built once per worker)."""

    def __init__(self, spec: dict[str, Any], event_ts_us: int) -> None:
        self.spec, self.event_ts_us = spec, event_ts_us
        self.embedded = Metrics.counter(NAMESPACE, "embedded")
        self.rejected = Metrics.counter(NAMESPACE, "rejected")
        self.truncated = Metrics.counter(NAMESPACE, "text_truncated")
        self.encoder = None

    def setup(self) -> None:
        self.encoder = build_encoder(self.spec)

    def process(self, batch: list[tuple[int, str, str, Any]]):
        inputs = [b[3] for b in batch]
        try:
            matrix = self.encoder.encode(inputs)
        except Exception as e:  # noqa: BLE001 - a failing batch is rejected, not fatal
            for idx, iid, _, _ in batch:
                self.rejected.inc()
                yield beam.pvalue.TaggedOutput(
                    "rejects",
                    {"item_idx": idx, "item_id": iid, "reason": "encoder error", "detail": str(e)[:500]},
                )
            return
        if hasattr(self.encoder, "token_counts") and self.encoder.modality == "text":
            self.truncated.inc(int((self.encoder.token_counts(inputs) > self.encoder.max_seq_length).sum()))
        n = len(batch)
        self.embedded.inc(n)
        now_us = int(time.time() * 1e6)
        ts = pa.timestamp("us", tz="UTC")
        yield pa.Table.from_arrays(
            [
                pa.array([b[0] for b in batch], pa.int64()),
                pa.array([b[1] for b in batch], pa.string()),
                embeddings_to_arrow(matrix),
                pa.array([b[2] for b in batch], pa.string()),
                pa.array(np.full(n, self.event_ts_us, dtype=np.int64), ts),
                pa.array(np.full(n, now_us, dtype=np.int64), ts),
            ],
            schema=schemas.feature_schema(matrix.shape[1]),
        )


def beam_options(beam_params: dict[str, Any], extra_args: list[str] | None = None) -> PipelineOptions:
    """Runner and options from params (``runner`` + ``options`` mapping + ``args`` list) and CLI."""
    flags = [f"--runner={beam_params.get('runner', 'DirectRunner')}"]
    for k, v in (beam_params.get("options") or {}).items():
        flags.append(f"--{k}={v}")
    flags += list(beam_params.get("args") or []) + list(extra_args or [])
    return PipelineOptions(flags=flags)


def feature_stats(folder: Path) -> dict[str, Any]:
    """Row count and norm summary, streamed file by file (memory follows one file)."""
    rows, norms = 0, []
    for f in sorted(folder.glob("*.parquet")):
        pf = pq.ParquetFile(f)
        for rb in pf.iter_batches(columns=["embedding"], batch_size=65536):
            e = arrow_to_embeddings(rb.column(0))
            rows += len(e)
            norms.append(np.linalg.norm(e, axis=1))
    n = np.concatenate(norms) if norms else np.zeros(0)
    return {
        "rows": rows,
        "norm_mean": float(n.mean()) if rows else None,
        "norm_min": float(n.min()) if rows else None,
        "norm_max": float(n.max()) if rows else None,
    }


def _count(result: Any, name: str) -> int:
    res = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE).with_name(name))["counters"]
    return int(sum(c.committed or c.attempted or 0 for c in res))


def extract_feature(
    name: str,
    spec: dict[str, Any],
    *,
    store: Path,
    extract_params: dict[str, Any],
    seed: int,
    extra_beam_args: list[str] | None = None,
) -> dict[str, Any]:
    """Run one feature's Beam pipeline and publish its table and rejects atomically."""
    items_dir = store / "items"
    items_manifest = read_manifest(items_dir)
    kind = spec.get("input", "text")
    if kind not in ("text", "image"):
        raise ValueError(
            f"params.yaml extract.features.{name}.input: expected 'text' or 'image', got {kind!r}"
        )
    enc_spec = {k: v for k, v in spec.items() if k not in ("input", "fields")}
    if enc_spec.get("encoder") == "open_clip":
        enc_spec.setdefault("modality", kind)
        enc_spec.setdefault("seed", seed)
    event_ts = dt.datetime.fromisoformat(items_manifest["created"])
    event_ts_us = int(event_ts.timestamp() * 1e6)
    fields = list(spec.get("fields", ["title", "description"]))
    t0 = time.time()
    desc = _describe(enc_spec)
    schema = schemas.feature_schema(desc["dim"])
    out_dir = store / "features" / name
    rej_dir = store / "features" / REJECTS_DIR / name
    with publish(out_dir) as tmp, publish(rej_dir) as rej_tmp:
        with beam.Pipeline(options=beam_options(extract_params.get("beam", {}), extra_beam_args)) as p:
            prepared = (
                p
                | "ReadItems" >> beam.io.ReadFromParquet(str(items_dir / "*.parquet"))
                | "Prepare"
                >> beam.ParDo(
                    PrepareInput(kind, fields, int(extract_params.get("max_image_pixels", 50_000_000)))
                ).with_outputs("rejects", main="ok")
            )
            embedded = (
                prepared.ok
                | "Batch"
                >> beam.BatchElements(
                    min_batch_size=int(extract_params["min_batch_size"]),
                    max_batch_size=int(extract_params["max_batch_size"]),
                )
                | "Embed" >> beam.ParDo(EmbedBatch(enc_spec, event_ts_us)).with_outputs("rejects", main="ok")
            )
            _ = embedded.ok | "WriteFeatures" >> beam.io.parquetio.WriteToParquetBatched(
                str(tmp / "part"), schema=schema, file_name_suffix=".parquet"
            )
            _ = (
                (prepared.rejects, embedded.rejects)
                | "AllRejects" >> beam.Flatten()
                | "WriteRejects"
                >> beam.io.WriteToParquet(
                    str(rej_tmp / "part"), schema=schemas.FEATURE_REJECTS, file_name_suffix=".parquet"
                )
            )
        result = p.result
        counts = {k: _count(result, k) for k in ("items_read", "embedded", "rejected", "text_truncated")}
        stats = feature_stats(tmp)
        rejected_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in rej_tmp.glob("*.parquet"))
        if (
            counts["items_read"] != items_manifest["row_count"]
            or counts["items_read"] != stats["rows"] + rejected_rows
        ):
            raise RuntimeError(
                f"extract {name}: counts not conserved: items {items_manifest['row_count']}, "
                f"read {counts['items_read']}, embedded rows {stats['rows']}, rejected rows {rejected_rows}"
            )
        manifest = base_manifest(
            name,
            schema,
            stats["rows"],
            **desc,
            input=kind,
            fields=fields if kind == "text" else None,
            counts=counts,
            stats=stats,
            inputs={
                "items": {"row_count": items_manifest["row_count"], "created": items_manifest["created"]}
            },
            event_timestamp=event_ts.isoformat(),
            beam={
                "runner": extract_params.get("beam", {}).get("runner", "DirectRunner"),
                "options": extract_params.get("beam", {}).get("options"),
            },
            seconds=round(time.time() - t0, 2),
        )
        write_manifest(tmp, manifest)
        write_manifest(rej_tmp, base_manifest(f"{name}_rejects", schemas.FEATURE_REJECTS, rejected_rows))
    log.info(
        "extract %s: %d items read = %d embedded + %d rejected (%d texts truncated) in %.1fs; weights %s",
        name,
        counts["items_read"],
        counts["embedded"],
        counts["rejected"],
        counts["text_truncated"],
        time.time() - t0,
        desc["weights"],
    )
    return manifest


_DESCRIBE_CACHE: dict[str, dict[str, Any]] = {}


def _describe(enc_spec: dict[str, Any]) -> dict[str, Any]:
    """Encoder description for the manifest (builds the encoder once in the launcher)."""
    key = repr(sorted(enc_spec.items()))
    if key not in _DESCRIBE_CACHE:
        _DESCRIBE_CACHE[key] = build_encoder(enc_spec).describe()
    return _DESCRIBE_CACHE[key]


def run(params: dict[str, Any], store: Path, extra_beam_args: list[str] | None = None) -> dict[str, Any]:
    ex = params["extract"]
    seed = int(params.get("seed", 0))
    return {
        name: extract_feature(
            name, spec, store=store, extract_params=ex, seed=seed, extra_beam_args=extra_beam_args
        )
        for name, spec in ex["features"].items()
    }
