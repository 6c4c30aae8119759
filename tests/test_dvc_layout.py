"""dvc.yaml and git agree: DVC owns its cached outputs, so git must not track them (a
tracked out makes `dvc repro` fail in a fresh clone with "already tracked by SCM")."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def cached_outs() -> list[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = []
    for stage in stages.values():
        for out in stage.get("outs", []):
            path, opts = (out, {}) if isinstance(out, str) else next(iter(out.items()))
            if (opts or {}).get("cache", True):
                outs.append(path)
    return outs


def test_every_stage_declares_deps_and_outs() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        assert stage.get("outs") or stage.get("metrics"), f"stage {name} declares no outputs"
        assert name == "demo" or stage.get("deps"), f"stage {name} declares no deps"


def test_git_tracks_no_cached_dvc_output() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    outs = cached_outs()
    assert "store/embeddings" in outs and "store/features" in outs
    tracked = subprocess.run(
        ["git", "ls-files", "--", *outs], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked == [], f"git tracks DVC outputs (git rm -r --cached them): {tracked[:5]}"
