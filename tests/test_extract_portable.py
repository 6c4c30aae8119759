"""The extract pipeline on Beam's PortableRunner: the path Flink, Spark and Dataflow take.

A local job service (``local_job_service_main``) receives the pipeline as a proto over gRPC
and hands its bundles to SDK workers started by a separate worker pool process (EXTERNAL
environment), so nothing the launcher holds in memory reaches the DoFns except what is
pickled into the pipeline. The table must match the DirectRunner's row for row, bit for bit,
on an incremental run (side inputs, cache reuse and embedding all cross processes).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from extract_helpers import ROOT, catalog, extract_config, items_store, store_layout, tiny_bert

from features.store import read_table
from pipelines.stages import extract

JOB_DEADLINE_S = 300  # the job service is stopped after this, so a stuck job fails the test


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before serving port {port}")
        try:
            with socket.create_connection(("localhost", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s: {proc.args}")


@pytest.fixture(scope="module")
def portable_services() -> Iterator[dict[str, str]]:
    """A job service and an external worker pool, each its own process; yields the Beam options."""
    # The pool starts workers with `python -c ...`: this interpreter and this checkout.
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    job_port, pool_port = _free_port(), _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "apache_beam.runners.portability.local_job_service_main",
                f"--port={job_port}",
            ],
            env=env,
        ),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "apache_beam.runners.worker.worker_pool_main",
                f"--service_port={pool_port}",
            ],
            env=env,
        ),
    ]
    watchdog = threading.Timer(JOB_DEADLINE_S, lambda: [p.terminate() for p in procs])
    try:
        _wait_for_port(job_port, procs[0])
        _wait_for_port(pool_port, procs[1])
        watchdog.start()
        yield {
            "job_endpoint": f"localhost:{job_port}",
            "environment_type": "EXTERNAL",
            "environment_config": f"localhost:{pool_port}",
        }
    finally:
        watchdog.cancel()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def _table(layout) -> dict[str, dict]:
    return {r["item_id"]: r for r in read_table(layout.feature("text")).to_pylist()}


@pytest.mark.slow
def test_portable_runner_with_external_workers_gives_the_direct_runners_table(
    tmp_path: Path, portable_services: dict[str, str]
) -> None:
    bert = tiny_bert(tmp_path / "bert")
    feats = {
        "text": {"input": "text", "fields": ["title", "description"], "encoder": "hf-llm", "model": str(bert)}
    }
    rows = catalog(tmp_path, 24)
    direct = items_store(store_layout(tmp_path / "direct"), rows)
    extract.run(extract_config(feats), direct)
    # Both stores start from the same first snapshot; the second one changes 3 texts, drops
    # one item and adds one, so the run reuses (side input), embeds and writes on workers.
    shutil.copytree(tmp_path / "direct" / "store", tmp_path / "portable" / "store")
    portable = store_layout(tmp_path / "portable")
    for r in rows[4:7]:
        r["title"] += " (revised)"
    rows = rows[1:] + [{"item_id": "item-new", "title": "New", "description": "d", "image_path": None}]
    for layout in (direct, portable):
        items_store(layout, rows[::-1])
    want = extract.run(extract_config(feats), direct)["text"]
    beam = {"runner": "PortableRunner", "options": portable_services}
    got = extract.run(extract_config(feats, beam=beam), portable)["text"]

    assert got["beam"]["runner"] == "PortableRunner" and got["beam"]["local_workers"] is None
    assert got["counts"] == want["counts"]
    assert want["counts"] | {"embedded": 4, "reused": 20, "changed": 3, "removed": 1} == want["counts"]
    a, b = _table(direct), _table(portable)
    assert set(a) == set(b) and len(a) == 24
    for item_id, row in a.items():
        other = b[item_id]
        assert {k: other[k] for k in row if k != "embedding"} == {k: row[k] for k in row if k != "embedding"}
        assert np.array_equal(
            np.asarray(row["embedding"], np.float32).view(np.uint32),
            np.asarray(other["embedding"], np.float32).view(np.uint32),
        ), item_id
    assert got["stats"] == want["stats"]
