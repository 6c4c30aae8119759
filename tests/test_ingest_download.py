"""Image download against a local HTTP server on 127.0.0.1 (bounded, stops by itself):
cache, rate limit, retries on transient errors only, and the hostile-catalog guards
(schemes, redirects re-checked, private addresses, size cap, deadline, content type,
temp files, collision-free names, rejects table)."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipelines.download import (
    REJECTS_NAME,
    Policy,
    RateLimiter,
    address_problem,
    download_images,
    fetch_missing_images,
    read_download_rejects,
    record_download_rejects,
    target_name,
)
from pipelines.sources import RawData

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 100
HITS: dict[str, int] = {}


class Handler(http.server.BaseHTTPRequestHandler):
    """Routes by path; every response is small and every handler ends within ~3 s."""

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", ctype: str | None = "image/png", **headers: str) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path
        HITS[path] = HITS.get(path, 0) + 1
        port = self.server.server_address[1]
        if path == "/good.png":
            self._send(200, PNG, "image/png; charset=binary")
        elif path == "/redirect":
            self._send(302, b"", None, Location="/good.png")
        elif path.startswith("/loop/"):
            n = int(path.rsplit("/", 1)[1])
            self._send(302, b"", None, Location=f"http://127.0.0.1:{port}/loop/{n + 1}")
        elif path == "/to-file":
            self._send(302, b"", None, Location="file:///etc/passwd")
        elif path == "/to-private":
            self._send(302, b"", None, Location="http://10.0.0.1/x.png")
        elif path == "/big-declared":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "100000000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
        elif path == "/big-streamed":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Connection", "close")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(64):
                    self.wfile.write(b"x" * 1024)
            self.close_connection = True
        elif path == "/drip":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "30")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(30):  # 1 byte every 0.1 s: 3 s, never a 0.5 s socket silence
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
        elif path == "/drip-headers":
            with contextlib.suppress(OSError):
                self.wfile.write(b"HTTP/1.0 200 OK\r\n")
                for _ in range(30):  # an endless-looking header, 1 byte every 0.1 s
                    self.wfile.write(b"X")
                    self.wfile.flush()
                    time.sleep(0.1)
        elif path == "/html":
            self._send(200, b"<html></html>", "text/html; charset=utf-8")
        elif path == "/no-type":
            self._send(200, PNG, None)
        elif path == "/flaky.png":
            if HITS[path] == 1:
                self._send(503, b"busy", "text/plain")
            else:
                self._send(200, PNG)
        elif path.startswith("/same/"):
            self._send(200, path.encode(), "image/jpeg")
        else:
            self._send(404, b"nope", "text/plain")


@pytest.fixture
def server() -> Iterator[str]:
    HITS.clear()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    stopper = threading.Timer(20.0, srv.shutdown)  # stops by itself even if a test hangs
    stopper.daemon = True
    stopper.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        stopper.cancel()
        srv.shutdown()
        srv.server_close()


LOCAL = Policy(allow_private_addresses=True, timeout_seconds=2.0, deadline_seconds=3.0, max_redirects=3)


def _one(folder: Path, url: str, policy: Policy = LOCAL, retries: int = 0, item: str = "x"):
    return download_images(
        [(item, url)], folder, policy, rate_per_second=0, retries=retries, backoff_seconds=0
    )


def _no_leftovers(folder: Path) -> None:
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def test_good_image_is_fetched_once_then_cached(server: str, tmp_path: Path) -> None:
    rep = _one(tmp_path, f"{server}/good.png")
    assert rep.fetched == 1 and not rep.failed
    assert (tmp_path / target_name("x", f"{server}/good.png")).read_bytes() == PNG
    again = _one(tmp_path, f"{server}/good.png")
    assert again.cached == 1 and again.fetched == 0 and HITS["/good.png"] == 1
    _no_leftovers(tmp_path)


def test_redirect_is_followed(server: str, tmp_path: Path) -> None:
    rep = _one(tmp_path, f"{server}/redirect")
    assert rep.fetched == 1 and HITS == {"/redirect": 1, "/good.png": 1}
    assert (tmp_path / target_name("x", f"{server}/redirect")).read_bytes() == PNG


def test_redirect_chain_longer_than_max_redirects(server: str, tmp_path: Path) -> None:
    rep = _one(tmp_path, f"{server}/loop/0")
    assert rep.failed["x"].startswith("redirects: more than 3 redirects")
    assert sum(HITS.values()) == 4  # the first request + 3 hops, then stop
    _no_leftovers(tmp_path)


def test_redirect_to_file_url_is_refused(server: str, tmp_path: Path) -> None:
    rep = _one(tmp_path, f"{server}/to-file")
    assert rep.failed["x"] == "scheme: scheme 'file' not allowed (http/https only)"


def test_redirect_to_private_address_is_rechecked(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # loopback allowed for the first hop only by pinning the check: 10.0.0.1 must still be refused
    import pipelines.download as dl

    real = dl.address_problem
    monkeypatch.setattr(dl, "address_problem", lambda a: None if a == "127.0.0.1" else real(a))
    rep = _one(tmp_path, f"{server}/to-private", Policy(timeout_seconds=2.0, deadline_seconds=3.0))
    assert rep.failed["x"].startswith("address: 10.0.0.1 is a private address (refused)")


def test_oversize_by_content_length(server: str, tmp_path: Path) -> None:
    rep = _one(tmp_path, f"{server}/big-declared", Policy(allow_private_addresses=True, max_bytes=10_000))
    assert rep.failed["x"].startswith("size: Content-Length 100000000 > max_bytes 10000")
    _no_leftovers(tmp_path)


def test_oversize_without_content_length_is_cut_while_streaming(server: str, tmp_path: Path) -> None:
    rep = _one(tmp_path, f"{server}/big-streamed", Policy(allow_private_addresses=True, max_bytes=10_000))
    assert rep.failed["x"].startswith("size: body over max_bytes 10000")
    assert list(tmp_path.iterdir()) == []  # the partial temp file is removed


def test_slow_drip_is_cut_at_the_deadline(server: str, tmp_path: Path) -> None:
    policy = Policy(allow_private_addresses=True, timeout_seconds=2.0, deadline_seconds=0.5)
    t0 = time.monotonic()
    rep = _one(tmp_path, f"{server}/drip", policy, retries=2)
    took = time.monotonic() - t0
    assert rep.failed["x"].startswith("deadline: 0.5 s deadline passed")
    assert took < 1.5 and HITS["/drip"] == 1  # cut near 0.5 s, not retried
    assert list(tmp_path.iterdir()) == []


def test_slow_drip_of_headers_is_cut_at_the_deadline(server: str, tmp_path: Path) -> None:
    policy = Policy(allow_private_addresses=True, timeout_seconds=2.0, deadline_seconds=0.5)
    t0 = time.monotonic()
    rep = _one(tmp_path, f"{server}/drip-headers", policy, retries=2)
    assert rep.failed["x"].startswith("deadline: 0.5 s deadline passed")
    assert time.monotonic() - t0 < 1.5 and HITS["/drip-headers"] == 1


def test_wrong_or_missing_content_type(server: str, tmp_path: Path) -> None:
    rep = download_images(
        [("h", f"{server}/html"), ("n", f"{server}/no-type")], tmp_path, LOCAL, rate_per_second=0
    )
    assert rep.failed == {
        "h": f"content-type: 'text/html' not allowed for {server}/html",
        "n": f"content-type: no Content-Type for {server}/no-type",
    }
    assert HITS == {"/html": 1, "/no-type": 1}  # permanent: no retry


def test_404_is_not_retried_and_503_is(server: str, tmp_path: Path) -> None:
    rep = download_images(
        [("a", f"{server}/missing.png"), ("b", f"{server}/flaky.png")],
        tmp_path,
        LOCAL,
        rate_per_second=0,
        retries=2,
        backoff_seconds=0,
    )
    assert rep.failed == {"a": f"http: HTTP 404 for {server}/missing.png"}
    assert rep.fetched == 1 and HITS == {"/missing.png": 1, "/flaky.png": 2}


def test_backoff_doubles(server: str, tmp_path: Path) -> None:
    sleeps: list[float] = []
    rep = download_images(
        [("b", f"{server}/flaky.png")],
        tmp_path,
        LOCAL,
        rate_per_second=0,
        retries=3,
        backoff_seconds=0.5,
        sleep=sleeps.append,
    )
    assert rep.fetched == 1 and sleeps == [0.5]


def test_ids_that_sanitise_alike_get_different_files(server: str, tmp_path: Path) -> None:
    pairs = [
        ("a/b", f"{server}/same/1.jpg"),
        ("a_b", f"{server}/same/2.jpg"),
        ("A_B", f"{server}/same/3.jpg"),
    ]
    rep = download_images(pairs, tmp_path, LOCAL, rate_per_second=0)
    assert rep.fetched == 3
    names = {iid: target_name(iid, url) for iid, url in pairs}
    assert len({n.lower() for n in names.values()}) == 3  # distinct even on case-folding file systems
    assert (tmp_path / names["a/b"]).read_bytes() == b"/same/1.jpg"
    assert (tmp_path / names["a_b"]).read_bytes() == b"/same/2.jpg"
    assert target_name("../../etc", "http://h/x").startswith("_._.._etc-")  # no path, no hidden file


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "scheme: scheme 'file' not allowed (http/https only)"),
        ("ftp://example.com/a.png", "scheme: scheme 'ftp' not allowed (http/https only)"),
        ("data:image/png;base64,iVBORw0KGgo=", "scheme: scheme 'data' not allowed (http/https only)"),
        ("javascript:alert(1)", "scheme: scheme 'javascript' not allowed (http/https only)"),
        ("/images/a.png", "scheme: relative URL (no scheme); http/https only"),
        ("http:///a.png", "url: URL has no host"),
        ("http://exa mple.com/a.png", "url: URL contains whitespace or control characters"),
        ("http://example.com:99999/a.png", "url: malformed URL: Port out of range 0-65535"),
    ],
)
def test_bad_schemes_and_urls_are_refused_without_traffic(
    url: str, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("no DNS lookup expected")

    monkeypatch.setattr(socket, "getaddrinfo", boom)
    rep = _one(tmp_path, url, Policy(), retries=3)
    assert rep.failed == {"x": reason}


def test_loopback_refused_by_default(server: str, tmp_path: Path) -> None:
    rep = _one(tmp_path, f"{server}/good.png", Policy(), retries=3)
    assert rep.failed["x"] == "address: 127.0.0.1 is a loopback address (refused)"
    assert HITS == {}  # the server never saw a request; not retried
    local = server.replace("127.0.0.1", "localhost")
    assert "a loopback address (refused)" in _one(tmp_path, f"{local}/good.png", Policy()).failed["x"]


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("10.0.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("[::1]", "loopback"),
        ("[::ffff:10.0.0.1]", "private"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not globally routable"),
    ],
)
def test_private_addresses_are_refused_without_any_connection(
    host: str, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[object] = []

    def no_connect(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise AssertionError("no connection expected")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    monkeypatch.setattr(socket, "create_connection", no_connect)
    rep = _one(tmp_path, f"http://{host}/latest/meta-data", Policy(), retries=3)
    assert f" {kind} address (refused)" in rep.failed["x"] and rep.failed["x"].startswith("address: ")
    assert attempts == []


def test_a_name_with_any_private_answer_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers)
    monkeypatch.setattr(socket.socket, "connect", lambda *a: pytest.fail("no connection expected"))
    rep = _one(tmp_path, "http://rebind.example/a.png", Policy())
    assert rep.failed["x"] == "address: rebind.example resolves to 127.0.0.1, a loopback address (refused)"
    assert address_problem("93.184.216.34") is None


def test_connection_goes_to_the_checked_address(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name resolves once; the connection uses that answer, the Host
    header keeps the name."""
    port = int(server.rsplit(":", 1)[1])
    lookups: list[str] = []
    real = socket.getaddrinfo

    def fake(host: str, *a: object, **k: object):
        lookups.append(host)
        return real("127.0.0.1", port, type=socket.SOCK_STREAM)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    rep = _one(tmp_path, f"http://images.example:{port}/good.png")
    assert rep.fetched == 1 and lookups == ["images.example"]


def test_fetch_missing_images_returns_rejects_and_they_are_written(server: str, tmp_path: Path) -> None:
    items = pl.DataFrame(
        {
            "item_id": ["A 1", "B", "C", "D"],
            "title": ["a", "b", "c", "d"],
            "description": [None] * 4,
            "category": [None] * 4,
            "image_path": [None, None, None, "d.jpg"],
            "image_url": [f"{server}/good.png", f"{server}/missing.jpg", "file:///etc/passwd", "ftp://x/d"],
        }
    )
    raw = RawData(items=items, interactions=pl.DataFrame(), image_root=tmp_path)
    opts = {"rate_per_second": 100, "retries": 2, "backoff_seconds": 0, "allow_private_addresses": True}
    data = {"images": str(tmp_path / "mirror")}
    out, rejects = fetch_missing_images(raw, data, opts)
    good = target_name("A 1", f"{server}/good.png")
    assert (tmp_path / "mirror" / good).read_bytes() == PNG
    assert out.items.get_column("image_path").to_list() == [good, None, None, "d.jpg"]
    assert out.facts["download"] == {"fetched": 1, "cached": 0, "failed": 2}
    assert rejects.get_column("key").to_list() == ["B", "C"]
    path = record_download_rejects(data, rejects)
    assert path == tmp_path / "mirror" / REJECTS_NAME
    table = read_download_rejects(tmp_path / "mirror").to_pylist()
    assert [(r["source"], r["key"], r["reason"].split(":")[0], r["record"]) for r in table] == [
        ("download", "B", "http", f"{server}/missing.jpg"),
        ("download", "C", "scheme", "file:///etc/passwd"),
    ]
    again, rejects2 = fetch_missing_images(raw, data, opts)
    assert again.facts["download"]["cached"] == 1 and again.facts["download"]["fetched"] == 0
    assert record_download_rejects({"images": None}, rejects2) is None


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
