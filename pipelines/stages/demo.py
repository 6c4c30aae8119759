"""Demo stage: the built-in demo catalog (items, images, interactions) from params ``demo``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipelines.config import Config
from pipelines.demo_catalog import DemoSpec, generate_demo

log = logging.getLogger(__name__)


def run(config: Config, out: Path, *, progress: bool = True) -> dict[str, Any]:
    d = config.demo
    spec = DemoSpec(
        n_items=d.n_items,
        n_users=d.n_users,
        n_interactions=d.n_interactions,
        image_size=d.image_size,
        seed=d.seed if d.seed is not None else config.seed,
    )
    stats = generate_demo(out, spec, progress=progress)
    log.info("demo catalog: %s", {k: stats[k] for k in ("n_items", "n_users", "n_interactions")})
    return stats
