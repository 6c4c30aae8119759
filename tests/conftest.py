"""Shared fixtures: one local Ray per session and one tiny store built by the real stages."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]
TINY_CLIP = str(ROOT / "tests" / "fixtures" / "tiny-clip.json")


def tiny_raw(root: Path) -> dict[str, Any]:
    """The project's params.yaml (as a mapping) shrunk to a tiny demo under ``root``."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = copy.deepcopy(params)
    p["demo"].update(n_items=120, n_users=80, n_interactions=1600, image_size=32)
    p["data"].update(
        items=str(root / "raw/items.csv"),
        interactions=str(root / "raw/interactions.csv"),
        images=str(root / "raw/images"),
    )
    p["extract"]["features"]["image_clip"].update(model="tiny-clip", model_config=TINY_CLIP, pretrained=None)
    # A tiny random ViT maps all images into a narrow cone; the collapse check would fire.
    p["validate"]["feature_overrides"] = {
        "image_clip": {"max_mean_pair_cosine": 0.995, "allow_random_weights": True}
    }
    # 120 items cannot use 256 codes per level: a codebook the tiny catalog can fill.
    for table in p["semantic_ids"]["tables"].values():
        table.update(codebook_size=8, kmeans_iters=10)
    p["train"]["common"].update(epochs=4, patience=20, report_every=2)
    p["train"]["backend"] = "local"
    p["train"]["ray"]["storage_path"] = str(root / "ray_results")
    return p


def tiny_config(root: Path, **sections: Any):
    """``tiny_raw`` with whole sections replaced (``train={...}``), as a checked Config."""
    from pipelines.config import Config

    raw = tiny_raw(root)
    raw.update(sections)
    return Config.from_dict(raw)


def tiny_layout(root: Path):
    from pipelines.layout import Layout

    return Layout(store=root / "store", models=root / "models", reports=root / "reports")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory):
    """demo -> ingest -> extract (Beam, DirectRunner) -> graph, once per session:
    (root, config, layout)."""
    from pipelines.stages import demo, extract, graph, ingest

    root = tmp_path_factory.mktemp("tiny")
    config = tiny_config(root)
    layout = tiny_layout(root)
    demo.run(config, root / "raw", progress=False)
    ingest.run(config, layout)
    extract.run(config, layout)
    graph.run(config, layout)
    return root, config, layout
