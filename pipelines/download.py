"""Optional image download into the local mirror (off by default; needs a network).

Each item with an ``image_url`` and no local image is fetched once into ``data.images``
(the folder is the cache: present files are never fetched again), with a request rate
limit (every request, redirect hops included), retries with exponential back-off on
transient failures (timeouts, connection errors, 408/425/429/5xx) and no retry on
permanent ones (4xx, and every policy refusal below).

The catalog is untrusted, so every URL is checked before any traffic is sent:

* **Schemes**: ``http`` and ``https`` only; ``file:``, ``ftp:``, ``data:``,
  ``javascript:``, relative and host-less URLs are refused with a reason.
* **Addresses**: the host is resolved with ``socket.getaddrinfo`` and *every* resolved
  address is checked with :mod:`ipaddress`: loopback, private, link-local, multicast,
  reserved, unspecified and other non-global addresses are refused (IPv4-mapped IPv6
  addresses are checked as IPv4) unless ``allow_private_addresses`` (tests against a
  local server only). The connection then goes to the address that was checked (not to
  a second DNS answer), so DNS rebinding between check and connect does not work; the
  ``Host`` header and TLS SNI/certificate check still use the host name. Proxies
  (``http_proxy`` ...) are not used: a proxy would defeat the address check.
* **Redirects** are followed by hand (301/302/303/307/308, ``Location`` resolved against
  the current URL), at most ``max_redirects`` hops, and every hop is re-checked
  (scheme and addresses) as above.
* **Size**: ``max_bytes`` per file, checked against ``Content-Length`` before reading
  and enforced while streaming (a body without a length is cut at the cap).
* **Time**: ``timeout_seconds`` per socket operation and ``deadline_seconds`` for the
  whole file (all hops): checked between chunks, and a watchdog shuts the socket when
  the deadline passes, so a slow drip of headers or body that never trips the socket
  timeout is cut. A deadline overrun is not retried.
* **Content-Type** must be one of ``content_types`` (parameters such as ``charset``
  ignored; an empty list accepts any type); a missing Content-Type is refused.
* Only ``200`` bodies are kept.

Files: ``<safe id>-<hash><ext>``, where the safe id is the item id with unsafe
characters replaced (and cut to 80 characters) and the hash is the first 12 hex digits
of the SHA-256 of the raw item id, so two ids that sanitise alike (``a/b``, ``a_b``)
get different files. Each download streams into a unique temporary file in the target
folder (``tempfile``, ``.dl-*.part``), renamed onto the final name on success and
removed on failure, so an interrupted run never leaves a partial image.

Rejects: :func:`fetch_missing_images` returns the updated :class:`RawData` and a
per-item rejects frame (``features.schemas.REJECTS`` columns: ``source`` =
``"download"``, ``key`` = item id, ``reason`` = ``"<kind>: <detail>"``, ``record`` =
the URL). The callers (the download stage and ingest) write it with
:func:`write_download_rejects` to ``<data.images>/_download_rejects.parquet``, next to
the images it describes; each run replaces it with that run's failures (cached images
are not re-checked and so never appear).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import ipaddress
import logging
import os
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from features import schemas
from pipelines.sources import REJECT_SCHEMA, RawData, SourceError

log = logging.getLogger(__name__)
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
REDIRECT_HTTP = {301, 302, 303, 307, 308}
DEFAULT_PORTS = {"http": 80, "https": 443}
REJECTS_NAME = "_download_rejects.parquet"
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
CHUNK = 64 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class DownloadError(Exception):
    """Why one URL was not fetched: ``kind`` (short tag), detail, and whether to retry."""

    def __init__(self, kind: str, detail: str, *, transient: bool = False) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.transient = transient

    @property
    def reason(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True)
class Policy:
    """The ``ingest.download`` knobs that govern one fetch."""

    timeout_seconds: float = 20.0
    deadline_seconds: float = 60.0
    max_bytes: int = 20_000_000
    max_redirects: int = 5
    content_types: tuple[str, ...] = (
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/gif",
        "image/bmp",
        "image/tiff",
    )
    allow_private_addresses: bool = False
    user_agent: str = "mmrec-platform"

    @classmethod
    def from_opts(cls, opts: dict[str, Any]) -> Policy:
        d = cls()
        types = opts.get("content_types")
        return cls(
            timeout_seconds=float(opts.get("timeout_seconds", d.timeout_seconds)),
            deadline_seconds=float(opts.get("deadline_seconds", d.deadline_seconds)),
            max_bytes=int(opts.get("max_bytes", d.max_bytes)),
            max_redirects=int(opts.get("max_redirects", d.max_redirects)),
            content_types=d.content_types if types is None else tuple(str(t).lower() for t in types),
            allow_private_addresses=bool(opts.get("allow_private_addresses", d.allow_private_addresses)),
            user_agent=str(opts.get("user_agent", d.user_agent)),
        )


@dataclass
class DownloadReport:
    fetched: int = 0
    cached: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # item_id -> reason
    urls: dict[str, str] = field(default_factory=dict)  # item_id -> url (of the failed ones)

    def rejects(self) -> pl.DataFrame:
        """The failures as a ``features.schemas.REJECTS`` frame (``source`` = download)."""
        ids = list(self.failed)
        return pl.DataFrame(
            {
                "source": ["download"] * len(ids),
                "row": [None] * len(ids),
                "key": ids,
                "reason": [self.failed[i] for i in ids],
                "record": [self.urls.get(i) for i in ids],
            },
            schema=REJECT_SCHEMA,
        )


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
    """``<safe id>-<hash><ext>``: the URL's extension (``.jpg`` when it has none or an
    unknown one); the id's unsafe characters replaced, a leading dot too (no hidden
    files), cut to 80 characters, plus 12 hex digits of the raw id's SHA-256 so ids
    that sanitise alike never share a file."""
    try:
        ext = Path(urlsplit(url).path).suffix.lower()
    except ValueError:
        ext = ""
    if ext not in EXTENSIONS:
        ext = ".jpg"
    safe = _SAFE.sub("_", item_id)[:80]
    if safe.startswith("."):
        safe = "_" + safe[1:]
    digest = hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{safe}-{digest}{ext}"


# --- URL and address checks -------------------------------------------------------


def check_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an absolute http(s) URL, else :class:`DownloadError`."""
    if not isinstance(url, str) or not url.strip():
        raise DownloadError("url", "empty URL")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise DownloadError("url", "URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise DownloadError("url", f"malformed URL: {e}") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise DownloadError("scheme", "relative URL (no scheme); http/https only")
    if scheme not in DEFAULT_PORTS:
        raise DownloadError("scheme", f"scheme {scheme!r} not allowed (http/https only)")
    host = parts.hostname
    if not host:
        raise DownloadError("url", "URL has no host")
    return scheme, host, port or DEFAULT_PORTS[scheme]


def address_problem(address: str) -> str | None:
    """Why an IP address must not be contacted (``None``: a public address)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for name, bad in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("not globally routable", not ip.is_global),
    ):
        if bad:
            return name
    return None


def resolve(host: str, port: int, *, allow_private: bool) -> list[tuple[Any, ...]]:
    """``getaddrinfo`` answers for ``host``; every one is checked (one bad answer refuses
    the host, so a name cannot mix a public and a private address)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as e:
        raise DownloadError("dns", f"cannot resolve {host!r}: {e}", transient=True) from None
    if not infos:
        raise DownloadError("dns", f"no address for {host!r}", transient=True)
    if not allow_private:
        for info in infos:
            address = str(info[4][0])
            problem = address_problem(address)
            if problem:
                where = f"{address} is" if host.strip("[]") == address else f"{host} resolves to {address},"
                article = "an" if problem[0] in "aeiou" else "a"
                raise DownloadError("address", f"{where} {article} {problem} address (refused)")
    return infos


# --- connections pinned to the checked address -------------------------------------


def _connect(infos: list[tuple[Any, ...]], timeout: float) -> socket.socket:
    last: OSError | None = None
    for family, type_, proto, _, sockaddr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as e:
            sock.close()
            last = e
    raise last or OSError("no address to connect to")


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, infos: list[tuple[Any, ...]], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._infos = infos

    def connect(self) -> None:
        self.sock = _connect(self._infos, self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, infos: list[tuple[Any, ...]], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._infos = infos

    def connect(self) -> None:
        sock = _connect(self._infos, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class _Watchdog:
    """Shuts the connection's socket when the deadline passes (cuts a blocked read)."""

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self.fired = False
        self._conn = conn
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


# --- one URL -----------------------------------------------------------------------


def fetch_to(
    url: str,
    out: IO[bytes],
    policy: Policy,
    *,
    before_request: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Stream ``url`` into ``out`` under ``policy``; the byte count, else
    :class:`DownloadError` (with the reason and whether a retry may help)."""
    start = clock()
    deadline = start + policy.deadline_seconds
    current = url
    for hop in range(policy.max_redirects + 1):
        scheme, host, port = check_url(current)
        infos = resolve(host, port, allow_private=policy.allow_private_addresses)
        remaining = deadline - clock()
        if remaining <= 0:
            raise DownloadError("deadline", f"{policy.deadline_seconds:g} s deadline passed before {current}")
        before_request()
        cls = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
        conn = cls(host, port, infos, timeout=min(policy.timeout_seconds, remaining))
        watchdog = _Watchdog(conn, deadline - clock())
        try:
            with watchdog:
                location = _exchange(conn, current, out, policy, deadline, clock)
        except DownloadError as e:
            if watchdog.fired and e.kind != "deadline":  # a cut connection reads as a bad reply
                raise DownloadError(
                    "deadline", f"{policy.deadline_seconds:g} s deadline passed for {current}"
                ) from None
            raise
        except (TimeoutError, OSError, http.client.HTTPException) as e:
            if watchdog.fired or clock() >= deadline:
                raise DownloadError(
                    "deadline", f"{policy.deadline_seconds:g} s deadline passed for {current}"
                ) from None
            if isinstance(e, (TimeoutError, socket.timeout)):
                raise DownloadError(
                    "timeout", f"{policy.timeout_seconds:g} s socket timeout for {current}", transient=True
                ) from None
            if isinstance(e, ssl.SSLCertVerificationError):
                raise DownloadError("tls", f"{e} for {current}") from None
            if isinstance(e, http.client.HTTPException) and not isinstance(e, http.client.IncompleteRead):
                raise DownloadError("protocol", f"{type(e).__name__}: {e} for {current}") from None
            raise DownloadError("network", f"{type(e).__name__}: {e} for {current}", transient=True) from None
        finally:
            conn.close()
        if watchdog.fired:
            raise DownloadError("deadline", f"{policy.deadline_seconds:g} s deadline passed for {current}")
        if isinstance(location, int):
            return location
        current = urljoin(current, location)
        if hop == policy.max_redirects:
            break
    raise DownloadError("redirects", f"more than {policy.max_redirects} redirects (stopped at {current})")


def _exchange(
    conn: http.client.HTTPConnection,
    url: str,
    out: IO[bytes],
    policy: Policy,
    deadline: float,
    clock: Callable[[], float],
) -> int | str:
    """One request: the byte count written, or the ``Location`` of a redirect."""
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    conn.request(
        "GET",
        target,
        headers={"User-Agent": policy.user_agent, "Accept": "image/*", "Accept-Encoding": "identity"},
    )
    resp = conn.getresponse()
    status = resp.status
    if status in REDIRECT_HTTP:
        location = resp.getheader("Location")
        if not location:
            raise DownloadError("redirects", f"HTTP {status} without Location for {url}")
        return location.strip()
    if status != 200:
        raise DownloadError("http", f"HTTP {status} for {url}", transient=status in TRANSIENT_HTTP)
    raw_type = resp.getheader("Content-Type")
    if not raw_type:
        raise DownloadError("content-type", f"no Content-Type for {url}")
    ctype = raw_type.split(";", 1)[0].strip().lower()
    if policy.content_types and ctype not in policy.content_types:
        raise DownloadError("content-type", f"{ctype!r} not allowed for {url}")
    length = resp.getheader("Content-Length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise DownloadError("protocol", f"bad Content-Length {length!r} for {url}") from None
        if declared > policy.max_bytes:
            raise DownloadError("size", f"Content-Length {declared} > max_bytes {policy.max_bytes} for {url}")
    total = 0
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            raise DownloadError(
                "deadline", f"{policy.deadline_seconds:g} s deadline passed while reading {url}"
            )
        if conn.sock is not None:
            conn.sock.settimeout(min(policy.timeout_seconds, remaining))
        chunk = resp.read1(CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > policy.max_bytes:
            raise DownloadError(
                "size", f"body over max_bytes {policy.max_bytes} for {url} (cut while streaming)"
            )
        out.write(chunk)
    if clock() >= deadline:
        raise DownloadError("deadline", f"{policy.deadline_seconds:g} s deadline passed while reading {url}")
    return total


# --- many items --------------------------------------------------------------------


def download_images(
    pairs: list[tuple[str, str]],
    folder: Path,
    policy: Policy | None = None,
    *,
    rate_per_second: float = 2.0,
    retries: int = 3,
    backoff_seconds: float = 1.0,
    fetcher: Callable[..., int] = fetch_to,
    sleep: Callable[[float], None] = time.sleep,
) -> DownloadReport:
    """Fetch ``(item_id, url)`` pairs into ``folder`` (the cache); never raises for one
    bad item: its reason goes to ``report.failed``."""
    policy = policy or Policy()
    folder.mkdir(parents=True, exist_ok=True)
    limiter = RateLimiter(rate_per_second, sleep=sleep)
    report = DownloadReport()
    for item_id, url in pairs:
        dest = folder / target_name(item_id, url)
        if dest.exists():
            report.cached += 1
            continue
        for attempt in range(retries + 1):
            fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".dl-", suffix=".part")
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as out:
                    fetcher(url, out, policy, before_request=limiter.wait)
                os.replace(tmp, dest)
            except DownloadError as e:
                reason, transient = e.reason, e.transient
            except Exception as e:  # noqa: BLE001 - one hostile item must not stop the run
                reason, transient = f"error: {type(e).__name__}: {e}", False
            else:
                report.fetched += 1
                break
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            if not transient or attempt == retries:
                report.failed[item_id] = reason
                report.urls[item_id] = url
                log.warning("download %s: %s", item_id, reason)
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


def write_download_rejects(folder: Path | str, rejects: pl.DataFrame) -> Path:
    """Write ``rejects`` to ``<folder>/_download_rejects.parquet`` (replaced atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / REJECTS_NAME
    table = rejects.to_arrow().select(schemas.REJECTS.names).cast(schemas.REJECTS)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".rejects-", suffix=".part")
    os.close(fd)
    try:
        pq.write_table(table, tmp_name)
        os.replace(tmp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    return path


def read_download_rejects(folder: Path | str) -> pa.Table:
    """The rejects table :func:`write_download_rejects` wrote (one file, no dataset scan)."""
    return pq.ParquetFile(Path(folder) / REJECTS_NAME).read()


def record_download_rejects(data: dict[str, Any], rejects: pl.DataFrame) -> Path | None:
    """:func:`write_download_rejects` into ``data.images`` (nothing when it is unset)."""
    images = data.get("images")
    return write_download_rejects(images, rejects) if images else None


def fetch_missing_images(
    raw: RawData, data: dict[str, Any], opts: dict[str, Any]
) -> tuple[RawData, pl.DataFrame]:
    """Download the images the mirror lacks and point ``image_path`` at them; also the
    per-item rejects (``features.schemas.REJECTS`` columns) for
    :func:`write_download_rejects`."""
    report = DownloadReport()
    if "image_url" not in raw.items.columns:
        return raw, report.rejects()
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
        Policy.from_opts(opts),
        rate_per_second=float(opts.get("rate_per_second", 2.0)),
        retries=int(opts.get("retries", 3)),
        backoff_seconds=float(opts.get("backoff_seconds", 1.0)),
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
    out = dataclasses.replace(  # every other field (rejects, input row counts ...) carried over
        raw,
        items=items,
        image_root=folder,
        facts={
            **raw.facts,
            "download": {"fetched": report.fetched, "cached": report.cached, "failed": len(report.failed)},
        },
    )
    return out, report.rejects()
