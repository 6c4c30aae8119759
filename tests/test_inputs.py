"""Item rows -> encoder inputs: every awkward text and image is handled or rejected, never raised."""

from __future__ import annotations

import numpy as np
import pytest
from extract_helpers import bad_images
from PIL import Image

from features.inputs import (
    Decoded,
    Rejected,
    content_hash,
    decode_image,
    item_text,
    prepare_text,
    read_image_bytes,
)


def _outcome(path: str | None, max_bytes: int = 200_000) -> str:
    data = read_image_bytes(path, max_bytes=max_bytes)
    out = data if isinstance(data, Rejected) else decode_image(data, max_pixels=1_000_000)
    if isinstance(out, Rejected):
        return f"reject:{out.reason}"
    assert isinstance(out, Decoded) and out.image.mode == "RGB" and min(out.image.size) > 0
    return f"note:{out.note}" if out.note else "ok"


def test_every_kind_of_bad_image_has_its_outcome(tmp_path) -> None:
    corpus = bad_images(tmp_path, max_bytes=200_000)
    assert len(corpus) >= 20
    for name, (path, expect) in corpus.items():
        got = _outcome(path)
        kind, _, text = expect.partition(":")
        assert got.startswith(kind) and text in got, f"{name}: expected {expect}, got {got}"


def test_sixteen_bit_images_keep_their_contrast() -> None:
    import io

    arr = np.zeros((8, 8), dtype=np.uint16)
    arr[:, 4:] = 65535
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    img = decode_image(buf.getvalue()).image
    px = np.asarray(img)
    assert px[0, 0].tolist() == [0, 0, 0] and px[0, 7].tolist() == [255, 255, 255]


def test_exif_rotation_is_applied(tmp_path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (30, 20), "white").save(tmp_path / "r.jpg", exif=exif)
    assert decode_image((tmp_path / "r.jpg").read_bytes()).image.size == (20, 30)


@pytest.mark.parametrize(
    ("row", "expect"),
    [
        ({"title": None, "description": None}, "empty text"),
        ({"title": "", "description": "   \t\n "}, "empty text"),
        ({"title": b"caf\xe9 latte", "description": "ok"}, "invalid utf-8 text"),
        ({"title": "lone \ud800 surrogate", "description": None}, "invalid utf-8 text"),
    ],
)
def test_unusable_text_is_rejected_with_its_reason(row, expect) -> None:
    out = prepare_text(row, ["title", "description"])
    assert isinstance(out, Rejected) and out.reason == expect


def test_text_is_cleaned_joined_and_cut_with_a_note() -> None:
    row = {"title": "  Red\x00 shoe \x07", "description": "  Size\n\n 42 ", "category": "x"}
    assert prepare_text(row, ["title", "description"]) == ("Red shoe. Size 42", None)
    assert item_text({"title": b"b\xc3\xa9", "description": None}, ["title", "description"]) == "bé"
    text, note = prepare_text({"title": "word " * 1000}, ["title"], max_chars=100)
    assert len(text) == 100 and note == "text of 4999 characters cut to max_text_chars 100"


def test_content_hash_depends_on_modality_and_exact_bytes() -> None:
    assert content_hash("text", b"a") != content_hash("image", b"a") != content_hash("text", b"a ")
    assert content_hash("text", b"a") == content_hash("text", b"a")
