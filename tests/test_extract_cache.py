"""The feature cache's bookkeeping: which previous table may serve, and publishing over it."""

from __future__ import annotations

import json

import pytest

from features.cache import cache_key, previous_table
from features.inputs import INPUT_VERSION
from features.store import MANIFEST, publish
from pipelines.layout import Layout


def _layout(tmp_path) -> Layout:
    return Layout(store=tmp_path / "store", models=tmp_path / "models", reports=tmp_path / "reports")


def _publish(layout: Layout, name: str, tag: str, *, keep_previous: bool = True) -> None:
    """Publish a fake feature table the way extract does (the replaced one kept as previous)."""
    keep = layout.feature_previous(name) if keep_previous else None
    with publish(layout.feature(name), previous=keep) as tmp:
        (tmp / "part-0.parquet").write_text(tag)
        (tmp / MANIFEST).write_text(json.dumps({"tag": tag, "cache_key": "k", "dim": 4, "row_count": 1}))


def _tag(path) -> str:
    return json.loads((path / MANIFEST).read_text())["tag"]


def test_publishing_keeps_exactly_one_previous_generation(tmp_path) -> None:
    layout = _layout(tmp_path)
    root = layout.features_root
    _publish(layout, "f", "one")
    assert _tag(layout.feature("f")) == "one" and not layout.feature_previous("f").parent.exists()
    _publish(layout, "f", "two")
    _publish(layout, "f", "three")
    assert _tag(layout.feature("f")) == "three" and _tag(layout.feature_previous("f")) == "two"
    prev_dir = layout.feature_previous("f").parent
    assert sorted(p.name for p in root.iterdir()) == sorted([prev_dir.name, "f"])
    assert [p.name for p in prev_dir.iterdir()] == ["f"]
    assert layout.feature_names() == ["f"]  # the previous generation is not a published feature
    _publish(layout, "f", "four", keep_previous=False)
    assert _tag(layout.feature("f")) == "four" and _tag(layout.feature_previous("f")) == "two"
    assert sorted(p.name for p in root.iterdir()) == sorted([prev_dir.name, "f"])  # no trash left


def test_an_unchanged_rerun_publishes_the_replaced_table_as_previous(tmp_path) -> None:
    layout = _layout(tmp_path)
    _publish(layout, "f", "same")
    before = {p.name: p.read_bytes() for p in layout.feature("f").iterdir()}
    _publish(layout, "f", "same")  # a duplicate run: identical content
    after = {p.name: p.read_bytes() for p in layout.feature("f").iterdir()}
    previous = {p.name: p.read_bytes() for p in layout.feature_previous("f").iterdir()}
    assert after == before == previous
    assert layout.feature_names() == ["f"]
    # and the previous copy is a valid cache on its own: same key and dimension
    assert previous_table(layout.feature_previous("f"), "k", 4)[0] == layout.feature_previous("f")


def test_a_failed_run_leaves_the_published_table_and_its_previous_alone(tmp_path) -> None:
    layout = _layout(tmp_path)
    _publish(layout, "f", "one")
    _publish(layout, "f", "two")
    with (
        pytest.raises(RuntimeError),
        publish(layout.feature("f"), previous=layout.feature_previous("f")) as tmp,
    ):
        (tmp / "half.parquet").write_text("x")
        raise RuntimeError("worker died")
    assert _tag(layout.feature("f")) == "two" and _tag(layout.feature_previous("f")) == "one"
    prev_dir = layout.feature_previous("f").parent
    assert sorted(p.name for p in layout.features_root.iterdir()) == sorted([prev_dir.name, "f"])


def test_previous_table_serves_only_with_the_same_key_and_dimension(tmp_path) -> None:
    layout = _layout(tmp_path)
    path = layout.feature("f")
    assert previous_table(path, "k", 4) == (None, "no previous table")
    _publish(layout, "f", "one")
    assert previous_table(path, "k", 4)[0] == path
    assert "encoder or input version changed" in previous_table(path, "other", 4)[1]
    assert previous_table(path, "k", 8) == (None, "dimension changed (4 -> 8)")
    assert cache_key("enc") == f"enc|inputs:{INPUT_VERSION}"
