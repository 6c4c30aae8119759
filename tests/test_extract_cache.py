"""The feature cache's bookkeeping: which previous table may serve, and publishing over it."""

from __future__ import annotations

import json

import pytest

from features.cache import PREVIOUS_DIR, cache_key, previous_table, publish_keeping_previous
from features.inputs import INPUT_VERSION
from features.store import MANIFEST


def _publish(path, tag: str, **kw) -> None:
    with publish_keeping_previous(path, **kw) as tmp:
        (tmp / "part-0.parquet").write_text(tag)
        (tmp / MANIFEST).write_text(json.dumps({"tag": tag, "cache_key": "k", "dim": 4, "row_count": 1}))


def _tag(path) -> str:
    return json.loads((path / MANIFEST).read_text())["tag"]


def test_publishing_keeps_exactly_one_previous_generation(tmp_path) -> None:
    path = tmp_path / "features" / "f"
    _publish(path, "one")
    assert _tag(path) == "one" and not (tmp_path / "features" / PREVIOUS_DIR).exists()
    _publish(path, "two")
    _publish(path, "three")
    assert _tag(path) == "three" and _tag(tmp_path / "features" / PREVIOUS_DIR / "f") == "two"
    assert sorted(p.name for p in (tmp_path / "features").iterdir()) == [PREVIOUS_DIR, "f"]
    assert [p.name for p in (tmp_path / "features" / PREVIOUS_DIR).iterdir()] == ["f"]
    _publish(path, "four", keep_previous=False)
    assert _tag(path) == "four" and _tag(tmp_path / "features" / PREVIOUS_DIR / "f") == "two"


def test_a_failed_run_leaves_the_published_table_and_its_previous_alone(tmp_path) -> None:
    path = tmp_path / "f"
    _publish(path, "one")
    _publish(path, "two")
    with pytest.raises(RuntimeError), publish_keeping_previous(path) as tmp:
        (tmp / "half.parquet").write_text("x")
        raise RuntimeError("worker died")
    assert _tag(path) == "two" and _tag(tmp_path / PREVIOUS_DIR / "f") == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == [PREVIOUS_DIR, "f"]


def test_previous_table_serves_only_with_the_same_key_and_dimension(tmp_path) -> None:
    path = tmp_path / "f"
    assert previous_table(path, "k", 4) == (None, "no previous table")
    _publish(path, "one")
    assert previous_table(path, "k", 4)[0] == path
    assert "encoder or input version changed" in previous_table(path, "other", 4)[1]
    assert previous_table(path, "k", 8) == (None, "dimension changed (4 -> 8)")
    assert cache_key("enc") == f"enc|inputs:{INPUT_VERSION}"
