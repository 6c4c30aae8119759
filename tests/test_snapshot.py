"""Snapshot runs: the writer lock, crash-safe publishing, and successive snapshots of the
tiny demo through the real stages (incremental work, skipping, history, run manifests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import ROOT, tiny_layout, tiny_raw
from snapshot_helpers import next_snapshot, published, table_digest, write_params

from features import history
from features.store import read_manifest, read_table, write_table
from pipelines.config import Config
from pipelines.lock import StoreLocked, store_lock
from pipelines.runs import Lineage, read_runs, sweep_leftovers
from pipelines.snapshot import SnapshotError, run_snapshot, snapshot_time

PY = sys.executable
MAX_DELAY = {"ingest": 0.15, "extract": 2.0, "graph": 0.08, "train": 0.6, "export": 0.08}
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _hold_lock(store: Path) -> subprocess.Popen:
    code = textwrap.dedent(
        f"""
        import time
        from pipelines.lock import store_lock
        with store_lock({str(store)!r}, command="holder"):
            print("held", flush=True)
            time.sleep(60)
        """
    )
    p = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holder_is_broken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "store"
    holder = _hold_lock(store)
    try:
        t0 = time.monotonic()
        with (
            pytest.raises(StoreLocked, match=rf"locked by another run: pid {holder.pid} on .*holder"),
            store_lock(store),
        ):
            pass
        assert time.monotonic() - t0 < 5  # refused at once, not after waiting
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel dropped the flock with the process; its record is left: stale, broken.
    with store_lock(store) as me:
        assert me["pid"] == os.getpid()
        with store_lock(store):  # re-entrant in one process
            pass
    assert f"breaking a stale lock left by pid {holder.pid}" in caplog.text
    caplog.clear()
    with store_lock(store):  # a clean release leaves no stale record
        pass
    assert "stale" not in caplog.text


def test_publish_under_sigkill_never_leaves_a_reader_without_a_table(tmp_path: Path) -> None:
    """A writer republishes one table in a loop and is SIGKILLed at random moments; after
    every kill the table is readable, whole, and one of the versions written."""
    path = tmp_path / "store" / "t"
    schema = pa.schema([pa.field("v", pa.int64())])
    write_table(path, pa.table({"v": [0] * 1000}), schema)
    code = textwrap.dedent(
        f"""
        import pyarrow as pa
        from features.store import write_table
        schema = pa.schema([pa.field("v", pa.int64())])
        i = 0
        while True:
            i += 1
            write_table({str(path)!r}, pa.table({{"v": [i] * 1000}}), schema, version=i)
        """
    )
    import random

    rng = random.Random(7)
    for _ in range(12):
        p = subprocess.Popen([PY, "-c", code], env=ENV, cwd=ROOT)
        time.sleep(1.0 + rng.random() * 0.5)
        p.send_signal(signal.SIGKILL)
        p.wait()
        t = read_table(path)
        assert t.num_rows == 1000 and len(set(t.column("v").to_pylist())) == 1
        assert read_manifest(path).get("version", 0) == t.column("v")[0].as_py()
        sweep_leftovers(path.parent)
        assert sorted(x.name for x in path.parent.iterdir()) == ["t"]


def test_snapshot_ids_start_with_an_iso_date() -> None:
    assert snapshot_time("2026-12-01").isoformat() == "2026-12-01T00:00:00+00:00"
    assert snapshot_time("2026-12-01T06:30-rerun").isoformat() == "2026-12-01T06:30:00+00:00"
    with pytest.raises(SnapshotError, match="'nightly': expected it to start with an ISO date"):
        snapshot_time("nightly")


def _config(root: Path, **patch) -> Config:
    raw = tiny_raw(root)
    raw["train"]["models"] = ["bpr"]
    raw["train"]["common"].update(epochs=2)
    raw["extract"]["features"].pop("image_clip")  # one text feature keeps the runs short
    raw["validate"]["feature_overrides"] = {}
    # New items join the old codebooks (refit: false); 8 codes per level crowd at 120 items.
    raw["validate"]["semantic_ids"]["max_collision_rate"] = 0.5
    raw["semantic_ids"]["tables"]["text_rq"].update(codebook_size=8)
    raw.update(patch)
    return Config.from_dict(raw)


@pytest.fixture(scope="module")
def three_snapshots(tmp_path_factory: pytest.TempPathFactory):
    """Three nights: a cold run, a night with about 5% changed/new/removed items and 5% new
    interactions, then a night with nothing new."""
    from pipelines.stages import demo

    root = tmp_path_factory.mktemp("nightly")
    config, layout = _config(root), tiny_layout(root)
    demo.run(config, root / "raw", progress=False)
    runs, changes, seconds = [], [], []
    for night, snapshot in enumerate(("2026-12-01", "2026-12-02", "2026-12-03")):
        if night == 1:
            changes.append(next_snapshot(root / "raw", seed=night))
        t0 = time.perf_counter()
        runs.append(run_snapshot(config, layout, snapshot, dvc_file=ROOT / "dvc.yaml"))
        seconds.append(time.perf_counter() - t0)
    return root, config, layout, runs, changes, seconds


def test_a_changed_snapshot_re_embeds_exactly_the_new_and_changed_items(three_snapshots) -> None:
    root, config, layout, runs, changes, _ = three_snapshots
    first, second, _ = runs
    assert all(s["ran"] for s in first["stages"].values())
    assert all(
        second["stages"][s]["ran"] for s in ("ingest", "extract", "graph", "validate", "train", "export")
    )
    counts = read_manifest(layout.feature("text_minilm"))["counts"]
    ch = changes[0]
    assert counts["embedded"] == len(ch["changed"]) + len(ch["new"])
    assert counts["removed"] == len(ch["removed"])
    assert counts["reused"] == 120 - len(ch["changed"]) - len(ch["removed"])
    for run in runs:
        assert run["status"] == "ok" and run["validation"]["success"] is True
        assert run["git_sha"] and run["params_hash"] and run["inputs"]["items"]
    assert "drift" in second["validation"] and second["validation"]["drift"]
    log = read_runs(layout.runs_root)
    assert [r["snapshot"] for r in log] == ["2026-12-01", "2026-12-02", "2026-12-03"]
    assert (layout.runs_root / f"{second['run_id']}.json").is_file()
    assert Lineage(layout.store, layout.runs_root).check() == []


def test_an_unchanged_snapshot_runs_nothing_and_returns_fast(three_snapshots) -> None:
    *_, runs, _, seconds = three_snapshots
    third = runs[2]
    assert not any(s["ran"] for s in third["stages"].values()), third["stages"]
    assert seconds[2] < 30


def test_removed_items_leave_the_latest_view_but_stay_in_the_history(three_snapshots) -> None:
    root, config, layout, runs, changes, _ = three_snapshots
    removed, new = set(changes[0]["removed"]), set(changes[0]["new"])
    latest = set(read_table(layout.feature("text_minilm")).column("item_id").to_pylist())
    assert not latest & removed and new <= latest
    hist = layout.history("features/text_minilm")
    first = set(history.read_as_of(hist, snapshot="2026-12-01").column("item_id").to_pylist())
    assert removed <= first and not first & new
    assert set(history.read_as_of(hist, snapshot="2026-12-02").column("item_id").to_pylist()) == latest
    # An entity table too: recommendations as of the first night still list removed items' users.
    recs = layout.history("recommendations/bpr")
    assert history.read_as_of(recs, snapshot="2026-12-01").num_rows > 0
    assert runs[1]["tables"]["features/text_minilm"] != runs[0]["tables"]["features/text_minilm"]


def _cli(params: Path, root: Path, snapshot: str) -> list[str]:
    return [
        PY, "-m", "pipelines.cli", "snapshot", "--params", str(params), "--snapshot", snapshot,
        "--store", str(root / "store"), "--models", str(root / "models"), "--reports", str(root / "reports"),
        "--dvc-file", str(ROOT / "dvc.yaml"),
    ]  # fmt: skip


def test_two_snapshot_commands_at_once_the_second_exits_1_naming_the_holder(tmp_path: Path) -> None:
    from pipelines.config import to_raw
    from pipelines.stages import demo

    config = _config(tmp_path)
    demo.run(config, tmp_path / "raw", progress=False)
    params = write_params(tmp_path / "params.yaml", to_raw(config))
    first = subprocess.Popen(
        _cli(params, tmp_path, "2026-12-01"), env=ENV, cwd=tmp_path, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    lock = tmp_path / "store" / ".lock"
    while not (lock.exists() and lock.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    t0 = time.monotonic()
    second = subprocess.run(
        _cli(params, tmp_path, "2026-12-01"),
        env=ENV,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - t0
    out, err = first.communicate(timeout=600)
    assert second.returncode == 1, second.stderr
    assert took < 5, took
    assert f"locked by another run: pid {first.pid}" in second.stderr and "mmrec snapshot" in second.stderr
    assert first.returncode == 0, err[-3000:]
    for table in published(tiny_layout(tmp_path)):
        read_table(table)
    assert [r["status"] for r in read_runs(tiny_layout(tmp_path).runs_root)] == ["ok"]


def test_sigkill_at_random_moments_never_leaves_an_unreadable_or_mixed_store(tmp_path: Path) -> None:
    """Snapshot runs killed at 20+ random moments spread over the stages: after each kill
    every table of the latest view is readable, as-of reads of finished snapshots are
    unchanged and the next run carries on; the finished store equals an uninterrupted run."""
    import random

    from pipelines.config import to_raw
    from pipelines.stages import demo

    rng = random.Random(20261201)
    config = _config(tmp_path)
    demo.run(config, tmp_path / "raw", progress=False)
    params = write_params(tmp_path / "params.yaml", to_raw(config))
    layout = tiny_layout(tmp_path)
    targets = ["ingest", "extract", "graph", "train", "export"]
    kills: list[str] = []
    frozen: dict[str, str] = {}  # as-of digests of finished snapshots

    def check_after_kill() -> None:
        for table in published(layout):
            read_table(table)  # raises if unreadable or its rows disagree with its manifest
        for key, digest in frozen.items():
            snap, rel = key.split("|")
            got = history.read_as_of(layout.history(rel), snapshot=snap)
            assert _digest(got) == digest, key

    for snapshot in ("2026-12-01", "2026-12-02"):
        if snapshot == "2026-12-02":
            next_snapshot(tmp_path / "raw", seed=2)
        quota = 10 * (1 + (snapshot == "2026-12-02"))
        force = False  # once a run finishes before its kill, re-run the snapshot with --force
        for _attempt in range(60):
            target = targets[len(kills) % len(targets)]
            cmd = _cli(params, tmp_path, snapshot) + (["--force"] if force else [])
            proc = subprocess.Popen(cmd, env=ENV, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
            # A moment inside the target stage: ingest, graph and export take well under a
            # second on the tiny demo, extract and train several.
            running, t_start = _watch(proc, target, delay=rng.uniform(0.0, MAX_DELAY[target]))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills.append(running)
                check_after_kill()
                if len(kills) >= quota:
                    break
                continue
            assert proc.returncode == 0
            # Finished before the kill: every stage is done, so only a forced re-run of the
            # same snapshot (a real operator action) has stages left to interrupt.
            force = True
        done = subprocess.run(
            _cli(params, tmp_path, snapshot), env=ENV, cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        for rel in ("features/text_minilm", "recommendations/bpr"):
            frozen[f"{snapshot}|{rel}"] = _digest(history.read_as_of(layout.history(rel), snapshot=snapshot))
    assert len(kills) >= 20, kills
    assert len(set(kills)) >= 3, kills  # spread over the stages (where each kill landed)
    assert Lineage(layout.store, layout.runs_root).check() == []
    # The same two nights without interruption give the same tables.
    ref = tmp_path / "ref"
    ref_config = _config(ref)
    demo.run(ref_config, ref / "raw", progress=False)
    ref_layout = tiny_layout(ref)
    run_snapshot(ref_config, ref_layout, "2026-12-01", dvc_file=ROOT / "dvc.yaml")
    next_snapshot(ref / "raw", seed=2)
    run_snapshot(ref_config, ref_layout, "2026-12-02", dvc_file=ROOT / "dvc.yaml")
    mine = {str(t.relative_to(layout.store)): table_digest(t) for t in published(layout)}
    theirs = {str(t.relative_to(ref_layout.store)): table_digest(t) for t in published(ref_layout)}
    assert mine.keys() == theirs.keys()
    differ = [k for k in mine if mine[k] != theirs[k] and not k.startswith("features/_previous")]
    assert differ == [], differ


def _digest(t: pa.Table) -> str:
    import hashlib

    return hashlib.sha256(
        json.dumps(
            t.sort_by("item_idx" if "item_idx" in t.column_names else "user_idx").to_pydict(), default=str
        ).encode()
    ).hexdigest()  # noqa: E501


def _watch(proc: subprocess.Popen, target: str, delay: float) -> tuple[str, float]:
    """Follow the run's log (in a thread) until ``target`` or a later stage starts, or the
    run ends; then wait ``delay`` seconds; return the stage running at that moment."""
    import threading

    assert proc.stderr is not None
    order = ["ingest", "extract", "semantic_ids", "graph", "validate"]
    order += ["train", "evaluate", "export", "report"]
    state = {"running": "start"}
    reached = threading.Event()

    def follow() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            if "pipelines.snapshot" in line and "] " in line and line.rstrip().endswith("..."):
                state["running"] = line.rsplit("] ", 1)[1].split()[0]
                if order.index(state["running"]) >= order.index(target):
                    reached.set()
        reached.set()  # the run ended

    threading.Thread(target=follow, daemon=True).start()
    t0 = time.monotonic()
    reached.wait(timeout=600)
    end = time.monotonic() + delay
    while time.monotonic() < end and proc.poll() is None:
        time.sleep(0.02)
    return state["running"], t0
