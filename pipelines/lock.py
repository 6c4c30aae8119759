"""The store-wide writer lock: one writing run per store at a time.

A scheduled run that overlaps a manual one would interleave two generations of tables.
The lock is an exclusive ``flock`` on ``<store>/.lock``: the kernel drops it when the
holder dies (SIGKILL included), so a lock is never left held by a dead process. The
file also records the holder (pid, host, start time, command); a second writer is
refused at once with that record, and a record left by a process that died (the file
is not empty but nobody holds the flock) is reported as a stale lock and broken.
``flock`` is per host: on a network file system use one scheduler per store.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from features.errors import PlatformError

log = logging.getLogger(__name__)
LOCK_FILE = ".lock"


class StoreLocked(PlatformError, RuntimeError):
    """Another run holds the store's writer lock."""


def _holder_text(h: dict[str, Any]) -> str:
    return f"pid {h.get('pid')} on {h.get('host')}, started {h.get('started')} ({h.get('command')})"


def _read_holder(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 64 * 1024).decode("utf-8", "replace").strip()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return {"pid": "?", "host": "?", "started": "?", "command": raw[:200]}


@contextlib.contextmanager
def store_lock(store: Path, command: str | None = None) -> Iterator[dict[str, Any]]:
    """Hold the writer lock of ``store`` for the block; raise ``StoreLocked`` at once if
    another process holds it. Re-entrant within one process (a snapshot run calls the
    stages, which lock too)."""
    store = Path(store)
    key = str(store.resolve())
    if key in _HELD:
        yield _HELD[key]
        return
    store.mkdir(parents=True, exist_ok=True)
    fd = os.open(store / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd) or {"pid": "?", "host": "?", "started": "?", "command": "?"}
            raise StoreLocked(
                f"store {store} is locked by another run: {_holder_text(holder)}; "
                f"wait for it to finish (lock file {store / LOCK_FILE})"
            ) from None
        stale = _read_holder(fd)
        if stale is not None:
            log.warning(
                "store %s: breaking a stale lock left by %s (that process is gone)",
                store,
                _holder_text(stale),
            )
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": command or " ".join(sys.argv[:3]),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode() + b"\n", 0)
        os.fsync(fd)
        _HELD[key] = me
        try:
            yield me
        finally:
            del _HELD[key]
            os.ftruncate(fd, 0)  # a clean exit leaves an empty record: not stale
    finally:
        os.close(fd)  # closing drops the flock


_HELD: dict[str, dict[str, Any]] = {}
