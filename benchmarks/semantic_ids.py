"""Semantic-ID quality on real item text: RQ-KMeans and RQ-VAE (``training.semantic_ids``).

For each dataset the text feature is extracted by the pipeline's own stages (ingest ->
extract, MiniLM over the profile's title + description fields: ML-100K title (with year)
+ genres, DBbook titles), then quantised at the params.yaml defaults (3 x 256):

* RQ-KMeans: collision rate before / after the suffix, codebook use and perplexity per
  level, largest group, seconds (wall and this process's CPU), and a rerun with the same
  seed checked byte for byte (codes and codebooks);
* RQ-KMeans with Sinkhorn re-assignment of the last level (LC-Rec);
* RQ-VAE (TIGER) at the params.yaml defaults (ML-100K only by default).

``--demo`` also runs the built-in demo catalog (no dataset needed) at its default size.

    nice -n 10 .venv/bin/python -m benchmarks.semantic_ids --datasets DIR
    .venv/bin/python -m benchmarks.semantic_ids --datasets DIR --names ml100k --no-rq-vae

``--datasets DIR`` is the dataset root (default ``$MMREC_DATASETS``); prints a ``skip:``
line (exit 0) when it or a dataset is absent.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks import common
from benchmarks.common import RESULTS

DEFAULT_OUT = RESULTS / "semantic_ids.json"
TEXT = "text_minilm"
TARGETS = {
    "ml100k": {"rq_kmeans": "collisions <= 1.2% before suffix, 0 after, use 1.0, perplexity >= 190, < 30 s"},
    "dbbook": {"rq_kmeans": "collisions <= 6%, largest group <= 27"},
    "ml100k_rq_vae": "collisions <= 3%, use >= 0.9",
}
log = logging.getLogger("benchmarks.semantic_ids")


def text_config(params: Path, data: dict[str, Any] | None):
    base = yaml.safe_load(params.read_text())
    text = {**base["extract"]["features"][TEXT], "fields": ["title", "description"]}
    return common.bench_config(params=params, data=data, features={TEXT: text})


def load_text(config: Any, layout: Any) -> Any:
    from features.reader import load_features
    from features.store import read_manifest
    from pipelines.stages import extract, ingest

    if not (layout.items() / "_manifest.json").exists():
        ingest.run(config, layout)
    if not (layout.feature(TEXT) / "_manifest.json").exists():
        extract.run(config, layout)
    n_items = int(read_manifest(layout.items())["row_count"])
    f = load_features(layout.feature(TEXT), n_items=n_items)
    return f.matrix[f.present], int(f.present.sum()), n_items


def quantise(x: Any, table: Any, seed: int, *, method: str, collisions: str) -> dict[str, Any]:
    import numpy as np

    from training import semantic_ids as sid

    def once() -> tuple[Any, Any, float, float]:
        t0, c0 = time.time(), time.process_time()
        q, codes = sid.fit(
            x,
            method=method,
            levels=table.levels,
            codebook_size=table.codebook_size,
            seed=seed,
            kmeans_iters=table.kmeans_iters,
            collisions=collisions,
            rq_vae=table.rq_vae.model_dump() if method == "rq_vae" else None,
        )
        return q, codes, time.time() - t0, time.process_time() - c0

    q, codes, wall, cpu = once()
    suffix = sid.suffixes(codes, np.arange(len(codes)))
    out: dict[str, Any] = {
        "method": method,
        "collisions": collisions,
        "levels": table.levels,
        "codebook_size": table.codebook_size,
        "seed": seed,
        "items": len(codes),
        **sid.metrics(codes, suffix, table.codebook_size),
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
    }
    if method == "rq_vae":
        out["rq_vae"] = table.rq_vae.model_dump()
        out["last_epoch"] = q.history[-1] if q.history else None
    else:
        q2, codes2, wall2, _ = once()
        out["rerun_byte_identical"] = bool(
            codes.tobytes() == codes2.tobytes() and q.codebooks.tobytes() == q2.codebooks.tobytes()
        )
        out["rerun_seconds"] = round(wall2, 2)
    log.info("%s", out)
    return out


def run_dataset(name: str, config: Any, work: Path, args: argparse.Namespace, rq_vae: bool) -> dict[str, Any]:
    layout = common.work_layout(work / name)
    t0 = time.time()
    x, n_with, n_items = load_text(config, layout)
    table = config.semantic_ids.tables["text_rq"]
    seed = config.seed if table.seed is None else table.seed
    res: dict[str, Any] = {
        "items": n_items,
        "items_with_text_vector": n_with,
        "feature": {"encoder": "sentence-transformers all-MiniLM-L6-v2", "fields": ["title", "description"]},
        "prepare_seconds": round(time.time() - t0, 1),
        "rq_kmeans": quantise(x, table, seed, method="rq_kmeans", collisions="suffix"),
        "rq_kmeans_sinkhorn": quantise(x, table, seed, method="rq_kmeans", collisions="sinkhorn"),
    }
    if rq_vae:
        res["rq_vae"] = quantise(x, table, seed, method="rq_vae", collisions="suffix")
    return res


def run_demo(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The demo catalog at its params.yaml size through demo -> ingest -> extract (text only)."""
    from pipelines.stages import demo

    raw_dir = work / "demo_raw"
    base = yaml.safe_load(args.params.read_text())
    data = {
        **base["data"],
        "items": str(raw_dir / "items.csv"),
        "interactions": str(raw_dir / "interactions.csv"),
        "images": str(raw_dir / "images"),
    }
    config = text_config(args.params, data)
    if not (raw_dir / "items.csv").exists():
        demo.run(config, raw_dir, progress=False)
    return run_dataset("demo", config, work, args, rq_vae=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_datasets_option(ap)
    ap.add_argument("--names", nargs="+", default=["ml100k", "dbbook"], help="profiles to run")
    ap.add_argument("--params", type=Path, default=common.PARAMS)
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--no-rq-vae", action="store_true", help="skip the RQ-VAE runs")
    ap.add_argument("--rq-vae-on", nargs="+", default=["ml100k"], help="datasets that also run RQ-VAE")
    ap.add_argument("--demo", action="store_true", help="also the built-in demo catalog (no dataset needed)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    common.quiet_logs()
    profiles = common.profiles_or_skip(args.datasets_root, args.names)
    if profiles is None and not args.demo:
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="semantic_ids_"))
    results = common.read_json(args.out)
    results.setdefault("datasets", {})
    for name, profile in (profiles or {}).items():
        config = text_config(args.params, profile)
        rq_vae = not args.no_rq_vae and name in args.rq_vae_on
        results["datasets"][name] = run_dataset(name, config, work, args, rq_vae)
        common.write_json(args.out, results)
    if args.demo:
        results["datasets"]["demo"] = run_demo(work, args)
    results["targets"] = TARGETS
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "note": "shared 2-core machine: seconds are wall clock under other jobs' load",
    }
    results["command"] = (
        "OPENBLAS_NUM_THREADS=1 nice -n 10 .venv/bin/python -m benchmarks.semantic_ids --datasets DIR --demo"
    )
    results["code_version"] = common.git_commit(common.ROOT, short=True)
    common.write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
