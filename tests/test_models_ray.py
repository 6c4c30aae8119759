"""The multimodal models under Ray Train with 2 workers (DistributedDataParallel)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_vbpr_and_lattice_train_with_two_ddp_workers(tiny_store, tmp_path, ray_session) -> None:
    # LATTICE's graph inputs get gradients on an epoch's first batch only: DDP must cope.
    from pipelines.layout import Layout
    from pipelines.stages import train as train_stage

    root, config, _ = tiny_store
    config = config.updated(
        {
            "train": {
                "models": ["vbpr", "lattice"],
                "backend": "ray",
                "workers": 2,
                "ray": {"storage_path": str(tmp_path / "ray")},
                "common": {"epochs": 3, "report_every": 1},
            }
        }
    )
    layout = Layout(store=root / "store", models=tmp_path / "models", reports=tmp_path / "reports")
    summary = train_stage.run(config, layout)
    for name in ("vbpr", "lattice"):
        assert summary[name]["epochs"] == 3
        assert 0 <= summary[name]["test_mean"]["recall@20"] <= 1
        assert (tmp_path / "models" / name / "model.pt").exists()
