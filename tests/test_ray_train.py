"""Ray Train around the same loop: parity with the in-process run, recovery from a
killed worker, and a run against a separate Ray head through ``RAY_ADDRESS``.

Every Ray fit costs ~15-20 s of start-up here, so the runs are shared through one
module fixture: in-process, Ray with 1 worker, Ray with 2 workers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import yaml

from evaluation.metrics import evaluate
from pipelines.config import RayParams, to_raw
from pipelines.stages.common import data_source
from training.checkpoint import load_checkpoint
from training.data import load_train_data
from training.loop import LocalContext, TrainConfig, train
from training.models import build_model
from training.ray_train import fit, run_name, storage_uri

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
KS = (10, 20)


def _cfg(config, seed: int = 42) -> TrainConfig:
    config = config.updated(
        {
            "train": {
                "seed": seed,
                "common": {"epochs": 12, "report_every": 2, "checkpoint_every": 2, "patience": 100},
            }
        }
    )
    return TrainConfig.from_config("bpr", config.train, list(KS))


def _test_metrics(state: dict, data, cfg: TrainConfig) -> dict[str, float]:
    model = build_model(cfg.model, data, cfg.hparams)
    model.load_state_dict(state["model_state"])
    ue, ie = model.inference_embeddings()
    return evaluate(ue, ie, data.test, data.train, data.n_users, KS)


def _local(cfg: TrainConfig, data) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker (cpus_per_worker: 1): same float sums
    try:
        ctx = LocalContext()
        train(cfg, data, ctx)
    finally:
        torch.set_num_threads(threads)
    return ctx.final_state


@pytest.fixture(scope="module")
def runs(tiny_store, ray_session, tmp_path_factory):
    _, config, layout = tiny_store
    source = data_source(layout, [])
    data = load_train_data(source)
    cfg = _cfg(config)
    ray_params = config.train.ray.model_copy(
        update={"storage_path": str(tmp_path_factory.mktemp("ray_results"))}
    )
    common = {"source": source}
    states = {
        "local": _local(cfg, data),
        "ray1": fit(cfg, workers=1, ray_params=ray_params, **common),
        "ray2": fit(cfg, workers=2, ray_params=ray_params, **common),
    }
    metrics = {k: _test_metrics(s, data, cfg) for k, s in states.items()}
    # The noise floor: the same in-process run under other seeds.
    seeds = [_test_metrics(_local(_cfg(config, s), data), data, cfg) for s in (43, 44, 45)]
    return {"cfg": cfg, "data": data, "states": states, "metrics": metrics, "seeds": seeds, **common}


def test_one_worker_equals_the_in_process_run(runs) -> None:
    local, ray1 = runs["states"]["local"], runs["states"]["ray1"]
    assert ray1["best_epoch"] == local["best_epoch"]
    assert ray1["best_valid"] == pytest.approx(local["best_valid"], abs=1e-9)
    np.testing.assert_allclose(
        [r["loss"] for r in ray1["history"]], [r["loss"] for r in local["history"]], rtol=1e-6
    )
    for name, value in runs["metrics"]["local"].items():
        assert runs["metrics"]["ray1"][name] == pytest.approx(value, abs=1e-6), name


def test_two_workers_land_within_seed_noise(runs) -> None:
    m1, m2 = runs["metrics"]["ray1"], runs["metrics"]["ray2"]
    assert runs["states"]["ray2"]["config"]["model"] == "bpr" and len(runs["states"]["ray2"]["history"]) == 12
    for name in ("recall@20", "ndcg@20"):
        spread = np.ptp([m[name] for m in [m1, *runs["seeds"]]])
        assert abs(m2[name] - m1[name]) <= max(spread, 0.02), (name, m1[name], m2[name], spread)


def _registered_checkpoint_epoch(run_dir: Path) -> int | None:
    """Epoch of the latest checkpoint the Ray controller has registered (only those
    are handed back after a failure; a folder on disk alone is not enough)."""
    try:
        snap = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    latest = snap.get("latest_checkpoint_result")
    return int(latest["metrics"]["epoch"]) if latest else None


def _train_workers(exclude: frozenset[int] = frozenset()) -> list[psutil.Process]:
    """Ray Train worker processes of this test session's own Ray (our descendants only),
    leaving out ``exclude`` (lingering workers of an earlier fit)."""
    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.pid not in exclude and "RayTrainWorker" in " ".join(proc.cmdline()):
                out.append(proc)
        except psutil.Error:
            continue
    return out


def test_killed_worker_recovers_from_the_last_checkpoint(runs, tmp_path) -> None:
    if os.environ.get("RAY_ADDRESS"):
        pytest.skip("the session's Ray is an external cluster: its workers are not ours to kill")
    cfg = runs["cfg"]
    ray_params = RayParams(storage_path=str(tmp_path), max_failures=1, cpus_per_worker=1)
    run_dir = Path(storage_uri(ray_params)) / run_name(cfg)
    out: dict = {}

    def go() -> None:
        try:
            out["state"] = fit(cfg, workers=2, ray_params=ray_params, source=runs["source"])
        except BaseException as e:  # noqa: BLE001  (re-raised in the test thread)
            out["error"] = e

    thread = threading.Thread(target=go)
    earlier = frozenset(w.pid for w in _train_workers())
    thread.start()
    killed = None
    deadline = time.time() + 240
    while thread.is_alive() and killed is None and time.time() < deadline:
        epoch = _registered_checkpoint_epoch(run_dir)
        workers = _train_workers(earlier)
        if epoch is not None and epoch < cfg.epochs - 1 and workers:
            killed = (workers[-1].pid, epoch)
            os.kill(workers[-1].pid, signal.SIGKILL)
        time.sleep(0.1)
    thread.join(timeout=300)
    assert "error" not in out, out.get("error")
    assert killed is not None, "the run ended before a worker could be killed"
    state = out["state"]
    # The restarted worker group continued from the checkpoint (at or after the one seen).
    assert state["resumed_from"] and state["resumed_from"][0] >= killed[1]
    assert [r["epoch"] for r in state["history"]] == list(range(cfg.epochs))
    metrics = _test_metrics(state, runs["data"], cfg)
    for name, value in runs["metrics"]["ray2"].items():
        assert metrics[name] == pytest.approx(value, abs=1e-6), name


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_train_stage_runs_on_a_separate_ray_head_via_ray_address(tiny_store, tmp_path) -> None:
    root, config, _ = tiny_store
    config = config.updated(
        {
            "train": {
                "backend": "ray",
                "workers": 2,
                "models": ["bpr"],
                "common": {"epochs": 4, "report_every": 2, "checkpoint_every": 2},
                "ray": {"storage_path": str(tmp_path / "ray_results"), "address": None},
            }
        }
    )
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(to_raw(config)))
    port, client, agent, agent_grpc, env_agent, metrics_port, node_mgr, obj_mgr = _free_ports(8)
    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # short: Ray's socket paths are length-limited
    ray_bin = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            f"--temp-dir={temp_dir}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={env_agent}",
            f"--metrics-export-port={metrics_port}",
            f"--node-manager-port={node_mgr}",
            f"--object-manager-port={obj_mgr}",
            "--object-store-memory=200000000",
            "--disable-usage-stats",
        ],  # fmt: skip
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped below without `ray stop`
    )
    try:
        t0 = time.time()
        while True:
            assert head.poll() is None, head.stdout.read().decode()[-3000:]
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.time() - t0 < 120, "ray head did not come up"
            time.sleep(0.5)
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipelines.cli",
                "train",
                "--params",
                str(params),
                "--store",
                str(root / "store"),
                "--models",
                str(tmp_path / "models"),
                "--reports",
                str(tmp_path / "reports"),
            ],  # fmt: skip
            cwd=ROOT,
            env={**env, "RAY_ADDRESS": f"127.0.0.1:{port}"},
            capture_output=True,
            text=True,
            timeout=400,
        )
        log = res.stdout + res.stderr
        assert res.returncode == 0, log[-4000:]
        assert f"connected to Ray cluster at 127.0.0.1:{port}" in log
        ckpt = load_checkpoint(tmp_path / "models/bpr/model.pt")
        assert ckpt["best_epoch"] >= 0 and ckpt["config"]["model"] == "bpr"
        assert len(json.loads((tmp_path / "models/bpr/history.json").read_text())) == 4
        assert list((tmp_path / "ray_results").glob("bpr-*/checkpoint_*"))
    finally:
        _stop_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM then SIGKILL to the process group we started (head, raylet, workers)."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(1)  # its children may outlive it briefly; the next signal reaches them
