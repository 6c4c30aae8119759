"""Snapshot runs: one nightly run of the pipeline over one snapshot of the catalog and log.

``mmrec snapshot --snapshot 2026-12-01`` takes the store's writer lock (a second run is
refused at once, naming the holder), sweeps what killed runs left, runs the stages of
``dvc.yaml`` in order and skips each one whose key — its command, the content of every
dep it declares, the values of its params and the content of its outs — is the key of
its last successful run (the same rule as ``dvc repro``, from the same declarations, so
an unchanged snapshot runs nothing). After the stages it commits the published tables
to their Delta history as this snapshot, and appends a run manifest to the run log.

Snapshot ids start with an ISO date (``2026-12-01``, ``2026-12-01T06:00``); the date is
the snapshot's time in the history (``as_of``) and for Feast. The id and the clock never
enter a table's content: tables are byte-identical for identical inputs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from features.errors import PlatformError
from pipelines.config import Config, to_raw
from pipelines.layout import Layout
from pipelines.lock import store_lock
from pipelines.runs import (
    Lineage,
    append_run,
    content_hash,
    git_sha,
    read_json,
    sweep_leftovers,
    write_json_atomic,
)

log = logging.getLogger(__name__)
NOT_IN_SNAPSHOT = ("demo",)  # makes sample data; a snapshot run reads the user's data


class SnapshotError(PlatformError, ValueError):
    """A snapshot id or the dvc.yaml the runner reads is not usable."""


def snapshot_time(snapshot: str) -> dt.datetime:
    """The UTC time a snapshot id names (its leading ISO date or date-time)."""
    m = re.match(r"^(\d{4}-\d{2}-\d{2})(?:[T_ ](\d{2})(?::?(\d{2}))?(?::?(\d{2}))?)?", snapshot)
    if not m:
        raise SnapshotError(
            f"snapshot id {snapshot!r}: expected it to start with an ISO date "
            "(2026-12-01, 2026-12-01T06:00)"
        )
    try:
        day = dt.date.fromisoformat(m.group(1))
    except ValueError as e:
        raise SnapshotError(f"snapshot id {snapshot!r}: {e}") from None
    h, mi, s = (int(g) if g else 0 for g in m.groups()[1:])
    return dt.datetime(day.year, day.month, day.day, h, mi, s, tzinfo=dt.UTC)


def default_snapshot_id() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


@dataclass
class StageSpec:
    """One stage of dvc.yaml as the runner needs it."""

    name: str
    cmd: str
    deps: list[Path] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    outs: list[Path] = field(default_factory=list)


def _lookup(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _interpolate(text: str, raw: dict[str, Any]) -> str:
    def sub(m: re.Match[str]) -> str:
        value = _lookup(raw, m.group(1))
        if value is None:
            raise SnapshotError(f"dvc.yaml: ${{{m.group(1)}}} is not set in params")
        return str(value)

    return re.sub(r"\$\{([\w.]+)\}", sub, text)


def _out_paths(entries: list[Any]) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def plan(dvc_file: Path, config: Config, layout: Layout) -> list[StageSpec]:
    """The stages of ``dvc_file`` in file order (which is checked to be a valid order),
    with store/models/reports paths moved onto ``layout``'s roots."""
    dvc_file = Path(dvc_file)
    if not dvc_file.is_file():
        raise SnapshotError(f"{dvc_file}: no dvc.yaml (run from the project root or pass --dvc-file)")
    doc = yaml.safe_load(dvc_file.read_text()) or {}
    raw = to_raw(config)
    roots = {"store": layout.store, "models": layout.models, "reports": layout.reports}

    def where(p: str) -> Path:
        p = _interpolate(p, raw)
        head, _, rest = p.partition("/")
        if head in roots:
            return roots[head] / rest if rest else roots[head]
        path = Path(p)
        return path if path.is_absolute() else dvc_file.parent / path

    specs = []
    for name, st in (doc.get("stages") or {}).items():
        if name in NOT_IN_SNAPSHOT:
            continue
        outs = _out_paths(st.get("outs")) + _out_paths(st.get("metrics")) + _out_paths(st.get("plots"))
        spec = StageSpec(
            name=name,
            cmd=st["cmd"],
            deps=[where(d) for d in st.get("deps") or []],
            params=[p for p in st.get("params") or [] if isinstance(p, str)],
            outs=[where(o) for o in outs],
        )
        specs.append(spec)
    _check_order(specs)
    return specs


def _check_order(specs: list[StageSpec]) -> None:
    for i, s in enumerate(specs):
        for later in specs[i + 1 :]:
            for o in later.outs:
                if any(d == o or o in d.parents or d in o.parents for d in s.deps):
                    raise SnapshotError(
                        f"dvc.yaml: stage {s.name!r} reads {o}, written by the later stage {later.name!r}; "
                        "list stages in the order they run"
                    )


def stage_key(spec: StageSpec, raw: dict[str, Any]) -> str:
    """What decides whether a stage must run again (as ``dvc repro`` decides)."""
    h = hashlib.sha256()
    h.update(json.dumps({"stage": spec.name, "cmd": spec.cmd}).encode())
    for d in spec.deps:
        h.update(f"dep {d.name}:{content_hash(d)}\n".encode())
    for p in spec.params:
        h.update(f"param {p}={json.dumps(_lookup(raw, p), sort_keys=True, default=str)}\n".encode())
    for o in spec.outs:
        h.update(f"out {o.name}:{content_hash(o)}\n".encode())
    return h.hexdigest()


def history_tables(layout: Layout) -> list[Path]:
    """The published tables that keep a history: features, semantic IDs, entity embeddings,
    recommendations."""
    out = [layout.feature(n) for n in layout.feature_names()]
    out += [layout.semantic_ids(n) for n in layout.semantic_id_names()]
    for kind in ("embeddings", "recommendations"):
        root = layout.store / kind
        if root.is_dir():
            out += sorted(
                p.parent
                for p in root.rglob("_manifest.json")
                if not any(part.startswith((".", "_")) for part in p.parent.relative_to(root).parts)
            )
    return out


def commit_history(layout: Layout, snapshot: str, keep: int) -> dict[str, int]:
    """Commit every history table's latest view to its Delta history as ``snapshot``."""
    from features import history
    from features.store import read_table

    when = snapshot_time(snapshot)
    versions = {}
    for table in history_tables(layout):
        rel = table.relative_to(layout.store)
        target = layout.history(rel)
        versions[str(rel)] = history.commit(target, read_table(table), snapshot=snapshot, snapshot_time=when)
        history.vacuum(target, keep_snapshots=keep)
    return versions


def _counts(layout: Layout) -> dict[str, int]:
    from features.store import MANIFEST, read_manifest

    out = {}
    for name, path in (
        ("items", layout.items()),
        ("users", layout.users()),
        ("interactions", layout.interactions()),
        ("rejects", layout.rejects()),
    ):
        if (path / MANIFEST).is_file():
            out[name] = int(read_manifest(path)["row_count"])
    return out


def run_snapshot(
    config: Config,
    layout: Layout,
    snapshot: str | None = None,
    *,
    dvc_file: Path = Path("dvc.yaml"),
    force: bool = False,
) -> dict[str, Any]:
    """Run one snapshot under the store lock; returns (and logs) its run manifest."""
    snapshot = snapshot or config.snapshot.id or default_snapshot_id()
    snapshot_time(snapshot)  # a bad id fails before any work
    started = dt.datetime.now(dt.UTC)
    run_id = f"{snapshot}.{started.strftime('%Y%m%dT%H%M%S%fZ')}"
    with store_lock(layout.store, command=f"mmrec snapshot --snapshot {snapshot}"):
        swept = sweep_leftovers(layout.store)
        if swept:
            log.info(
                "swept %d leftover(s) of interrupted runs: %s", len(swept), ", ".join(map(str, swept[:5]))
            )
        raw = to_raw(config)
        specs = plan(dvc_file, config, layout)
        state_path = layout.runs_root / "stages.json"
        state = read_json(state_path, {})
        lineage = Lineage(layout.store, layout.runs_root)
        manifest: dict[str, Any] = {
            "run_id": run_id,
            "snapshot": snapshot,
            "snapshot_time": snapshot_time(snapshot).isoformat(),
            "started": started.isoformat(),
            "git_sha": git_sha(),
            "params_hash": hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest(),
            "inputs": {
                k: content_hash(Path(v))
                for k, v in (
                    ("items", config.data.items),
                    ("interactions", config.data.interactions),
                    ("images", config.data.images),
                )
                if v
            },
            "stages": {},
            "status": "running",
        }
        t_run = time.perf_counter()
        try:
            for i, spec in enumerate(specs, 1):
                key = stage_key(spec, raw)
                if not force and state.get(spec.name) == key:
                    log.info(
                        "snapshot %s: [%d/%d] %s: unchanged, skipped", snapshot, i, len(specs), spec.name
                    )
                    manifest["stages"][spec.name] = {"ran": False}
                    continue
                log.info("snapshot %s: [%d/%d] %s ...", snapshot, i, len(specs), spec.name)
                t0, c0 = time.perf_counter(), time.process_time()
                stage = importlib.import_module(f"pipelines.stages.{spec.name}")
                with layout.recording() as acc:
                    stage.run(config, layout)
                lineage.record(run_id, spec.name, acc.read, acc.write)
                state[spec.name] = stage_key(spec, raw)  # outs are part of the key: take it after
                write_json_atomic(state_path, state)
                manifest["stages"][spec.name] = {
                    "ran": True,
                    "seconds": round(time.perf_counter() - t0, 2),
                    "cpu_seconds": round(time.process_time() - c0, 2),
                }
                log.info(
                    "snapshot %s: %s done in %.1f s",
                    snapshot,
                    spec.name,
                    manifest["stages"][spec.name]["seconds"],
                )
            if config.snapshot.history:
                manifest["tables"] = commit_history(layout, snapshot, config.snapshot.keep_snapshots)
            manifest["table_hashes"] = {
                str(t.relative_to(layout.store)): content_hash(t) for t in history_tables(layout)
            }
            manifest["counts"] = _counts(layout)
            # The gate's result for the tables now in the store (from this run or, when
            # validate was skipped, from the run that validated these same tables).
            manifest["validation"] = _validation_result(layout)
            manifest["drift"] = manifest["validation"].get("drift", {})
            metrics = layout.metrics()
            manifest["metrics"] = (
                {m: {"test": v.get("test", {})} for m, v in json.loads(metrics.read_text()).items()}
                if metrics.is_file()
                else {}
            )
            manifest["status"] = "ok"
        except BaseException as e:
            manifest["status"] = "failed"
            manifest["error"] = f"{type(e).__name__}: {e}"[:2000]
            raise
        finally:
            manifest["seconds"] = round(time.perf_counter() - t_run, 2)
            manifest["finished"] = dt.datetime.now(dt.UTC).isoformat()
            append_run(layout.runs_root, manifest)
    log.info(
        "snapshot %s: %s in %.1f s (%d of %d stages ran); run log %s",
        snapshot,
        manifest["status"],
        manifest["seconds"],
        sum(s["ran"] for s in manifest["stages"].values()),
        len(specs),
        layout.runs_root / "runs.jsonl",
    )
    return manifest


def _validation_result(layout: Layout) -> dict[str, Any]:
    path = layout.validation_summary()
    if path.is_file():
        s = json.loads(path.read_text())
        drift = {
            t: {"status": d.get("status"), "shares": d.get("shares"), "reason": d.get("reason")}
            for t, d in (s.get("drift") or {}).items()
        }
        return {"success": s.get("success"), "failures": s.get("failures", []), "drift": drift}
    return {"success": None, "reason": "no validation summary"}
