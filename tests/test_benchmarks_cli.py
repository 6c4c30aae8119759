"""Every benchmark's command line parses (``--help``), and the real-data ones skip cleanly
(exit 0, a ``skip:`` line) when the dataset root or a dataset is absent. Nothing trains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# validate_scale imports Great Expectations at module level (20-50 s on a loaded 2-core
# machine before --help prints); its own tests cover it.
NOT_HERE = ("__init__", "common", "validate_scale")
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem not in NOT_HERE)
REAL_DATA = ["parity", "parity_zoo2", "real_data", "real_data_zoo2"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MMREC_DATASETS"}
    env.update(HF_HUB_OFFLINE="1", **extra)
    return env


def _run_all(commands: dict[str, list[str]], env: dict[str, str], cwd: Path = ROOT) -> dict[str, tuple]:
    """Run the commands side by side (each ``python -m benchmarks.<name> ...``)."""
    procs = {
        key: subprocess.Popen(
            [sys.executable, "-m", *cmd],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for key, cmd in commands.items()
    }
    out = {}
    for key, p in procs.items():
        text, _ = p.communicate(timeout=120)
        out[key] = (p.returncode, text)
    return out


def test_benchmark_list_is_complete():
    assert set(REAL_DATA) <= set(BENCHMARKS)
    assert {"eval_scale", "knn_memory", "export_mmrec", "parity_mmrec", "train_scaling"} <= set(BENCHMARKS)


def test_every_benchmark_help_exits_0():
    results = _run_all({name: [f"benchmarks.{name}", "--help"] for name in BENCHMARKS}, _env())
    for name, (rc, text) in results.items():
        assert rc == 0, f"{name} --help: exit {rc}\n{text}"
        assert "usage:" in text, f"{name} --help printed no usage\n{text}"
    for name in REAL_DATA:
        assert "--datasets" in results[name][1], f"{name} has no --datasets option"


def test_real_data_benchmarks_skip_without_datasets():
    commands = {name: [f"benchmarks.{name}", "--datasets", "/nonexistent"] for name in REAL_DATA}
    commands.update({f"{name}:none": [f"benchmarks.{name}"] for name in REAL_DATA})
    results = _run_all(commands, _env())
    for key, (rc, text) in results.items():
        assert rc == 0, f"{key}: exit {rc}\n{text}"
        skips = [ln for ln in text.splitlines() if ln.startswith("skip:")]
        assert skips, f"{key}: no skip line\n{text}"
        assert "--datasets" in skips[0] and "MMREC_DATASETS" in skips[0], skips[0]
        if not key.endswith(":none"):
            assert "/nonexistent" in skips[0], skips[0]


def test_env_root_with_missing_dataset_skips(tmp_path):
    """``MMREC_DATASETS`` names the root; a root without the dataset's folder skips naming it."""
    env = _env(MMREC_DATASETS=str(tmp_path))
    results = _run_all({"real_data": ["benchmarks.real_data", "--names", "ml100k"]}, env)
    rc, text = results["real_data"]
    assert rc == 0, text
    assert any(ln.startswith("skip: dataset ml100k") and str(tmp_path) in ln for ln in text.splitlines()), (
        text
    )


def test_profiles_take_the_root():
    from benchmarks.common import PLACEHOLDER, dataset_root, load_profiles

    profiles = load_profiles(Path("/data/root"))
    assert {"ml100k", "dbbook", "baby"} <= set(profiles)
    flat = repr(profiles)
    assert PLACEHOLDER not in flat and "../shared" not in flat
    assert profiles["ml100k"]["interactions"] == "/data/root/ml-100k/ml-100k.inter"
    assert dataset_root("/opt") == Path("/opt")


def test_option_wins_over_env(monkeypatch):
    from benchmarks.common import dataset_root

    monkeypatch.setenv("MMREC_DATASETS", "/from/env")
    assert dataset_root(None) == Path("/from/env")
    assert dataset_root(Path("/from/option")) == Path("/from/option")
    monkeypatch.delenv("MMREC_DATASETS")
    assert dataset_root(None) is None


def test_old_datasets_meaning_is_explained():
    """``--datasets ml100k`` (the old name list) says what the option means now."""
    results = _run_all({"rd": ["benchmarks.real_data", "--datasets", "ml100k"]}, _env())
    rc, text = results["rd"]
    assert rc != 0 and "--names ml100k" in text, text


def test_no_benchmark_refers_to_shared():
    for p in (ROOT / "benchmarks").glob("*.py"):
        assert "../shared" not in p.read_text(), p
    assert "../shared" not in (ROOT / "benchmarks" / "profiles.yaml").read_text()


def test_profiles_build_configs():
    """Each profile is a valid ``data`` section of a benchmark Config."""
    from benchmarks.common import bench_config, load_profiles

    for name, profile in load_profiles(Path("/r")).items():
        cfg = bench_config(data=profile, features={}, ks=[20])
        assert cfg.data.profile == name and cfg.feature_names() == [] and 20 in cfg.evaluate.ks
