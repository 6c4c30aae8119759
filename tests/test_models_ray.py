"""The multimodal models under Ray Train with 2 workers (DistributedDataParallel)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_vbpr_and_lattice_train_with_two_ddp_workers(tiny_store, tmp_path, ray_session) -> None:
    # LATTICE's graph inputs get gradients on an epoch's first batch only: DDP must cope.
    from training import train_stage

    root, p = tiny_store
    p = json.loads(json.dumps(p))
    p["train"].update(models=["vbpr", "lattice"], backend="ray", workers=2)
    p["train"]["ray"]["storage_path"] = str(tmp_path / "ray")
    p["train"]["common"].update(epochs=3, report_every=1)
    store, graphs = root / "store", root / "store/graphs/item_knn"
    summary = train_stage.run(p, store, graphs, tmp_path / "models", tmp_path / "curves")
    for name in ("vbpr", "lattice"):
        assert summary[name]["epochs"] == 3
        assert 0 <= summary[name]["test_mean"]["recall@20"] <= 1
        assert (tmp_path / "models" / name / "model.pt").exists()
