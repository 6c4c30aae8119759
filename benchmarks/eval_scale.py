"""Full-ranking evaluation at catalog scale: users/s and peak RSS.

A synthetic catalog (random 64-d user and item embeddings, 20 train and 5 test items
per user) is ranked with ``evaluation.metrics.rank`` exactly as the evaluate stage does
(train items masked, top-K by ``torch.topk``, popularity buckets, coverage). Each
(items, users) case runs in a fresh process, so its peak RSS is its own. Growing the
users at a fixed catalog leaves the peak flat; a dense users x items float32 score
matrix is shown for comparison. Writes JSON.

``--compare`` times, per catalog size, the whole-catalog chunks this code used before
(``chunk_rows`` users x every item, e.g. 67 users at 1M items and 256 MB) against item
blocks (``chunk_shape``: ``chunk_size`` users x the items the same cap leaves), alternately
(A B A B) for ``--rounds`` rounds, each run in its own process; median ratio and spread.

    .venv/bin/python -m benchmarks.eval_scale --out benchmarks/results/eval_scale.json
    .venv/bin/python -m benchmarks.eval_scale --items 1000000 --users 2000 --compare --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from benchmarks.common import RESULTS, interleave, peak_rss_mb, rss_mb, run_child


def one(
    n_items: int, n_users: int, dim: int, threads: int, chunk_size: int, chunk_mb: float, item_block: int = 0
) -> dict:
    """One case in this process; returns its figures."""
    import numpy as np
    import torch

    from evaluation.metrics import chunk_rows, chunk_shape, rank
    from training.data import Interactions

    torch.set_num_threads(threads)
    rss_start = rss_mb()
    g = torch.Generator().manual_seed(0)
    ue = torch.randn(n_users, dim, generator=g)
    ie = torch.randn(n_items, dim, generator=g)
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(n_users, dtype=np.int64), 25)
    items = rng.integers(0, n_items, len(users))
    is_test = np.tile(np.arange(25) >= 20, n_users)
    train = Interactions(users[~is_test], items[~is_test])
    test = Interactions(users[is_test], items[is_test])
    rss_setup = rss_mb()
    if item_block < 0:  # whole catalog per chunk: the users the cap allows against every item
        chunk_size, block = chunk_rows(n_items, chunk_size, chunk_mb), n_items
    else:
        block = item_block or None
    shape = chunk_shape(n_items, chunk_size, chunk_mb, block)
    t0 = time.perf_counter()
    res = rank(ue, ie, test, train, n_users, (10, 20, 50), chunk_size, max_chunk_mb=chunk_mb,
               popularity_split=[0.2, 0.5], few_train_max=5, item_block=block)  # fmt: skip
    seconds = time.perf_counter() - t0
    return {
        "n_items": n_items,
        "n_users": n_users,
        "dim": dim,
        "threads": threads,
        "users_per_chunk": shape[0],
        "items_per_block": shape[1],
        "seconds": round(seconds, 2),
        "users_per_second": round(res.means["users"] / seconds, 1),
        "rss_start_mb": round(rss_start, 1),
        "rss_after_setup_mb": round(rss_setup, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "item_embeddings_mb": round(n_items * dim * 4 / 2**20, 1),
        "dense_scores_would_need_mb": round(n_users * n_items * 4 / 2**20, 1),
        "recall@20": round(res.means["recall@20"], 6),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--users", type=int, nargs="+", default=[2_000, 8_000])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=2048)
    ap.add_argument("--chunk-mb", type=float, default=256)
    ap.add_argument("--item-block", type=int, default=0, help="items per block (0: from the cap; -1: all)")
    ap.add_argument("--compare", action="store_true", help="whole-catalog chunks vs item blocks, interleaved")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "eval_scale.json")
    ap.add_argument("--one", type=int, nargs=2, metavar=("ITEMS", "USERS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        a = args
        print(json.dumps(one(*a.one, a.dim, a.threads, a.chunk_size, a.chunk_mb, a.item_block)))
        return

    def case(n_items: int, n_users: int, item_block: int) -> dict:
        return run_child(["benchmarks.eval_scale", "--one", str(n_items), str(n_users),
                          "--dim", str(args.dim), "--threads", str(args.threads),
                          "--chunk-size", str(args.chunk_size), "--chunk-mb", str(args.chunk_mb),
                          "--item-block", str(item_block)])  # fmt: skip

    rows, comparisons = [], []
    for n_items in args.items:
        for n_users in args.users:
            if args.compare:
                cmp = interleave(
                    lambda n_items=n_items, n_users=n_users: case(n_items, n_users, 0),
                    lambda n_items=n_items, n_users=n_users: case(n_items, n_users, -1),
                    key="users_per_second",
                    rounds=args.rounds,
                    names=("blocks", "whole_catalog"),
                )
                comparisons.append({"n_items": n_items, "n_users": n_users, **cmp})
                rows += cmp["runs"]["blocks"]
                same = {r["recall@20"] for side in cmp["runs"].values() for r in side}
                print(n_items, n_users, cmp["ratio_blocks_over_whole_catalog"], "recall@20", same, flush=True)
            else:
                rows.append(case(n_items, n_users, args.item_block))
                print(rows[-1], flush=True)
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg": os.getloadavg(),
            "note": "2 cores shared with other jobs; CPU only",
        },
        "chunk_size": args.chunk_size,
        "chunk_memory_mb": args.chunk_mb,
        "ks": [10, 20, 50],
        "cases": rows,
        **({"comparisons": comparisons} if comparisons else {}),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
