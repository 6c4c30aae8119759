"""Image download: cache, rate limit, retries on transient errors only (local HTTP server)."""

from __future__ import annotations

import functools
import http.server
import threading
import urllib.error
from pathlib import Path

import polars as pl

from pipelines.download import RateLimiter, download_images, fetch_missing_images, target_name
from pipelines.sources import RawData


def _serve(folder: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_fetches_once_then_uses_the_cache(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.png").write_bytes(b"PNG-A")
    server = _serve(site)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        items = pl.DataFrame(
            {
                "item_id": ["A 1", "B"],
                "title": ["a", "b"],
                "description": [None, None],
                "category": [None, None],
                "image_path": [None, None],
                "image_url": [f"{base}/a.png", f"{base}/missing.jpg"],
            }
        )
        raw = RawData(items=items, interactions=pl.DataFrame(), image_root=tmp_path)
        opts = {"rate_per_second": 0, "retries": 2, "backoff_seconds": 0}
        out = fetch_missing_images(raw, {"images": str(tmp_path / "mirror")}, opts)
        assert (tmp_path / "mirror" / "A_1.png").read_bytes() == b"PNG-A"
        assert out.items.get_column("image_path").to_list() == ["A_1.png", None]
        assert out.facts["download"] == {"fetched": 1, "cached": 0, "failed": 1}  # 404: no retry
        again = fetch_missing_images(raw, {"images": str(tmp_path / "mirror")}, opts)
        assert again.facts["download"]["cached"] == 1 and again.facts["download"]["fetched"] == 0
    finally:
        server.shutdown()


def test_transient_errors_are_retried_with_backoff(tmp_path: Path) -> None:
    calls, sleeps = [], []

    def flaky(url: str, **_: object) -> bytes:
        calls.append(url)
        if len(calls) < 3:
            raise urllib.error.HTTPError(url, 503, "busy", {}, None)  # type: ignore[arg-type]
        return b"ok"

    rep = download_images(
        [("x", "http://h/x.jpg")],
        tmp_path,
        rate_per_second=0,
        retries=3,
        backoff_seconds=0.5,
        fetcher=flaky,
        sleep=sleeps.append,
    )
    assert rep.fetched == 1 and len(calls) == 3 and sleeps == [0.5, 1.0]
    assert (tmp_path / target_name("x", "http://h/x.jpg")).read_bytes() == b"ok"


def test_rate_limiter_spaces_calls() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    lim = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        lim.wait()
    assert slept == [0.25, 0.25]
