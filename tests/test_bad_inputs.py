"""A corpus of bad items through the real Beam pipeline: nothing crashes, nothing is lost.

Every item ends up embedded (possibly with a note saying what was changed) or in the
rejects table with its reason, and items read = embedded + rejected, per feature. Image
paths outside ``data.images`` are never read, only allowed formats are decoded, and no
reject detail carries a byte of the file. docs/bad-inputs/images.md lists the corpus.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from extract_helpers import (
    bad_images,
    clip_feature,
    extract_config,
    items_store,
    leaked_bytes,
    png,
    store_layout,
    tiny_bert,
)

from features import schemas
from features.encoders.clip import OpenClipEncoder
from features.store import read_manifest, read_table, write_table
from pipelines.stages import extract

MAX_BYTES = 200_000
LONG = "very long description " * 400  # 8,800 characters, hundreds of tokens


def _text_rows() -> dict[str, tuple[dict, str]]:
    return {
        "text_none": ({"title": None, "description": None}, "reject:empty text"),
        "text_blank": ({"title": "", "description": " \t\n  "}, "reject:empty text"),
        "text_bad_utf8": ({"title": "@@BAD_UTF8@@", "description": "fine"}, "reject:invalid utf-8 text"),
        "text_long": ({"title": "Long one", "description": LONG}, "note:cut"),
        "text_control_chars": ({"title": "Nul\x00 and bell\x07", "description": "ok"}, "ok"),
        "text_unicode": ({"title": "Café ☕ 東京", "description": "émoji 👟"}, "ok"),
    }


def _build(tmp_path):
    """Items with a bad image or a bad text (never both), what should happen to each, and
    the image path of each image item."""
    images = bad_images(tmp_path / "images", max_bytes=MAX_BYTES)
    images["encoder_raises"] = (str(png(tmp_path / "images/raise.png", 1, size=7)), "reject:encoder error")
    images["encoder_nan"] = (str(png(tmp_path / "images/nan.png", 2, size=9)), "reject:non-finite embedding")
    good_png = str(png(tmp_path / "images/good.png", 3))
    rows, image_expect, text_expect = [], {}, {}
    paths = {f"img:{name}": path for name, (path, _) in images.items()}
    for name, (path, expect) in images.items():
        rows.append(
            {"item_id": f"img:{name}", "title": f"Item {name}", "description": "d", "image_path": path}
        )
        image_expect[f"img:{name}"], text_expect[f"img:{name}"] = expect, "ok"
    for name, (fields, expect) in _text_rows().items():
        rows.append({"item_id": f"txt:{name}", **fields, "image_path": good_png})
        image_expect[f"txt:{name}"], text_expect[f"txt:{name}"] = "ok", expect
    layout = items_store(store_layout(tmp_path), rows)
    # Plant invalid UTF-8 bytes in one title, as a careless upstream writer could.
    t = read_table(layout.items())
    titles = [
        b"caf\xe9 \xff" if v == "@@BAD_UTF8@@" else (v.encode() if v is not None else None)
        for v in t.column("title").to_pylist()
    ]
    t = t.set_column(
        t.schema.get_field_index("title"), "title", pa.array(titles, pa.binary()).view(pa.string())
    )
    write_table(layout.items(write=True), t, schemas.ITEMS)
    return layout, image_expect, text_expect, paths


def _outcomes(layout, name: str) -> dict[str, str]:
    got = {i: "ok" for i in read_table(layout.feature(name), columns=["item_id"]).column(0).to_pylist()}
    for r in read_table(layout.feature_notes(name)).to_pylist():
        got[r["item_id"]] = f"note:{r['detail']}"
    for r in read_table(layout.feature_rejects(name)).to_pylist():
        assert r["item_id"] not in got, f"{r['item_id']} both embedded and rejected"
        got[r["item_id"]] = f"reject:{r['reason']}"
    return got


def _check(got: dict[str, str], expect: dict[str, str]) -> None:
    assert set(got) == set(expect), "an item was lost or invented"
    for item, want in expect.items():
        kind, _, text = want.partition(":")
        assert got[item].startswith(kind) and text in got[item], f"{item}: expected {want}, got {got[item]}"


@pytest.fixture()
def flaky_clip(monkeypatch):
    """The tiny CLIP fails on 7x7 images and returns NaN for 9x9 ones (batch-level faults)."""
    real = OpenClipEncoder.encode

    def encode(self, batch):
        if any(getattr(b, "size", None) == (7, 7) for b in batch):
            raise RuntimeError("simulated kernel failure")
        out = real(self, batch)
        out[[getattr(b, "size", None) == (9, 9) for b in batch]] = np.nan
        return out

    monkeypatch.setattr(OpenClipEncoder, "encode", encode)


def test_bad_input_corpus_is_handled_or_rejected_with_reasons(tmp_path, flaky_clip) -> None:
    layout, image_expect, text_expect, paths = _build(tmp_path)
    bert = tiny_bert(tmp_path / "bert")
    features = {
        "image": clip_feature(),
        "text": {
            "input": "text",
            "fields": ["title", "description"],
            "encoder": "hf-llm",
            "model": str(bert),
            "max_length": 32,
        },
    }
    config = extract_config(
        features, seed=0, images=tmp_path / "images", max_image_bytes=MAX_BYTES, max_text_chars=2_000
    )
    manifests = extract.run(config, layout)
    kinds = {
        v.split(":")[1].split(" (")[0] for v in [*image_expect.values(), *text_expect.values()] if v != "ok"
    }
    assert len(kinds) >= 16, kinds
    _check(_outcomes(layout, "image"), image_expect)
    _check(_outcomes(layout, "text"), text_expect)
    n = read_manifest(layout.items())["row_count"]
    for name, m in manifests.items():
        c = m["counts"]
        assert c["items_read"] == n == c["embedded"] + c["rejected"] + c["reused"], name
        assert (
            m["row_count"] == c["embedded"]
            and read_manifest(layout.feature_rejects(name))["row_count"] == c["rejected"]
        )
    long_note = _outcomes(layout, "text")["txt:text_long"]
    assert "cut to max_text_chars 2000" in long_note and "> max_length 32, cut" in long_note
    assert manifests["text"]["counts"]["text_truncated"] == 1
    rejects = pl.read_parquet(str(layout.feature_rejects("image") / "*.parquet"))
    assert rejects.filter(pl.col("item_id") == "img:missing_file")["detail"][0].endswith("does-not-exist.png")
    eps = rejects.filter(pl.col("item_id") == "img:postscript.eps")["detail"][0]
    assert eps.startswith(
        "image format EPS not allowed; allowed: ['JPEG', 'PNG', 'WEBP', 'GIF', 'BMP', 'TIFF']"
    )
    # No reject detail holds 8 bytes in a row of its file (nor a bytes literal).
    checked = 0
    for r in rejects.iter_rows(named=True):
        path = paths.get(r["item_id"])
        if path and Path(path).is_file():
            assert leaked_bytes(r["detail"], Path(path).read_bytes()) is None, r
            checked += 1
    assert checked >= 15


def test_precomputed_import_rejects_items_without_a_vector(tmp_path) -> None:
    rows = [{"item_id": f"p{i}", "title": "t"} for i in range(6)]
    layout = items_store(store_layout(tmp_path), rows)
    vecs = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    vecs[1] = np.inf
    np.save(tmp_path / "v.npy", vecs)
    (tmp_path / "ids.txt").write_text("p0\np1\np2\np3\nnot-in-catalog\n")  # p4, p5 have no vector
    feat = {"encoder": "precomputed", "path": str(tmp_path / "v.npy"), "ids": str(tmp_path / "ids.txt")}
    m = extract.run(extract_config({"cnn": feat}, seed=0), layout)["cnn"]
    assert m["input"] == "item_id" and m["dim"] == 8 and m["counts"]["embedded"] == 3
    got = _outcomes(layout, "cnn")
    assert got == {
        "p0": "ok",
        "p2": "ok",
        "p3": "ok",
        "p1": "reject:null or non-finite precomputed vector",
        "p4": "reject:no precomputed vector",
        "p5": "reject:no precomputed vector",
    }
    t = read_table(layout.feature("cnn")).sort_by("item_idx")
    np.testing.assert_array_equal(
        np.stack(t.column("embedding").to_numpy(zero_copy_only=False)), vecs[[0, 2, 3]]
    )
