"""Time the validation gate on a 100k-item, 384-d feature table (plus drift against a previous one).

Builds a synthetic store in a temporary folder (items + one L2-normalised feature table
+ its previous snapshot with 3% of items changed), then times:

- ``gate_pass``: the validate stage (``pipelines.stages.validate.run``) on the feature
  table (suite + GX + drift + report), all checks pass;
- ``gate_fail``: the same on a collapsed table where every row fails several checks
  (the case where asking GX for every unexpected index used to cost seconds per check);
- the parts: reading the table and building the validation frame, the GX run, drift on
  its own (reads both snapshots; inside the gate the current one is read once).

    .venv/bin/python benchmarks/validate_scale.py [--items 100000] [--dim 384]

Prints the figures and writes ``benchmarks/results/validate_scale.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from validation_helpers import feature_table, items_table, write_features  # noqa: E402

from features import schemas  # noqa: E402
from features.store import write_table  # noqa: E402
from pipelines.config import Config, load_config  # noqa: E402
from pipelines.layout import Layout  # noqa: E402
from pipelines.stages import validate  # noqa: E402
from validation.drift import drift  # noqa: E402
from validation.gx_runner import validate_frame  # noqa: E402
from validation.suites import feature_suite  # noqa: E402
from validation.vectors import load_vectors  # noqa: E402

ID = "item{}"


def build(layout: Layout, n: int, d: int, seed: int) -> None:
    """Items, ``features/text`` with its previous generation (3% changed), ``features/collapsed``."""
    rng = np.random.default_rng(seed)
    write_table(layout.items(write=True), items_table(n, fmt=ID), schemas.ITEMS)
    emb = rng.standard_normal((n, d), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    manifest = {"encoder_id": "bench@1", "counts": {"embedded": n, "rejected": 0}}
    ids = np.arange(n)
    hashes = [f"h{i}" for i in range(n)]
    previous = layout.feature_previous("text", write=True)
    write_features(previous, feature_table(ids, emb, hashes, ID), **manifest)
    changed = rng.choice(n, int(0.03 * n), replace=False)
    emb[changed] = np.roll(emb[changed], 1, axis=0)
    for i in changed:
        hashes[i] = f"h{i}-v2"
    write_features(layout.feature("text", write=True), feature_table(ids, emb, hashes, ID), **manifest)
    collapsed = np.repeat(emb[:1] * 2, n, axis=0)  # one point, norm 2: duplicates, unit norm, mean cosine
    collapsed_path = layout.feature("collapsed", write=True)
    write_features(collapsed_path, feature_table(ids, collapsed, hashes, ID), **manifest)


def timed(fn):  # noqa: ANN001, ANN201 - tiny helper
    t0 = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t0, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/validate_scale.json")
    args = ap.parse_args()
    config = load_config(ROOT / "params.yaml")
    th = config.validate_params.for_feature("text")
    tmp = Path(tempfile.mkdtemp(prefix="validate_scale-"))
    try:
        layout = Layout(store=tmp / "store", reports=tmp / "reports")
        _, t_build = timed(lambda: build(layout, args.items, args.dim, config.seed))
        summary, t_pass = timed(lambda: validate.run(config, layout, tables=["features/text"]))
        assert summary["success"], summary["failures"]
        drift_entry = summary["drift"]["features/text"]
        err, t_fail = timed(lambda: _expect_failure(config, layout))

        def suite_of_text():  # noqa: ANN202 - timed lambda body
            fv = load_vectors(layout.feature("text"))
            return feature_suite(fv, layout.items(), layout.feature_rejects("text"), th, config.seed)

        suite, t_suite = timed(suite_of_text)
        _, t_gx = timed(
            lambda: validate_frame(
                "features/text", suite.frame, suite.expectations, id_columns=suite.id_columns
            )
        )
        _, t_drift = timed(
            lambda: drift(layout.feature_previous("text"), layout.feature("text"), th, table="text")
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "command": " ".join([".venv/bin/python benchmarks/validate_scale.py", *sys.argv[1:]]),
        "items": args.items,
        "dim": args.dim,
        "seconds": {
            "gate_pass_features_and_drift": t_pass,
            "gate_fail_collapsed_table": t_fail,
            "feature_suite_read_and_frame": t_suite,
            "gx_run": t_gx,
            "drift_read_both_and_compare": t_drift,
            "build_synthetic_store": t_build,
        },
        "limit_seconds": 30,
        "drift_changed_share": drift_entry["shares"]["changed_share"],
        "drift_min_unchanged_cosine": drift_entry["stats"]["unchanged_cosine"]["min"],
        "failed_checks_on_collapsed": err,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "measured": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in result["seconds"].items():
        print(f"{k:32s} {v:8.2f} s")
    print(f"changed share {result['drift_changed_share']:.4f}; collapsed table failed: {err}")
    print(f"wrote {args.out}")


def _expect_failure(config: Config, layout: Layout) -> list[str]:
    try:
        validate.run(config, layout, tables=["features/collapsed"])
    except validate.ValidationFailed:
        summary = json.loads((layout.validation() / "summary.json").read_text())
        return sorted({d["check"] for d in summary["failure_details"]})
    raise AssertionError("the collapsed table passed validation")


if __name__ == "__main__":
    main()
