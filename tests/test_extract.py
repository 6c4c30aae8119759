"""The extract stage: incremental runs, snapshots, output formats, runner options."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from extract_helpers import (
    catalog,
    clip_feature,
    extract_config,
    extract_params,
    items_store,
    png,
    store_layout,
    tiny_bert,
)

from features.reader import load_features
from features.store import read_manifest, read_table
from pipelines.beam.extract import beam_options, cpu_count, local_workers, torch_threads, wants_reshuffle
from pipelines.config import BeamParams, Config, ParamsError
from pipelines.stages import extract

N = 100


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("bert") / "bert")


def _features(bert) -> dict:
    return {
        "text": {
            "input": "text",
            "fields": ["title", "description"],
            "encoder": "hf-llm",
            "model": str(bert),
        },
        "image": clip_feature(),
    }


def _run(layout, bert, **overrides):
    return extract.run(extract_config(_features(bert), **overrides), layout)


def _by_id(layout, name: str) -> dict[str, dict]:
    return {r["item_id"]: r for r in read_table(layout.feature(name)).to_pylist()}


def test_changing_5_percent_re_embeds_exactly_those_and_reuses_the_rest_bit_for_bit(tmp_path, bert) -> None:
    rows = catalog(tmp_path, N)
    layout = items_store(store_layout(tmp_path), rows)
    first = _run(layout, bert)
    before = {name: _by_id(layout, name) for name in first}
    # A new snapshot: 3 titles and 2 images change (5%), 2 items leave, 1 arrives, order shifts.
    text_changed = {rows[i]["item_id"] for i in (3, 40, 77)}
    image_changed = {rows[i]["item_id"] for i in (10, 55)}
    for r in rows:
        if r["item_id"] in text_changed:
            r["title"] += " (new edition)"
        if r["item_id"] in image_changed:
            png(tmp_path / "images" / f"{int(r['item_id'][-4:]):04d}.png", seed=999)
    new_rows = rows[2:] + [
        {
            "item_id": "item-new",
            "title": "New",
            "description": "d",
            "image_path": str(png(tmp_path / "images/new.png", 5)),
        }
    ]
    items_store(layout, new_rows[::-1])
    second = _run(layout, bert)
    new_idx = {r["item_id"]: i for i, r in enumerate(new_rows[::-1])}
    for name, changed in (("text", text_changed), ("image", image_changed)):
        c = second[name]["counts"]
        assert c == {
            **c,
            "items_read": N - 1,
            "embedded": len(changed) + 1,
            "reused": N - 2 - len(changed),
            "changed": len(changed),
            "removed": 2,
            "rejected": 0,
        }
        after = _by_id(layout, name)
        assert set(after) == set(new_idx)
        for item_id, row in after.items():
            assert row["item_idx"] == new_idx[item_id]
            if item_id in changed or item_id == "item-new":
                assert item_id == "item-new" or row["content_hash"] != before[name][item_id]["content_hash"]
                assert row["created"] > before[name]["item-0002"]["created"]
            else:  # reused: same vector bits, hash and timestamps
                old = before[name][item_id]
                assert np.array_equal(
                    np.asarray(row["embedding"], np.float32).view(np.uint32),
                    np.asarray(old["embedding"], np.float32).view(np.uint32),
                )
                assert {k: row[k] for k in ("content_hash", "created", "event_timestamp")} == {
                    k: old[k] for k in ("content_hash", "created", "event_timestamp")
                }
        # The replaced table is kept one generation back for drift checks.
        prev = read_manifest(layout.feature_previous(name))
        assert prev["event_timestamp"] == first[name]["event_timestamp"] and prev["row_count"] == N
    assert layout.feature_names() == ["image", "text"]


def test_unchanged_rerun_reuses_everything_and_loads_no_model(tmp_path, bert, monkeypatch) -> None:
    layout = items_store(store_layout(tmp_path), catalog(tmp_path, 30))
    first = _run(layout, bert)
    loads = []
    monkeypatch.setattr("features.encoders.hf_llm.HFLanguageModelEncoder.load", lambda self: loads.append(1))
    monkeypatch.setattr("features.encoders.clip.OpenClipEncoder.load", lambda self: loads.append(1))
    second = _run(layout, bert)
    for name in first:
        assert second[name]["counts"]["reused"] == 30 and second[name]["counts"]["embedded"] == 0
        # the replaced (identical) table is kept as the drift baseline
        a, b = read_table(layout.feature(name)), read_table(layout.feature_previous(name))
        assert a.sort_by("item_idx").equals(b.sort_by("item_idx"))
        assert (
            read_manifest(layout.feature_previous(name))["event_timestamp"] == first[name]["event_timestamp"]
        )
    assert loads == []


def test_a_different_encoder_invalidates_the_cache(tmp_path, bert) -> None:
    layout = items_store(store_layout(tmp_path), catalog(tmp_path, 12))
    _run(layout, bert)
    feats = _features(bert)
    feats["text"]["pooling"] = "last"
    m = extract.run(extract_config(feats), layout)
    assert m["text"]["counts"]["embedded"] == 12 and not m["text"]["cache"]["used"]
    assert "encoder or input version changed" in m["text"]["cache"]["reason"]
    assert m["image"]["counts"]["reused"] == 12


def test_output_is_readable_by_polars_pyarrow_duckdb_and_the_reader(tmp_path, bert) -> None:
    layout = items_store(store_layout(tmp_path), catalog(tmp_path, 20))
    m = _run(layout, bert, keep_previous=False)["image"]
    files = str(layout.feature("image") / "*.parquet")
    d = m["dim"]
    assert pq.read_schema(next(layout.feature("image").glob("*.parquet"))).field(
        "embedding"
    ).type == pa.list_(pa.float32(), d)
    df = pl.read_parquet(files)
    assert df.schema["embedding"] == pl.Array(pl.Float32, d) and df.height == 20
    assert set(df.columns) == {
        "item_idx",
        "item_id",
        "embedding",
        "content_hash",
        "event_timestamp",
        "created",
    }
    sql = "select count(*), max(len(embedding)), max(abs(list_dot_product(embedding, embedding) - 1))"
    n, width, norm = duckdb.sql(f"{sql} from '{files}'").fetchall()[0]
    assert (n, width) == (20, d) and norm < 1e-4
    f = load_features(layout.feature("image"), n_items=20)
    assert f.matrix.shape == (20, d) and f.present.all() and f.normalized and f.manifest["random_weights"]
    np.testing.assert_array_equal(f.matrix[df["item_idx"].to_numpy()], df["embedding"].to_numpy())
    assert m["stats"]["rows"] == 20 and abs(m["stats"]["norm_mean"] - 1) < 1e-5
    assert not layout.feature_previous("image").exists()
    assert not layout.feature_previous("image").parent.exists()


def test_runner_and_options_pass_through_params_and_cli() -> None:
    opts = beam_options(
        BeamParams(
            runner="DirectRunner",
            options={"direct_running_mode": "multi_processing", "direct_num_workers": 2},
        ),
        ["--runner=FlinkRunner", "--flink_master=host:8081", "--parallelism=4"],
    )
    all_opts = opts.get_all_options()
    assert all_opts["runner"] == "FlinkRunner" and all_opts["flink_master"] == "host:8081"
    assert all_opts["parallelism"] == 4
    assert (
        local_workers(opts) is None and torch_threads("auto", opts) is None and wants_reshuffle("auto", opts)
    )
    local = beam_options(
        BeamParams(options={"direct_running_mode": "multi_processing", "direct_num_workers": 2})
    )
    assert local_workers(local) == 2 and wants_reshuffle("auto", local)
    assert torch_threads("auto", local) == max(1, cpu_count() // 2) and torch_threads(3, local) == 3
    in_memory = beam_options(BeamParams(options={"direct_running_mode": "in_memory"}))
    assert local_workers(in_memory) == 1 and not wants_reshuffle("auto", in_memory)


def test_bad_feature_params_are_clear_errors(tmp_path, bert) -> None:
    layout = items_store(store_layout(tmp_path), catalog(tmp_path, 3))
    # a bad value fails when params load, before any work, naming the key, the options and the value
    with pytest.raises(
        ParamsError, match=r"extract.features.x.input: .*'text', 'image' or 'item_id', got 'audio'"
    ):
        Config.from_dict(
            {"extract": extract_params({"x": {"input": "audio", "encoder": "hf-llm", "model": str(bert)}})}
        )
    with pytest.raises(ParamsError, match=r"extract.features.x.polling: unknown key; did you mean 'pooling'"):
        extract_config({"x": {"encoder": "hf-llm", "model": str(bert), "polling": "last"}})
    # a field the items table lacks fails when the stage plans the feature
    with pytest.raises(ValueError, match=r"missing column\(s\) \['subtitle'\]"):
        extract.run(
            extract_config({"x": {"fields": ["subtitle"], "encoder": "hf-llm", "model": str(bert)}}), layout
        )
    assert layout.feature_names() == []


@pytest.mark.slow
def test_multi_process_runner_reuses_the_cache_and_embeds_like_the_encoder(tmp_path, bert) -> None:
    rows = catalog(tmp_path, 40)
    layout = items_store(store_layout(tmp_path), rows)
    feats = {"text": _features(bert)["text"]}
    extract.run(extract_config(feats), layout)
    before = _by_id(layout, "text")
    for r in rows[5:7]:
        r["description"] = "changed " + r["description"]
    items_store(layout, rows)
    mp = {
        "runner": "DirectRunner",
        "options": {"direct_running_mode": "multi_processing", "direct_num_workers": 2},
    }
    m = extract.run(extract_config(feats, beam=mp, torch_threads="auto"), layout)["text"]
    assert m["beam"]["local_workers"] == 2 and m["beam"]["torch_threads"] == max(1, cpu_count() // 2)
    assert m["counts"] | {"embedded": 2, "reused": 38, "changed": 2, "removed": 0} == m["counts"]
    after = _by_id(layout, "text")
    from features.encoders import build_encoder
    from features.inputs import prepare_text

    enc = build_encoder({k: v for k, v in feats["text"].items() if k not in ("input", "fields")})
    want = enc.encode([prepare_text(r, ["title", "description"])[0] for r in rows[5:7]])
    np.testing.assert_allclose([after[r["item_id"]]["embedding"] for r in rows[5:7]], want, atol=1e-5)
    assert all(
        after[i]["embedding"] == before[i]["embedding"] for i in after if i not in {"item-0005", "item-0006"}
    )


def test_missing_weights_stop_extract_naming_the_feature_and_how_to_supply_them(tmp_path, bert) -> None:
    from features.errors import PlatformError

    layout = items_store(store_layout(tmp_path), catalog(tmp_path, 3))
    feats = {
        "text": _features(bert)["text"],
        "image_clip": clip_feature(pretrained="openai", allow_random_init=False),
    }
    with pytest.raises(PlatformError) as err:
        extract.run(extract_config(feats), layout)
    msg = str(err.value)
    assert msg.startswith("extract.features.image_clip: open_clip tiny-clip: 'openai'"), msg
    assert msg.endswith(
        "; give a local checkpoint path in extract.features.image_clip.pretrained "
        "(or allow_random_init: true for a demo only)"
    )
    assert layout.feature_names() == []  # planned before any feature ran: the text one did not run either


def test_decoded_pixels_per_batch_stay_under_max_batch_pixels(tmp_path, monkeypatch, caplog) -> None:
    import logging

    from features.encoders.clip import OpenClipEncoder
    from pipelines.beam import transforms

    layout = items_store(store_layout(tmp_path), catalog(tmp_path, 12))  # 32x32 = 1,024 pixels each
    held, peak, batches = [0], [0], []
    real_decode, real_encode = transforms.decode_image, OpenClipEncoder.encode

    def decode(data, **kw):
        out = real_decode(data, **kw)
        held[0] += out.image.width * out.image.height
        peak[0] = max(peak[0], held[0])
        return out

    def encode(self, batch):
        batches.append(len(batch))
        out = real_encode(self, batch)
        held[0] -= sum(b.width * b.height for b in batch)
        return out

    monkeypatch.setattr(transforms, "decode_image", decode)
    monkeypatch.setattr(OpenClipEncoder, "encode", encode)
    caplog.set_level(logging.DEBUG, logger="pipelines.beam.transforms")
    cfg = extract_config({"image": clip_feature()}, images=tmp_path / "images", max_batch_pixels=2_500)
    m = extract.run(cfg, layout)["image"]
    assert m["counts"]["embedded"] == 12 and m["counts"]["rejected"] == 0 and m["row_count"] == 12
    assert peak[0] <= 2_500 and max(batches) == 2 and sum(batches) == 12 and len(batches) >= 6
    # the counter is the extra sub-batches, as logged per split batch
    import re

    logged = [int(n) - 1 for n in re.findall(r"split into (\d+) sub-batches of <= 2500 pixels", caplog.text)]
    assert m["counts"]["pixel_splits"] == sum(logged) >= 3, (m["counts"], logged)


def test_without_an_image_folder_every_image_is_rejected_unread(tmp_path) -> None:
    layout = items_store(store_layout(tmp_path), catalog(tmp_path, 3))
    m = extract.run(extract_config({"image": clip_feature()}, images=None), layout)["image"]
    assert m["counts"]["embedded"] == 0 and m["counts"]["rejected"] == 3
    rejects = read_table(layout.feature_rejects("image")).to_pylist()
    assert {r["reason"] for r in rejects} == {"no image folder configured"}
