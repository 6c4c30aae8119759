"""Optional image download into the local mirror (off by default; needs a network).

Each item with an ``image_url`` and no local image is fetched once into ``data.images``
as ``<item_id><ext>`` (the folder is the cache: present files are never fetched again),
with a request rate limit, retries with exponential back-off on transient failures
(timeouts, 429, 5xx) and no retry on permanent ones (404, 403). Files are written to a
temporary name and renamed, so an interrupted run never leaves a partial image.
"""

from __future__ import annotations

import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import polars as pl

from pipelines.sources import RawData, SourceError

log = logging.getLogger(__name__)
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class DownloadReport:
    fetched: int = 0
    cached: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # item_id -> reason


@dataclass
class RateLimiter:
    """At most ``per_second`` calls per second (sleeps between calls)."""

    per_second: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _next: float = 0.0

    def wait(self) -> None:
        if self.per_second <= 0:
            return
        now = self.clock()
        if now < self._next:
            self.sleep(self._next - now)
            now = self._next
        self._next = now + 1.0 / self.per_second


def target_name(item_id: str, url: str) -> str:
    """``<item_id><ext>`` with the URL's extension (``.jpg`` when it has none); unsafe
    characters of the id are replaced so the name is a plain file name."""
    ext = Path(urlparse(url).path).suffix.lower()
    if ext not in (".jpg", ".jpeg", ".png", ".webp", ".gif"):
        ext = ".jpg"
    return _SAFE.sub("_", item_id) + ext


def fetch(url: str, *, timeout: float, user_agent: str) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": user_agent})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - URLs come from the catalog
        return resp.read()


def download_images(
    pairs: list[tuple[str, str]],
    folder: Path,
    *,
    rate_per_second: float = 2.0,
    retries: int = 3,
    backoff_seconds: float = 1.0,
    timeout_seconds: float = 20.0,
    user_agent: str = "mmrec-platform",
    fetcher: Callable[..., bytes] = fetch,
    sleep: Callable[[float], None] = time.sleep,
) -> DownloadReport:
    """Fetch ``(item_id, url)`` pairs into ``folder`` (the cache)."""
    folder.mkdir(parents=True, exist_ok=True)
    limiter = RateLimiter(rate_per_second, sleep=sleep)
    report = DownloadReport()
    for item_id, url in pairs:
        dest = folder / target_name(item_id, url)
        if dest.exists():
            report.cached += 1
            continue
        for attempt in range(retries + 1):
            limiter.wait()
            try:
                data = fetcher(url, timeout=timeout_seconds, user_agent=user_agent)
            except urllib.error.HTTPError as e:
                reason = f"HTTP {e.code} for {url}"
                transient = e.code in TRANSIENT_HTTP
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                reason = f"{type(e).__name__}: {e} for {url}"
                transient = True
            else:
                tmp = dest.with_name(f".{dest.name}.part")
                tmp.write_bytes(data)
                os.replace(tmp, dest)
                report.fetched += 1
                break
            if not transient or attempt == retries:
                report.failed[item_id] = reason
                break
            sleep(backoff_seconds * 2**attempt)
    log.info(
        "download: %d fetched, %d cached, %d failed into %s",
        report.fetched,
        report.cached,
        len(report.failed),
        folder,
    )
    return report


def fetch_missing_images(raw: RawData, data: dict[str, Any], opts: dict[str, Any]) -> RawData:
    """Download the images the mirror lacks and point ``image_path`` at them."""
    if "image_url" not in raw.items.columns:
        return raw
    images = data.get("images")
    if not images:
        raise SourceError("params.yaml data.images: a folder is needed to download images into")
    folder = Path(images)
    todo = raw.items.filter(
        pl.col("image_path").is_null() & pl.col("image_url").is_not_null() & pl.col("item_id").is_not_null()
    )
    pairs = list(
        zip(todo.get_column("item_id").to_list(), todo.get_column("image_url").to_list(), strict=True)
    )
    report = download_images(
        pairs,
        folder,
        rate_per_second=float(opts.get("rate_per_second", 2.0)),
        retries=int(opts.get("retries", 3)),
        backoff_seconds=float(opts.get("backoff_seconds", 1.0)),
        timeout_seconds=float(opts.get("timeout_seconds", 20.0)),
        user_agent=str(opts.get("user_agent", "mmrec-platform")),
    )
    names = {
        iid: target_name(iid, url)
        for iid, url in pairs
        if iid not in report.failed and (folder / target_name(iid, url)).exists()
    }
    items = raw.items.with_columns(
        pl.when(pl.col("image_path").is_null())
        .then(pl.col("item_id").replace_strict(names, default=None, return_dtype=pl.String))
        .otherwise(pl.col("image_path"))
        .alias("image_path")
    )
    return RawData(
        items=items,
        interactions=raw.interactions,
        image_root=folder,
        inputs=raw.inputs,
        item_rejects=raw.item_rejects,
        interaction_rejects=raw.interaction_rejects,
        facts={
            **raw.facts,
            "download": {"fetched": report.fetched, "cached": report.cached, "failed": len(report.failed)},
        },
    )
