"""Export a store in the MMRec toolbox's dataset layout, for side-by-side parity runs.

``<out>/<name>/<name>.inter``: tab-separated ``userID itemID x_label`` (0/1/2 = train/
valid/test) with this store's dense ``user_idx``/``item_idx`` as ids, so both tools see
the same split; ``text_feat.npy`` / ``image_feat.npy``: the named feature tables aligned
to ``item_idx`` (float32). MMRec caches kNN graphs next to the data (``*_adj_*.pt``):
they are removed so a re-export never trains on stale graphs.

    python -m benchmarks.export_mmrec --store bench/ml100k/store --out bench/mmrec_data \
        --name ml100k --text text_minilm --image genre_minilm
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SPLIT_LABEL = {"train": 0, "valid": 1, "test": 2}


def export(
    store: Path, out: Path, name: str, text_feature: str | None, image_feature: str | None
) -> dict[str, object]:
    """Write the MMRec dataset folder ``out/name``; returns counts."""
    from features.reader import load_features
    from pipelines.layout import Layout
    from pipelines.stages.common import data_source
    from training.data import load_interactions

    layout = Layout(store=store)
    n_users, n_items, splits = load_interactions(data_source(layout, []))
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    for cached in folder.glob("*_adj_*.pt"):
        cached.unlink()
    lines = ["userID\titemID\tx_label"]
    for split, label in SPLIT_LABEL.items():
        part = splits[split]
        lines.extend(
            f"{u}\t{i}\t{label}" for u, i in zip(part.users.tolist(), part.items.tolist(), strict=True)
        )
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    dims = {}
    for file, feature in (("text_feat.npy", text_feature), ("image_feat.npy", image_feature)):
        target = folder / file
        if feature is None:
            target.unlink(missing_ok=True)
            continue
        f = load_features(layout.feature(feature), n_items=n_items)
        matrix, present = f.matrix, f.present
        if not present.all():
            raise ValueError(f"feature {feature}: {(~present).sum()} items have no vector; MMRec needs all")
        np.save(target, matrix.astype(np.float32))
        dims[file] = int(matrix.shape[1])
    # MMRec takes n_users/n_items as max id + 1 over the .inter rows: check they agree.
    max_u = max(int(p.users.max()) for p in splits.values() if len(p))
    max_i = max(int(p.items.max()) for p in splits.values() if len(p))
    info = {
        "users": n_users,
        "items": n_items,
        "mmrec_users": max_u + 1,
        "mmrec_items": max_i + 1,
        "rows": {s: len(p) for s, p in splits.items()},
        "features": dims,
    }
    if (max_u + 1, max_i + 1) != (n_users, n_items):
        raise ValueError(
            f"ids do not cover the store's users/items, MMRec would size its tables differently: {info}"
        )
    (folder / "export.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--text", default=None, help="feature table written as text_feat.npy")
    ap.add_argument("--image", default=None, help="feature table written as image_feat.npy")
    a = ap.parse_args()
    print(json.dumps(export(a.store, a.out, a.name, a.text, a.image), indent=1))


if __name__ == "__main__":
    main()
