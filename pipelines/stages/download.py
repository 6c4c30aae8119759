"""Download (ad hoc, not a DVC stage): fetch the catalog's missing images into ``data.images``.

Items whose image could not be fetched (refused URL or address, too large, too slow,
wrong content type, HTTP error ...) are listed with their reason in
``<data.images>/_download_rejects.parquet`` (see :mod:`pipelines.download`).
"""

from __future__ import annotations

from typing import Any

from pipelines.adapters import read_source
from pipelines.config import Config
from pipelines.download import fetch_missing_images, record_download_rejects


def run(config: Config) -> dict[str, Any]:
    data = config.data.model_dump()
    raw, rejects = fetch_missing_images(
        read_source(data), data, config.effective_ingest().download.model_dump()
    )
    path = record_download_rejects(data, rejects)
    return {
        "items": raw.items.height,
        **raw.facts.get("download", {}),
        "rejects": str(path) if path else None,
    }
