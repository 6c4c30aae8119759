"""The feature cache's bookkeeping: which previous table may serve, and publishing over it."""

from __future__ import annotations

import json

import pytest

from features.cache import cache_key, key_change, previous_table
from features.inputs import INPUT_VERSION
from features.schemas import SCHEMA_VERSION
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
    assert cache_key("enc") == f"enc|inputs:{INPUT_VERSION}|schema:{SCHEMA_VERSION}"


def test_the_reason_names_the_part_of_the_key_that_changed(tmp_path) -> None:
    layout = _layout(tmp_path)
    path = layout.feature("f")
    old = cache_key("st:model@aaaa:len8:l2:libs@1111")
    with publish(path) as tmp:
        (tmp / "part-0.parquet").write_text("x")
        (tmp / MANIFEST).write_text(json.dumps({"cache_key": old, "dim": 4, "row_count": 1}))
    assert previous_table(path, old, 4)[0] == path
    reason = previous_table(path, cache_key("st:model@bbbb:len8:l2:libs@2222"), 4)[1]
    assert "cache key changed (model@aaaa -> model@bbbb; libs@1111 -> libs@2222)" in reason
    assert key_change("a|inputs:in-1|schema:1", "a|inputs:in-2|schema:1") == "in-1 -> in-2"


# --- a complete cache key: whatever changes what the encoder loads re-embeds every item -------


@pytest.fixture(scope="module")
def st_model(tmp_path_factory):
    from extract_helpers import tiny_sentence_transformer

    return tiny_sentence_transformer(tmp_path_factory.mktemp("st") / "st")


def _st_extract(layout, model):
    from extract_helpers import extract_config

    from pipelines.stages import extract

    feature = {"input": "text", "fields": ["title", "description"], "encoder": "sentence-transformers"}
    return extract.run(extract_config({"text": {**feature, "model": str(model)}}), layout)["text"]


def _vectors(layout):
    from features.store import read_table

    return {r["item_id"]: r["embedding"] for r in read_table(layout.feature("text")).to_pylist()}


def _edit_json(path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def test_model_folder_and_library_changes_re_embed_every_item(tmp_path, st_model, monkeypatch) -> None:
    import shutil

    from extract_helpers import catalog, items_store, store_layout

    import features.encoders.base as encoders_base

    n = 8
    model = shutil.copytree(st_model, tmp_path / "st")  # edited below; the fixture stays pristine
    layout = items_store(store_layout(tmp_path), catalog(tmp_path, n))
    first = _st_extract(layout, model)
    assert first["counts"]["embedded"] == n and first["cache_key"].endswith(f"|schema:{SCHEMA_VERSION}")
    parts = first["cache_key_parts"]
    assert parts["model_folder"]["files"] >= 8 and parts["libraries"]["sentence-transformers"]
    assert set(parts["libraries"]) >= {"torch", "transformers", "sentence-transformers", "numpy"}
    same = _st_extract(layout, model)
    assert same["counts"]["reused"] == n and same["cache"]["used"]
    seen = [_vectors(layout)]

    def changed(what: str) -> dict:
        m = _st_extract(layout, model)
        assert m["counts"]["embedded"] == n and m["counts"]["reused"] == 0, what
        assert not m["cache"]["used"] and "cache key changed" in m["cache"]["reason"], what
        return m

    # 1. pooling mean -> cls in the sentence-transformers module folder: a different model.
    _edit_json(model / "1_Pooling" / "config.json", lambda c: c.update(pooling_mode="cls"))
    m = changed("pooling")
    assert m["cache_key_parts"]["model_folder"]["checksum"] != parts["model_folder"]["checksum"]
    seen.append(_vectors(layout))
    assert all(seen[1][k] != seen[0][k] for k in seen[0])  # cls vectors really differ

    # 2. the tokenizer: two vocabulary entries swapped.
    def swap(tok: dict) -> None:
        vocab = tok["model"]["vocab"]
        vocab["item"], vocab["number"] = vocab["number"], vocab["item"]

    _edit_json(model / "tokenizer.json", swap)
    changed("tokenizer")
    seen.append(_vectors(layout))
    assert all(seen[2][k] != seen[1][k] for k in seen[1])
    # 3. a library that changes outputs is upgraded (the version the key reads, patched).
    real = encoders_base.library_version
    monkeypatch.setattr(
        encoders_base, "library_version", lambda d: "99.0" if d == "sentence-transformers" else real(d)
    )
    m = changed("library version")
    assert m["cache_key_parts"]["libraries"]["sentence-transformers"] == "99.0"
    assert "libs@" in m["cache"]["reason"]
    # and with nothing changed the next run reuses every vector again.
    assert _st_extract(layout, model)["counts"]["reused"] == n
