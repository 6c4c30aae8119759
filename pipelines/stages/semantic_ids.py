"""Semantic-IDs stage: one code table per ``semantic_ids.tables`` entry (``store/semantic_ids/<name>``).

Each table quantises a source's item vectors (``features/<feature>`` or
``embeddings/<model>``) with ``training.semantic_ids`` (RQ-KMeans or RQ-VAE) into
``levels`` codes plus a suffix that separates identical tuples; its manifest records the
quality figures (collision rate before/after the suffix, use and perplexity per level,
largest group), the source's fingerprint and the codebooks' fingerprint.

Next to the Parquet part the table keeps what re-assigns codes without a refit:
``codebooks.npy`` (levels x K x d, float32), ``sinkhorn.npy`` (collisions: sinkhorn),
``rq_vae.npz`` (method: rq_vae) and ``source_hashes.arrow`` (item_id -> the source row's
content hash). On a rerun with the same source encoder (its cache key and dimension), the
same table params and ``refit: false``, items whose source row is unchanged keep their
codes and suffix, and new or changed items are assigned with the stored codebooks;
``refit: true`` (or any change of the source encoder or the params) fits new codebooks.
Items without a source vector (rejected by the encoder) get no row; the manifest counts them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from features import schemas
from features.errors import PlatformError
from features.store import (
    MANIFEST,
    arrow_to_embeddings,
    base_manifest,
    publish,
    read_manifest,
    read_table,
    write_manifest,
)
from pipelines.config import Config, SemanticIdTable
from pipelines.layout import Layout
from training import semantic_ids as sid

log = logging.getLogger(__name__)

CODEBOOKS = "codebooks.npy"
SINKHORN = "sinkhorn.npy"
RQ_VAE = "rq_vae.npz"
HASHES = "source_hashes.arrow"
SAMPLE = 5


def published(layout: Layout) -> list[str]:
    """Names of the published semantic-ID tables."""
    return layout.semantic_id_names()


def source_path(layout: Layout, source: str) -> Path:
    kind, _, name = source.partition("/")
    return layout.feature(name) if kind == "features" else layout.item_embeddings(name)


def load_source(path: Path) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, Any]]:
    """(item_idx, vectors, content hash per row, manifest) of a feature or embedding table.

    Tables without a ``content_hash`` column (exported embeddings) hash each vector's bytes.
    """
    if not (path / MANIFEST).is_file():
        raise PlatformError(
            f"semantic IDs: source table {path} is not published; run the stage that makes it"
        )
    manifest = read_manifest(path)
    names = pq.read_schema(sorted(path.glob("*.parquet"))[0]).names if list(path.glob("*.parquet")) else []
    cols = ["item_idx", "embedding"] + (["content_hash"] if "content_hash" in names else [])
    t = read_table(path, columns=cols if names else None)
    if t.num_rows == 0:
        raise PlatformError(f"semantic IDs: source table {path} has no rows")
    idx = t.column("item_idx").to_numpy().astype(np.int64)
    x = arrow_to_embeddings(t.column("embedding"))
    if "content_hash" in t.column_names:
        hashes = [str(h) for h in t.column("content_hash").to_pylist()]
    else:
        hashes = [hashlib.sha256(row.tobytes()).hexdigest()[:32] for row in x]
    order = np.argsort(idx, kind="stable")
    return idx[order], x[order], [hashes[i] for i in order], manifest


def source_fingerprint(source: str, manifest: dict[str, Any], dim: int) -> dict[str, Any]:
    """What identifies the source: its manifest's cache key (the encoder), creation time, rows."""
    key = manifest.get("cache_key")
    return {
        "table": source,
        "cache_key": key,
        "created": manifest.get("created"),
        "row_count": manifest.get("row_count"),
        "dim": dim,
        "encoder_id": manifest.get("encoder_id"),
        # same key: the vectors live in the same space, so stored codebooks still apply
        "space": f"{key}|dim={dim}" if key else f"created={manifest.get('created')}|dim={dim}",
    }


def table_params(t: SemanticIdTable, seed: int) -> dict[str, Any]:
    p = t.model_dump(exclude={"refit"})
    p["seed"] = seed
    p.pop("rq_vae" if t.method != "rq_vae" else "balanced")  # what the other method ignores
    return p


# ------------------------------------------------------------------------------ state files


def save_state(folder: Path, q: sid.Quantizer, item_ids: list[str], hashes: list[str]) -> None:
    np.save(folder / CODEBOOKS, np.ascontiguousarray(q.codebooks, dtype=np.float32))
    if q.sinkhorn is not None:
        np.save(folder / SINKHORN, q.sinkhorn.as_array())
    if q.model_state is not None:
        np.savez(folder / RQ_VAE, **q.model_state["weights"])
    table = pa.table(
        {"item_id": pa.array(item_ids, pa.string()), "content_hash": pa.array(hashes, pa.string())}
    )
    with ipc.new_file(folder / HASHES, table.schema) as w:
        w.write_table(table)


def load_state(folder: Path, manifest: dict[str, Any]) -> tuple[sid.Quantizer, dict[str, str]]:
    books = np.load(folder / CODEBOOKS)
    sk = sid.SinkhornState.from_array(np.load(folder / SINKHORN)) if (folder / SINKHORN).is_file() else None
    state = None
    if manifest["method"] == "rq_vae":
        with np.load(folder / RQ_VAE) as z:
            weights = {k: z[k] for k in z.files}
        state = {**manifest["rq_vae_dims"], "weights": weights}
    with ipc.open_file(folder / HASHES) as r:
        t = r.read_all()
    hashes = dict(zip(t.column("item_id").to_pylist(), t.column("content_hash").to_pylist(), strict=True))
    return sid.Quantizer(manifest["method"], books, sk, state), hashes


def previous_state(
    path: Path, t: SemanticIdTable, params: dict[str, Any], space: str
) -> tuple[tuple[sid.Quantizer, dict[str, str], pa.Table] | None, str]:
    """(stored quantiser, hashes, previous rows) when the previous table can be extended, and why (not)."""
    if t.refit:
        return None, "refit: true"
    if not (path / MANIFEST).is_file():
        return None, "no previous table"
    try:
        m = read_manifest(path)
    except PlatformError as e:
        return None, f"previous manifest unreadable: {e}"
    if m.get("params") != params:
        return None, "table params changed"
    if (m.get("source") or {}).get("space") != space:
        return None, "source encoder or dimension changed"
    if not all((path / f).is_file() for f in (CODEBOOKS, HASHES)):
        return None, "previous table has no stored codebooks"
    q, hashes = load_state(path, m)
    return (q, hashes, read_table(path, columns=["item_id", "codes", "suffix"])), "previous codebooks apply"


# ------------------------------------------------------------------------------------ stage


def build_one(config: Config, layout: Layout, name: str, t: SemanticIdTable) -> dict[str, Any]:
    t0 = time.time()
    seed = config.seed if t.seed is None else t.seed
    items = read_table(layout.items(), columns=["item_idx", "item_id"])
    id_of = dict(zip(items.column("item_idx").to_pylist(), items.column("item_id").to_pylist(), strict=True))
    idx, x, hashes, src_manifest = load_source(source_path(layout, t.source))
    unknown = [int(i) for i in idx if int(i) not in id_of]
    if unknown:
        raise PlatformError(
            f"semantic IDs {name}: source {t.source} has item_idx {unknown[:SAMPLE]} not in items"
        )
    item_ids = [id_of[int(i)] for i in idx]
    have = set(idx.tolist())
    without = [id_of[i] for i in sorted(id_of) if i not in have]
    src = source_fingerprint(t.source, src_manifest, int(x.shape[1]))
    params = table_params(t, seed)
    out_path = layout.semantic_ids(name, write=True)
    prev, reason = previous_state(out_path, t, params, src["space"])
    n = len(idx)
    if prev is None:
        q, codes = sid.fit(
            x,
            method=t.method,
            levels=t.levels,
            codebook_size=t.codebook_size,
            seed=seed,
            kmeans_iters=t.kmeans_iters,
            collisions=t.collisions,
            balanced=t.balanced,
            rq_vae=t.rq_vae.model_dump() if t.method == "rq_vae" else None,
        )
        prev_suffix = None
        kept = 0
    else:
        q, old_hashes, old_rows = prev
        old = {
            i: (c, s)
            for i, c, s in zip(
                old_rows.column("item_id").to_pylist(),
                old_rows.column("codes").to_pylist(),
                old_rows.column("suffix").to_pylist(),
                strict=True,
            )
        }
        keep = np.array([old_hashes.get(i) == h and i in old for i, h in zip(item_ids, hashes, strict=True)])
        codes = np.zeros((n, t.levels), dtype=np.int32)
        prev_suffix = np.full(n, -1, dtype=np.int32)
        for j in np.flatnonzero(keep):
            c, s = old[item_ids[j]]
            codes[j], prev_suffix[j] = c, s
        new = np.flatnonzero(~keep)
        if len(new):
            codes[new] = q.encode(x[new])
        kept = int(keep.sum())
    suffix = sid.suffixes(codes, idx, prev_suffix)
    quality = sid.metrics(codes, suffix, t.codebook_size)
    table = pa.table(
        {
            "item_idx": pa.array(idx, pa.int64()),
            "item_id": pa.array(item_ids, pa.string()),
            "codes": pa.array(codes.tolist(), pa.list_(pa.int32())),
            "suffix": pa.array(suffix, pa.int32()),
            "semantic_id": pa.array(sid.id_strings(codes, suffix), pa.string()),
        }
    ).cast(schemas.SEMANTIC_IDS)
    extra: dict[str, Any] = {}
    if q.model_state is not None:
        extra["rq_vae_dims"] = {k: q.model_state[k] for k in ("encoder_dims", "decoder_dims")}
        if q.history:
            extra["rq_vae_last_epoch"] = q.history[-1]
    manifest = base_manifest(
        name,
        schemas.SEMANTIC_IDS,
        n,
        method=t.method,
        levels=t.levels,
        codebook_size=t.codebook_size,
        seed=seed,
        collisions=t.collisions,
        params=params,
        **quality,
        source=src,
        codebooks_fingerprint=q.fingerprint(),
        codebooks_file=CODEBOOKS,
        items_without_source={"count": len(without), "sample": without[:SAMPLE]},
        incremental={
            "refit": t.refit,
            "reused_codebooks": prev is not None,
            "reason": reason,
            "kept": kept,
            "assigned": n - kept,
        },
        **extra,
    )
    with publish(out_path) as tmp:
        pq.write_table(table, tmp / "part-00000.parquet", compression="zstd")
        save_state(tmp, q, item_ids, hashes)
        write_manifest(tmp, manifest)
    log.info(
        "semantic_ids %s: %d items (%d without a source vector), %s %dx%d, collisions %.4f -> %.4f, "
        "use %s, perplexity %s, largest group %d; codebooks: %s; %.1fs",
        name,
        n,
        len(without),
        t.method,
        t.levels,
        t.codebook_size,
        quality["collision_rate_before_suffix"],
        quality["collision_rate_after_suffix"],
        quality["use"],
        quality["perplexity"],
        quality["largest_group"],
        reason if prev is not None else f"fitted ({reason})",
        time.time() - t0,
    )
    return {
        "rows": n,
        "reused_codebooks": prev is not None,
        "kept": kept,
        **{k: quality[k] for k in ("collision_rate_before_suffix", "use", "perplexity", "largest_group")},
    }


def run(config: Config, layout: Layout) -> dict[str, Any]:
    return {name: build_one(config, layout, name, t) for name, t in config.semantic_ids.tables.items()}
