"""Runs and lineage: which run wrote each table, from which inputs, and the run log.

Tables themselves hold no run ids or clock times (same inputs give byte-identical files,
so DVC and the snapshot runner skip unchanged work). What a run did is kept beside
them in the runs folder (``Layout.runs_root``, ``<store>/_runs``):

- ``lineage.json``: per table written (store-relative path) its content hash, the run
  that wrote it and the content hashes of the tables it was built from. A table whose
  bytes differ from its record was left by an interrupted run; a table built from an
  input whose bytes have changed since is a mixed state. ``check_lineage`` finds both.
- ``runs.jsonl``: one run manifest per line (snapshot id, git sha, params hash, input
  fingerprints, table hashes, counts, timings, validation); ``<run_id>.json`` the same.
- ``stages.json``: per stage the key of its last successful run (the snapshot runner's
  skip record).

All writes are atomic (temporary file + ``os.replace``) and happen under the store lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from features.errors import PlatformError

LEFTOVER_MARKERS = (".tmp-", ".old-")


class LineageError(PlatformError, ValueError):
    """Tables a stage consumes do not come from one consistent generation."""


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON so that a reader sees the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    with open(path) as f:
        return json.load(f)


def content_hash(path: Path) -> str | None:
    """sha256 over a file's bytes, or over a folder's files (relative names and bytes,
    sorted; hidden names skipped: leftovers of killed runs are not content). ``None``
    when the path does not exist."""
    path = Path(path)
    if path.is_file():
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return h.hexdigest()
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            full = Path(root) / name
            h.update(str(full.relative_to(path)).encode() + b"\0")
            h.update((content_hash(full) or "").encode() + b"\0")
    return h.hexdigest()


def git_sha(cwd: Path | None = None) -> str:
    """Git sha of the producing code, for run manifests (``unknown`` outside git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=cwd or Path(__file__).parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sweep_leftovers(store: Path, max_depth: int = 4) -> list[Path]:
    """Remove what killed runs left: hidden ``.<name>.tmp-*`` / ``.<name>.old-*`` entries.
    Only call under the store lock (a live writer's temporary folder looks the same)."""
    removed: list[Path] = []
    store = Path(store)

    def walk(folder: Path, depth: int) -> None:
        if depth > max_depth or not folder.is_dir():
            return
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".") and any(m in p.name for m in LEFTOVER_MARKERS):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                removed.append(p)
            elif p.is_dir() and not p.is_symlink() and not p.name.startswith("."):
                walk(p, depth + 1)

    walk(store, 0)
    return removed


class Lineage:
    """``lineage.json`` in the runs folder: what wrote each table of ``store`` and from what."""

    def __init__(self, store: Path, runs_root: Path) -> None:
        self.store = Path(store)
        self.path = Path(runs_root) / "lineage.json"

    def _key(self, path: Path) -> str | None:
        try:
            return str(Path(path).resolve().relative_to(self.store.resolve()))
        except ValueError:
            return None  # outside the store (models, reports, raw inputs)

    def record(self, run_id: str, stage: str, reads: Iterable[Path], writes: Iterable[Path]) -> None:
        """After ``stage`` of ``run_id`` published ``writes`` from ``reads``."""
        entries = read_json(self.path, {})
        inputs = {}
        for p in sorted(set(reads) - set(writes)):
            k = self._key(p)
            if k is not None and Path(p).exists():
                inputs[k] = content_hash(Path(p))
        for p in sorted(set(writes)):
            k = self._key(p)
            if k is None or not Path(p).exists():
                continue
            entries[k] = {"run": run_id, "stage": stage, "hash": content_hash(Path(p)), "inputs": inputs}
        write_json_atomic(self.path, entries)

    def check(self, tables: Iterable[Path] | None = None) -> list[str]:
        """Problems with ``tables`` (default: every recorded table): bytes that differ from
        the record (an interrupted run), or inputs that changed since (a mixed state)."""
        entries: Mapping[str, Any] = read_json(self.path, {})
        keys = list(entries) if tables is None else [k for t in tables if (k := self._key(t)) in entries]
        problems = []
        current: dict[str, str | None] = {}

        def now(k: str) -> str | None:
            if k not in current:
                current[k] = content_hash(self.store / k)
            return current[k]

        for k in sorted(keys):
            e = entries[k]
            if now(k) != e["hash"]:
                problems.append(
                    f"store table {k}: its files differ from what run {e['run']} ({e['stage']}) recorded; "
                    "it was left by an interrupted run: rerun the pipeline"
                )
                continue
            for dep, h in sorted(e["inputs"].items()):
                if now(dep) != h:
                    problems.append(
                        f"store table {k} (run {e['run']}, stage {e['stage']}) was built from "
                        f"another version of {dep} than the one in the store now: a mixed state; "
                        f"rerun the stages after {dep}"
                    )
        return problems

    def require_consistent(self, tables: Iterable[Path]) -> None:
        problems = self.check(tables)
        if problems:
            raise LineageError("; ".join(problems))


def append_run(runs_root: Path, manifest: Mapping[str, Any]) -> None:
    """Add a run manifest to the run log (one JSON line) and as ``<run_id>.json``."""
    root = Path(runs_root)
    write_json_atomic(root / f"{manifest['run_id']}.json", manifest)
    line = json.dumps(manifest, sort_keys=True, default=str) + "\n"
    with open(root / "runs.jsonl", "a") as f:  # one write of one line: a torn line is detectable
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_runs(runs_root: Path) -> list[dict[str, Any]]:
    """The run log, oldest first (a torn last line of a killed run is skipped)."""
    path = Path(runs_root) / "runs.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
