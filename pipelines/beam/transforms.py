"""The Beam DoFns of the extract pipeline: rows in, prepared inputs, cache hits, embeddings out.

Each DoFn is small and picklable by reference (this module is importable on any worker).
Counters live in the ``extract`` namespace; the launcher reads them into the manifest.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.shared import Shared
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from features import schemas
from features.encoders import Encoder, build_encoder
from features.inputs import (
    DEFAULT_FORMATS,
    DEFAULT_MAX_PIXELS,
    Rejected,
    content_hash,
    decode_image,
    image_format,
    prepare_text,
    probe_image,
    read_image_bytes,
)
from features.store import embeddings_to_arrow

log = logging.getLogger(__name__)
NAMESPACE = "extract"
COUNTERS = (
    "items_read",
    "embedded",
    "reused",
    "previous_seen",
    "rejected",
    "noted",
    "text_truncated",
    "pixel_splits",  # extra sub-batches made to keep decoded pixels under max_batch_pixels
)
DEFAULT_MAX_BATCH_PIXELS = 100_000_000
DETAIL_CHARS = 500


class Prepared(NamedTuple):
    """One item ready for its encoder."""

    item_idx: int
    item_id: str
    content_hash: str
    value: Any  # str (text, item id) or the image file's bytes (decoded in the embed step)
    note: str | None
    pixels: int = 0  # an image's width x height, from its header


def _decode_id(v: Any) -> str:
    return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)


def issue_row(item_idx: Any, item_id: Any, reason: str, detail: str = "") -> dict[str, Any]:
    """A row of the rejects or notes table (same schema)."""
    return {
        "item_idx": item_idx,
        "item_id": None if item_id is None else _decode_id(item_id),
        "reason": reason,
        "detail": (detail or "")[:DETAIL_CHARS],
    }


def table_rows(table: pa.Table, chunk_rows: int = 1024) -> Iterator[dict[str, Any]]:
    """Rows of an items batch with string columns as raw bytes: invalid UTF-8 becomes a
    reject of that item later, instead of an exception that stops the whole read. Python
    objects exist for ``chunk_rows`` rows at a time, whatever the row-group size."""
    for batch in table.to_batches(max_chunksize=chunk_rows):
        cols = {}
        for name, col in zip(batch.schema.names, batch.columns, strict=True):
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                col = col.cast(pa.binary() if pa.types.is_string(col.type) else pa.large_binary())
            cols[name] = col.to_pylist()
        for i in range(batch.num_rows):
            yield {k: v[i] for k, v in cols.items()}


class PrepareInput(beam.DoFn):
    """Item row -> ``Prepared`` (to embed), ``reuse`` (unchanged since the cached table) or a
    ``rejects`` row. Reads and hashes the exact bytes the encoder would see. Image paths are
    confined to ``limits["image_root"]`` and the format allowlist is checked before a cache
    hit is reused; images are only probed here (header: format, size, pixel limit), never
    decoded: ``EmbedBatch`` decodes them a sub-batch at a time."""

    def __init__(self, kind: str, fields: list[str], limits: dict[str, Any]) -> None:
        self.kind, self.fields, self.limits = kind, fields, limits
        self.c = {k: Metrics.counter(NAMESPACE, k) for k in COUNTERS}

    def _reject(self, row: dict[str, Any], rej: Rejected) -> beam.pvalue.TaggedOutput:
        self.c["rejected"].inc()
        return beam.pvalue.TaggedOutput(
            "rejects", issue_row(row.get("item_idx"), row.get("item_id"), rej.reason, rej.detail)
        )

    def process(self, row: dict[str, Any], previous: dict[str, str] | None = None):
        self.c["items_read"].inc()
        item_id = _decode_id(row.get("item_id"))
        prev_hash = previous.get(item_id) if previous else None
        if prev_hash is not None:
            self.c["previous_seen"].inc()
        note = None
        if self.kind == "text":
            out = prepare_text(
                row,
                self.fields,
                separator=self.limits["text_separator"],
                max_chars=self.limits["max_text_chars"],
            )
            if isinstance(out, Rejected):
                yield self._reject(row, out)
                return
            value, note = out
            h = content_hash("text", value.encode("utf-8"))
        elif self.kind == "image":
            data = read_image_bytes(
                row.get("image_path"),
                root=self.limits.get("image_root"),
                max_bytes=self.limits["max_image_bytes"],
            )
            if not isinstance(data, Rejected):
                fmt = image_format(data, self.limits.get("image_formats", DEFAULT_FORMATS))
                data = fmt if isinstance(fmt, Rejected) else data
            if isinstance(data, Rejected):
                yield self._reject(row, data)
                return
            value, h = data, content_hash("image", data)
        else:  # item_id: vectors are looked up by id
            value, h = item_id, content_hash("item_id", item_id.encode("utf-8"))
        if prev_hash == h:
            self.c["reused"].inc()
            yield beam.pvalue.TaggedOutput("reuse", (item_id, int(row["item_idx"])))
            return
        pixels = 0
        if self.kind == "image":
            probe = probe_image(
                value,
                max_pixels=self.limits["max_image_pixels"],
                formats=self.limits.get("image_formats", DEFAULT_FORMATS),
            )
            if isinstance(probe, Rejected):
                yield self._reject(row, probe)
                return
            pixels = probe.pixels
        yield Prepared(int(row["item_idx"]), item_id, h, value, note, pixels)


def _shared_encoder(spec: dict[str, Any], threads: int | None) -> Encoder:
    """Build and load the encoder; called once per worker process through ``Shared``."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    enc = build_encoder(spec)
    t0 = time.time()
    enc.load()
    log.info(
        "extract: loaded %s in %.1fs (worker pid %d, torch threads %s)",
        enc.name,
        time.time() - t0,
        os.getpid(),
        threads or "default",
    )
    return enc


def pixel_groups(batch: list[Prepared], max_pixels: int) -> list[list[Prepared]]:
    """Consecutive sub-batches of at most ``max_pixels`` pixels each (an image larger than
    that on its own is a sub-batch of one)."""
    groups: list[list[Prepared]] = []
    current: list[Prepared] = []
    total = 0
    for p in batch:
        if current and total + p.pixels > max_pixels:
            groups.append(current)
            current, total = [], 0
        current.append(p)
        total += p.pixels
    if current:
        groups.append(current)
    return groups


class EmbedBatch(beam.DoFn):
    """A batch of ``Prepared`` -> Arrow tables of embeddings. The encoder is loaded once per
    worker process (``setup`` + ``Shared``), never per bundle. A batch that fails is split
    until the failing item is found; only that item is rejected.

    Images arrive as file bytes and are decoded here, one sub-batch at a time, so no more
    than ``limits["max_batch_pixels"]`` decoded pixels are held at once (counter
    ``pixel_splits``: the extra sub-batches that took)."""

    def __init__(
        self,
        spec: dict[str, Any],
        dim: int,
        event_ts_us: int,
        *,
        threads: int | None = None,
        progress_total: int | None = None,
        label: str = "",
        limits: dict[str, Any] | None = None,
    ) -> None:
        self.spec, self.dim, self.event_ts_us, self.threads = spec, dim, event_ts_us, threads
        self.progress_total, self.label = progress_total, label
        self.limits = dict(limits or {})
        self.schema = schemas.feature_schema(dim)
        self._shared = Shared()
        self.c = {k: Metrics.counter(NAMESPACE, k) for k in COUNTERS}
        self.encoder: Encoder | None = None
        self._bar = None

    def setup(self) -> None:
        if self.progress_total:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.progress_total, desc=f"extract {self.label}", unit="item", leave=False
            )

    def teardown(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def _encode(self, batch: list[Prepared]) -> Iterator[tuple[list[Prepared], np.ndarray | str]]:
        """(items, matrix) for what encodes, (items, error) for single items that fail."""
        try:
            m = np.asarray(self.encoder.encode([b.value for b in batch]), dtype=np.float32)
            if m.shape != (len(batch), self.dim):
                raise ValueError(f"encoder returned shape {m.shape}, expected ({len(batch)}, {self.dim})")
            yield batch, m
        except Exception as e:  # noqa: BLE001 - one bad input must not fail its batch or the run
            if len(batch) == 1:
                yield batch, f"{type(e).__name__}: {e}"
                return
            half = len(batch) // 2
            yield from self._encode(batch[:half])
            yield from self._encode(batch[half:])

    def _issue(self, tag: str, p: Prepared, reason: str, detail: str = "") -> beam.pvalue.TaggedOutput:
        self.c["rejected" if tag == "rejects" else "noted"].inc()
        return beam.pvalue.TaggedOutput(tag, issue_row(p.item_idx, p.item_id, reason, detail))

    def process(self, batch: list[Prepared]):
        if self.encoder is None:  # on first use, so a run served wholly from the cache loads nothing
            key = repr(sorted(self.spec.items()))
            self.encoder = self._shared.acquire(lambda: _shared_encoder(self.spec, self.threads), tag=key)
        if self.encoder.modality == "image":
            yield from self._images(batch)
        else:
            yield from self._embed(batch)
        if self._bar is not None:
            self._bar.update(len(batch))

    def _images(self, batch: list[Prepared]):
        """Decode and embed image bytes a sub-batch of at most ``max_batch_pixels`` at a time."""
        limit = int(self.limits.get("max_batch_pixels", DEFAULT_MAX_BATCH_PIXELS))
        max_pixels = int(self.limits.get("max_image_pixels", DEFAULT_MAX_PIXELS))
        formats = self.limits.get("image_formats", DEFAULT_FORMATS)
        groups = pixel_groups(batch, limit)
        if len(groups) > 1:
            self.c["pixel_splits"].inc(len(groups) - 1)
            log.debug(
                "extract %s: batch of %d images (%d pixels) split into %d sub-batches of <= %d pixels",
                self.label,
                len(batch),
                sum(p.pixels for p in batch),
                len(groups),
                limit,
            )
        for group in groups:
            decoded = []
            for p in group:
                if not isinstance(p.value, bytes | bytearray):  # already an image
                    decoded.append(p)
                    continue
                img = decode_image(p.value, max_pixels=max_pixels, formats=formats)
                if isinstance(img, Rejected):
                    yield self._issue("rejects", p, img.reason, img.detail)
                else:
                    decoded.append(p._replace(value=img.image, note=img.note))
            yield from self._embed(decoded)
            del decoded  # this sub-batch's pixels go before the next one is decoded

    def _embed(self, batch: list[Prepared]):
        """Encoder-ready items -> rejects, notes and one Arrow table of what embedded."""
        enc = self.encoder
        usable = []
        for p, why in zip(batch, enc.unusable([b.value for b in batch]), strict=True):
            if why:
                yield self._issue("rejects", p, why, f"item {p.item_id}")
            else:
                usable.append(p)
        if not usable:
            return
        notes = [p.note for p in usable]
        if enc.modality == "text":
            for i, cut in enumerate(enc.truncation([p.value for p in usable])):
                if cut:
                    self.c["text_truncated"].inc()
                    notes[i] = f"{notes[i]}; {cut}" if notes[i] else cut
        note_of = {p.item_id: n for p, n in zip(usable, notes, strict=True) if n}
        done: list[Prepared] = []
        parts: list[np.ndarray] = []
        for items, out in self._encode(usable):
            if isinstance(out, str):
                yield self._issue("rejects", items[0], "encoder error", out)
                continue
            finite = np.isfinite(out).all(axis=1)
            for p in (p for p, ok in zip(items, finite, strict=True) if not ok):
                yield self._issue("rejects", p, "non-finite embedding", "the encoder returned NaN or inf")
            done += [p for p, ok in zip(items, finite, strict=True) if ok]
            parts.append(out[finite])
        for p in done:
            if p.item_id in note_of:
                yield self._issue("notes", p, "embedded with a change", note_of[p.item_id])
        if not done:
            return
        self.c["embedded"].inc(len(done))
        n, ts = len(done), pa.timestamp("us", tz="UTC")
        yield pa.Table.from_arrays(
            [
                pa.array([p.item_idx for p in done], pa.int64()),
                pa.array([p.item_id for p in done], pa.string()),
                embeddings_to_arrow(np.concatenate(parts)),
                pa.array([p.content_hash for p in done], pa.string()),
                pa.array(np.full(n, self.event_ts_us, dtype=np.int64), ts),
                # created: the data time of the snapshot that computed the vector (reused rows
                # keep theirs); never the clock, so the same inputs give the same bytes.
                pa.array(np.full(n, self.event_ts_us, dtype=np.int64), ts),
            ],
            schema=self.schema,
        )


class KeepReused(beam.DoFn):
    """Rows of a previous table whose item is reused, bit for bit, with the current ``item_idx``."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema

    def process(self, table: pa.Table, reuse: dict[str, int]):
        ids = table.column("item_id").to_pylist()
        keep = np.array([i in reuse for i in ids], dtype=bool)
        if not keep.any():
            return
        table = table.filter(pa.array(keep))
        new_idx = pa.array([reuse[i] for i in table.column("item_id").to_pylist()], pa.int64())
        table = table.set_column(table.schema.get_field_index("item_idx"), "item_idx", new_idx)
        yield table.select(self.schema.names).cast(self.schema)


class Rebatch(beam.DoFn):
    """Concatenates small Arrow tables into row groups of about ``target_bytes`` before writing
    (one row group per 64-item batch would make files slow to scan)."""

    def __init__(self, target_bytes: int) -> None:
        self.target_bytes = int(target_bytes)

    def start_bundle(self) -> None:
        self._tables: list[pa.Table] = []
        self._bytes = 0

    def _flush(self) -> pa.Table:
        t = pa.concat_tables(self._tables)  # chunks stay as they are: no second copy of the buffer
        self._tables, self._bytes = [], 0
        return t

    def process(self, table: pa.Table):
        self._tables.append(table)
        self._bytes += table.nbytes
        if self._bytes >= self.target_bytes:
            yield self._flush()

    def finish_bundle(self):
        if self._tables:
            yield WindowedValue(self._flush(), MIN_TIMESTAMP, [GlobalWindow()])
