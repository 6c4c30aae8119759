"""Drift between the previous and the current snapshot of a feature table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner
from validation_helpers import feature_table, items_table, unit_rows, write_features

from features import schemas
from features.store import write_table
from pipelines.cli import app
from pipelines.config import Config, Thresholds, load_config, to_raw
from pipelines.layout import Layout
from pipelines.stages import validate
from validation.drift import drift

ROOT = Path(__file__).resolve().parents[1]
N, DIM = 1000, 32
ID = "it{:04d}"


def config() -> Config:
    raw = to_raw(load_config(ROOT / "params.yaml"))
    return Config.from_dict({**raw, "seed": 0})


def drift_th() -> Thresholds:
    return config().validate_params.for_feature("text")


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    return unit_rows(rng, n, DIM)


def write_snapshot(
    path: Path, ids: np.ndarray, emb: np.ndarray, hashes: list[str], encoder_id: str = "enc@1", **extra: Any
) -> None:
    write_features(path, feature_table(ids, emb, hashes, fmt=ID), encoder_id=encoder_id, **extra)


def snapshots(root: Path, changed_share: float = 0.03, seed: int = 0) -> tuple[Path, Path, np.ndarray]:
    """previous and current tables of N items; ``changed_share`` of them have new content."""
    rng = np.random.default_rng(seed)
    ids = np.arange(N)
    emb = unit(rng, N)
    hashes = [f"h{i}" for i in ids]
    prev, cur = root / "prev", root / "cur"
    write_snapshot(prev, ids, emb, hashes)
    changed = rng.choice(N, int(round(changed_share * N)), replace=False)
    # Unchanged items: the same vector up to float noise (another batch, another machine).
    new = emb + rng.normal(0, 1e-4, emb.shape).astype(np.float32)
    new[changed] = unit(rng, len(changed))
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    new_hashes = [f"h{i}-v2" if i in set(changed) else f"h{i}" for i in ids]
    write_snapshot(cur, ids, new, new_hashes)
    return prev, cur, changed


def test_three_percent_changed_is_reported_exactly_through_the_gate(tmp_path: Path) -> None:
    """The gate picks up store/features/_previous/<name> on its own."""
    store = tmp_path / "store"
    prev, cur, changed = snapshots(tmp_path)
    write_table(store / "items", items_table(N, fmt=ID), schemas.ITEMS)
    layout = Layout(store=store, reports=tmp_path / "reports")
    layout.feature_previous("text").parent.mkdir(parents=True)
    prev.rename(layout.feature_previous("text"))
    cur.rename(layout.feature("text"))
    summary = validate.run(config(), layout, tables=["features/text"])
    d = summary["drift"]["features/text"]
    assert d["status"] == "ok" and summary["success"]
    assert d["shares"]["changed_share"] == pytest.approx(0.03, abs=1e-12)
    assert d["counts"] == {
        "previous": N,
        "current": N,
        "common": N,
        "unchanged": N - 30,
        "changed": 30,
        "added": 0,
        "removed": 0,
    }
    assert d["shares"]["added_share"] == 0 and d["shares"]["removed_share"] == 0
    assert d["stats"]["unchanged_cosine"]["min"] >= 0.999
    report = layout.validation()
    assert "Drift against the previous snapshot" in (report / "index.html").read_text()
    assert json.loads((report / "summary.json").read_text())["drift"]["features/text"]["status"] == "ok"


def test_unchanged_item_with_a_new_vector_fails_naming_it(tmp_path: Path) -> None:
    prev, cur, changed = snapshots(tmp_path, changed_share=0.0)
    rng = np.random.default_rng(5)
    emb = unit(np.random.default_rng(0), N)
    emb[7] = unit(rng, 1)[0]  # same content_hash, different vector: the encoder moved
    write_snapshot(cur, np.arange(N), emb, [f"h{i}" for i in range(N)])
    d = drift(prev, cur, drift_th(), table="features/text")
    check = {c.metric: c for c in d.checks}["min_unchanged_cosine"]
    assert d.status == "fail" and check.status == "fail" and check.sample[0].startswith("it0007")
    assert d.stats["unchanged_cosine"]["below_fail"] == 1


def test_encoder_change_skips_vector_drift_but_counts_churn(tmp_path: Path) -> None:
    prev, _, _ = snapshots(tmp_path)
    cur = tmp_path / "cur2"
    ids = np.arange(100, N + 100)  # 100 removed, 100 added
    write_snapshot(cur, ids, unit(np.random.default_rng(3), N), [f"h{i}" for i in ids], encoder_id="enc@2")
    d = drift(prev, cur, drift_th(), table="t")
    assert "encoder changed" in (d.reason or "")
    by = {c.metric: c for c in d.checks}
    assert by["min_unchanged_cosine"].status == "skipped" and by["norm_shift"].status == "skipped"
    assert by["added_share"].value == pytest.approx(0.1) and by["removed_share"].value == pytest.approx(0.1)
    assert by["added_share"].sample[0] == f"it{N:04d}" and by["removed_share"].sample[0] == "it0000"


def test_distribution_shift_and_removals_fail_past_their_levels(tmp_path: Path) -> None:
    prev, _, _ = snapshots(tmp_path)
    rng = np.random.default_rng(9)
    keep = np.arange(N // 3)  # two thirds removed
    common = unit(rng, 1)[0]
    emb = (unit(rng, len(keep)) * 0.3 + common) * 1.5  # pulled towards one point, norms ~1.5
    write_snapshot(tmp_path / "cur3", keep, emb, [f"new{i}" for i in keep], normalized=False)
    d = drift(prev, tmp_path / "cur3", drift_th(), table="t")
    by = {c.metric: c.status for c in d.checks}
    assert by["removed_share"] == "fail" and by["pair_cosine_shift"] == "fail" and by["norm_shift"] == "fail"
    assert by["changed_share"] == "warn" and d.counts["changed"] == len(keep)


def test_no_previous_snapshot_is_reported_not_failed(tmp_path: Path) -> None:
    _, cur, _ = snapshots(tmp_path)
    d = drift(tmp_path / "missing", cur, drift_th(), table="t")
    assert d.status == "skipped" and d.reason == "no previous snapshot"


def test_validate_drift_cli_on_any_two_paths(tmp_path: Path) -> None:
    prev, cur, _ = snapshots(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(to_raw(config())))
    base = ["validate-drift", "--params", str(tmp_path / "params.yaml"), "--previous", str(prev)]
    ok = CliRunner().invoke(app, [*base, "--current", str(cur), "--out", str(tmp_path / "rep")])
    assert ok.exit_code == 0, ok.output
    assert '"changed_share": 0.03' in ok.output and (tmp_path / "rep/index.html").exists()
    bad = unit(np.random.default_rng(11), N)
    write_snapshot(tmp_path / "bad", np.arange(N), bad, [f"h{i}" for i in range(N)])
    res = CliRunner().invoke(app, [*base, "--current", str(tmp_path / "bad")])
    assert res.exit_code == 1 and "min_unchanged_cosine" in res.output and "it0" in res.output


def test_per_feature_drift_override_sets_one_level(tmp_path: Path) -> None:
    """``feature_overrides.<name>.drift`` may set one level; the rest stay the defaults."""
    from pipelines.stages import drift as drift_stage

    prev, _, _ = snapshots(tmp_path, changed_share=0.0)
    emb = unit(np.random.default_rng(0), N)
    emb[7] = unit(np.random.default_rng(5), 1)[0]
    write_snapshot(tmp_path / "moved", np.arange(N), emb, [f"h{i}" for i in range(N)])
    with pytest.raises(validate.ValidationFailed, match="min_unchanged_cosine"):
        drift_stage.run(config(), prev, tmp_path / "moved", feature="text")
    raw = to_raw(config())
    raw["validate"]["feature_overrides"]["text"] = {"drift": {"min_unchanged_cosine": {"fail": None}}}
    relaxed = Config.from_dict(raw)
    th = relaxed.validate_params.for_feature("text")
    assert th.drift.min_unchanged_cosine.warn == 0.9999 and th.drift.norm_shift.fail == 0.1
    summary = drift_stage.run(relaxed, prev, tmp_path / "moved", feature="text", out=tmp_path / "rep")
    assert summary["drift"]["text"]["status"] == "warn" and (tmp_path / "rep/index.html").exists()
