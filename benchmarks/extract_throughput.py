"""Extract throughput: the Beam pipeline vs a plain loop over the same encoder, and peak memory.

    python benchmarks/extract_throughput.py --items 10000 --image-items 1000 \\
        --rss-sizes 10000,100000 --out benchmarks/results/extract_throughput.json

For text (all-MiniLM-L6-v2) and images (ViT-B-32, RANDOMLY INITIALISED: no CLIP weights
offline; the compute is the same as with real weights) it times, at one fixed batch size:

- ``raw``: build + load the encoder, then a Python loop that assembles/decodes each item
  exactly as the pipeline does and calls ``encode`` per batch;
- ``pipeline``: ``pipelines.beam.extract.extract_feature`` end to end (Beam start-up, Parquet
  read, hashing, model load in the worker, encode, Parquet write, manifest).

Both include loading the model once, so ``ratio`` (pipeline items/s over raw items/s, the
median over ``--rounds`` rounds run alternately: pipeline, raw, pipeline, raw, ...; with
the spread of the per-round ratios) is the price of Beam. The plain loop uses the same
batch size, torch threads, item order and input limits as the in-memory pipeline.
Peak RSS (the pipeline process plus any Beam worker processes, polled) is measured in a
subprocess on synthetic text catalogs of each ``--rss-sizes`` size; it must not follow
the catalog size. Run on an idle machine: the load average is recorded with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pipelines.config import ExtractParams

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = (  # noqa: SIM905 - one readable line of vocabulary
    "cotton soft blue red green summer winter classic slim fit organic leather steel kitchen baby "
    "sport running outdoor travel light heavy duty compact wireless premium natural eco gift set "
    "pack of two large small medium vintage modern handmade durable waterproof stretch warm cool"
).split()
TEXT_SPEC = {
    "input": "text",
    "fields": ["title", "description"],
    "encoder": "sentence-transformers",
    "model": "all-MiniLM-L6-v2",
    "normalize": True,
}
IMAGE_SPEC = {  # seeded by the run's seed (0)
    "input": "image",
    "encoder": "open_clip",
    "model": "ViT-B-32",
    "pretrained": None,
    "allow_random_init": True,
    "normalize": True,
}


def text_rows(n: int, seed: int = 0, words: tuple[int, int] = (15, 45)) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    vocab = np.array(WORDS)
    return [
        {
            "item_id": f"t{i:07d}",
            "title": " ".join(rng.choice(vocab, 6)),
            "description": " ".join(rng.choice(vocab, int(rng.integers(*words)))) if words[1] else None,
            "image_path": None,
        }
        for i in range(n)
    ]


def image_rows(folder: Path, n: int, size: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    rows = []
    for i in range(n):
        c = rng.random((3, 3))
        arr = np.stack([c[k, 0] * xx + c[k, 1] * yy + c[k, 2] for k in range(3)], -1)
        arr = np.clip(arr / arr.max() * 255 + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:06d}.png"
        Image.fromarray(arr).save(path)
        rows.append(
            {"item_id": f"m{i:06d}", "title": f"image {i}", "description": None, "image_path": str(path)}
        )
    return rows


def write_store(store: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa

    from features import schemas
    from features.store import write_table
    from pipelines.layout import Layout

    table = pa.Table.from_pylist(
        [{"item_idx": i, "category": "c", **r} for i, r in enumerate(rows)], schema=schemas.ITEMS
    )
    write_table(Layout(store=store).items(write=True), table, schemas.ITEMS)
    return store


def extract_params(spec: dict[str, Any], batch: int, mode: str, workers: int) -> ExtractParams:
    """params.yaml's ``extract`` section with a fixed batch size, the given Beam mode, no
    cache and ``spec`` as its one feature ``f``."""
    import yaml

    from pipelines.config import ExtractParams

    ex = yaml.safe_load((ROOT / "params.yaml").read_text())["extract"]
    overrides = json.loads(os.environ.get("EXTRACT_BENCH_OVERRIDES", "{}"))  # e.g. {"row_group_mb": 1}
    return ExtractParams.model_validate({
        **ex,
        "min_batch_size": batch,
        "max_batch_size": batch,
        "incremental": False,
        "keep_previous": False,
        "progress": False,
        "beam": {
            "runner": "DirectRunner",
            "options": {"direct_running_mode": mode, "direct_num_workers": workers},
        },
        "features": {"f": spec},
        **overrides,
    })  # fmt: skip


def raw_loop(
    spec: dict[str, Any], rows: list[dict[str, Any]], batch: int, image_root: Path | None = None
) -> dict[str, float]:
    """Build + load the encoder, then prepare and encode the items batch by batch in a plain
    loop, matched to the in-memory pipeline: the same batch size, the same torch threads
    (``torch_threads`` of the same params), the items in the same order (the items table's,
    which the in-memory runner keeps: no reshuffle for one worker) and the same input
    limits (text separator and cut, image root, size and format checks)."""
    import torch

    from features.encoders import build_encoder
    from features.inputs import Rejected, decode_image, prepare_text, read_image_bytes
    from pipelines.beam.extract import beam_options, feature_plan, image_limits, torch_threads

    ex = extract_params(spec, batch, "in_memory", 1)
    threads = torch_threads(ex.torch_threads, beam_options(ex.beam))
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    limits = image_limits(ex, image_root)
    feature = ex.features["f"]
    kind, enc_spec = feature_plan("f", feature, 0)
    t0, c0 = time.perf_counter(), time.process_time()
    enc = build_encoder(enc_spec)
    enc.load()
    t_load = time.perf_counter() - t0
    done = 0
    for start in range(0, len(rows), batch):
        inputs = []
        for r in rows[start : start + batch]:
            if kind == "text":
                x = prepare_text(
                    r, feature.fields, separator=limits["text_separator"], max_chars=limits["max_text_chars"]
                )
                x = x if isinstance(x, Rejected) else x[0]
            else:
                x = read_image_bytes(r["image_path"], root=image_root, max_bytes=limits["max_image_bytes"])
                if not isinstance(x, Rejected):
                    x = decode_image(
                        x, max_pixels=limits["max_image_pixels"], formats=limits["image_formats"]
                    )
                x = x if isinstance(x, Rejected) else x.image
            if not isinstance(x, Rejected):
                inputs.append(x)
        enc.encode(inputs)
        done += len(inputs)
    total = time.perf_counter() - t0
    torch.set_num_threads(threads_before)
    return {
        "items": done,
        "seconds": total,
        "items_per_s": done / total,
        "cpu_seconds": time.process_time() - c0,
        "load_s": t_load,
        "encode_only_items_per_s": done / (total - t_load),
        "torch_threads": threads or threads_before,
    }


def pipeline_run(
    store: Path,
    spec: dict[str, Any],
    batch: int,
    mode: str,
    workers: int,
    image_root: Path | None = None,
) -> dict[str, float]:
    """``extract_feature`` end to end. CPU time is this process only: meaningful for
    ``in_memory`` runs (every worker is a thread here), not for ``multi_processing``."""
    from pipelines.beam.extract import extract_feature, plan_job
    from pipelines.layout import Layout
    from pipelines.stages.extract import feature_paths

    ex = extract_params(spec, batch, mode, workers)
    t0, c0 = time.perf_counter(), time.process_time()
    paths = feature_paths(Layout(store=store), "f")
    job = plan_job("f", ex.features["f"], paths=paths, ex=ex, seed=0, image_root=image_root)
    m = extract_feature(job, paths, ex)
    seconds = time.perf_counter() - t0
    n = m["counts"]["embedded"]
    return {
        "items": n,
        "seconds": seconds,
        "items_per_s": n / seconds,
        "cpu_seconds": time.process_time() - c0,
        "torch_threads": job.threads,
    }


def compare(
    name: str,
    store: Path,
    rows: list[dict[str, Any]],
    spec: dict[str, Any],
    batch: int,
    modes: list[tuple[str, int]],
    rounds: int,
    image_root: Path | None = None,
) -> dict[str, Any]:
    """Pipeline (each mode) and the plain loop run alternately (pipeline, raw, pipeline, raw,
    ...) for ``rounds`` rounds; ``ratio`` is the median of the per-round throughput ratios
    pipeline / raw, with their spread. The first mode is the headline figure."""
    from benchmarks.common import interleave

    out: dict[str, Any] = {
        "items": len(rows),
        "batch_size": batch,
        "encoder": spec["encoder"] + ":" + spec["model"],
        "rounds": rounds,
        "modes": {},
    }
    for mode, workers in modes:
        label = f"{mode}x{workers}"
        print(
            f"[{name}] {label} vs raw loop over {len(rows)} items, batch {batch}, {rounds} rounds", flush=True
        )
        cmp = interleave(
            lambda mode=mode, workers=workers: pipeline_run(store, spec, batch, mode, workers, image_root),
            lambda: raw_loop(spec, rows, batch, image_root),
            key="items_per_s",
            rounds=rounds,
            names=("pipeline", "raw"),
            log=lambda msg, label=label: print(f"[{name} {label}] {msg}", flush=True),
        )
        ratio = cmp["ratio_pipeline_over_raw"]
        entry = {
            "ratio": ratio["median"],
            "ratio_spread": [ratio["min"], ratio["max"]],
            "ratio_per_round": ratio["per_round"],
            "pipeline_items_per_s_median": round(cmp["median"]["pipeline"], 2),
            "raw_items_per_s_median": round(cmp["median"]["raw"], 2),
            "order": cmp["order"],
            "runs": {
                k: [{m: round(v, 3) for m, v in r.items()} for r in rs] for k, rs in cmp["runs"].items()
            },
        }
        if mode == "in_memory":  # CPU seconds per item: robust to neighbours, not to load time
            cpu = [
                r["cpu_seconds"] / p["cpu_seconds"]
                for r, p in zip(cmp["runs"]["raw"], cmp["runs"]["pipeline"], strict=True)
            ]
            entry["cpu_ratio_median"] = round(float(np.median(cpu)), 3)
        out["modes"][label] = entry
    first = out["modes"][f"{modes[0][0]}x{modes[0][1]}"]
    out |= {
        "pipeline_mode": next(iter(out["modes"])),
        "ratio": first["ratio"],
        "ratio_spread": first["ratio_spread"],
    }
    return out


def peak_rss(store: Path, spec: dict[str, Any], batch: int, mode: str, workers: int) -> dict[str, float]:
    """Run the pipeline in a child process and poll the RSS of it and its descendants."""
    import psutil

    cmd = [
        sys.executable,
        __file__,
        "--rss-child",
        str(store),
        "--batch",
        str(batch),
        "--mode",
        mode,
        "--workers",
        str(workers),
        "--spec",
        json.dumps(spec),
    ]
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT)
    proc, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    if child.returncode:
        raise RuntimeError(f"rss child failed with exit code {child.returncode}")
    return {"peak_rss_mb": round(peak / 2**20, 1), "seconds": round(time.perf_counter() - t0, 1)}


def machine() -> dict[str, Any]:
    import apache_beam
    import psutil
    import torch

    cpu = platform.processor()
    info = Path("/proc/cpuinfo")
    names = [
        ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines() if ln.startswith("model name")
    ]
    cpu = names[0] if names else cpu
    from pipelines.beam.extract import cpu_count

    return {
        "cpu": cpu,
        "cores": cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "apache_beam": apache_beam.__version__,
        "gpu": False,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=10_000, help="text items for the throughput comparison")
    ap.add_argument("--image-items", type=int, default=1_000, help="images for the throughput comparison")
    ap.add_argument(
        "--rss-sizes", default="10000,100000", help="text catalog sizes for peak RSS ('' to skip)"
    )
    ap.add_argument(
        "--rss-short-text",
        action="store_true",
        default=True,
        help="titles only (~8 tokens) in the RSS runs, so 100k items take minutes, not an hour",
    )
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="alternating pipeline/raw rounds (median ratio)")
    ap.add_argument(
        "--modes", default="in_memory:1", help="pipeline modes, e.g. in_memory:1,multi_processing:2"
    )
    ap.add_argument("--skip", default="", help="comma list of parts to skip: text,image,rss")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/extract_throughput.json")
    ap.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="in_memory", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.rss_child:
        pipeline_run(args.rss_child, json.loads(args.spec), args.batch, args.mode, args.workers)
        return
    modes = [(m.split(":")[0], int(m.split(":")[1])) for m in args.modes.split(",")]
    skip = set(args.skip.split(","))
    result: dict[str, Any] = {
        "machine": machine(),
        "load_average_before": os.getloadavg(),
        "command": " ".join(sys.argv),
    }
    with tempfile.TemporaryDirectory(prefix="extract-bench-") as tmp:
        tmp = Path(tmp)
        if "text" not in skip:
            rows = text_rows(args.items)
            result["text"] = compare(
                "text", write_store(tmp / "text", rows), rows, TEXT_SPEC, args.batch, modes, args.rounds
            )
        if "image" not in skip:
            rows = image_rows(tmp / "images", args.image_items)
            store = write_store(tmp / "image", rows)
            result["image"] = compare(
                "image", store, rows, IMAGE_SPEC, args.batch, modes, args.rounds, (tmp / "images").resolve()
            )
            result["image"]["note"] = "ViT-B-32 with random weights (offline); same compute as pretrained"
        sizes = [int(s) for s in args.rss_sizes.split(",") if s] if "rss" not in skip else []
        if sizes:
            spec = {**TEXT_SPEC, "fields": ["title"]} if args.rss_short_text else TEXT_SPEC
            result["rss_mb"], result["rss_runs"] = {}, {}
            for n in sizes:
                store = write_store(tmp / f"rss{n}", text_rows(n, seed=n, words=(0, 0)))
                print(f"[rss] pipeline over {n} text items ...", flush=True)
                run = peak_rss(store, spec, args.batch, *modes[0])
                result["rss_mb"][str(n)], result["rss_runs"][str(n)] = run["peak_rss_mb"], run
                print(f"[rss] {n} items: peak {run['peak_rss_mb']} MB in {run['seconds']}s", flush=True)
            lo, hi = result["rss_mb"][str(min(sizes))], result["rss_mb"][str(max(sizes))]
            result["rss_growth"] = round(hi / lo - 1, 3)
            result["rss_note"] = (
                "text encoder on titles only; RSS summed over the pipeline process and its Beam workers"
            )
    result["load_average_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {k: v for k, v in result.items() if k in ("text", "image", "rss_mb", "rss_growth")}, indent=2
        )
    )


if __name__ == "__main__":
    main()
