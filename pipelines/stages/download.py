"""Download (ad hoc, not a DVC stage): fetch the catalog's missing images into ``data.images``."""

from __future__ import annotations

from typing import Any

from pipelines.adapters import read_source
from pipelines.config import Config
from pipelines.download import fetch_missing_images


def run(config: Config) -> dict[str, Any]:
    data = config.data.model_dump()
    raw = fetch_missing_images(read_source(data), data, config.effective_ingest().download.model_dump())
    return {"items": raw.items.height}
