"""Item rows -> encoder inputs: every awkward text and image is handled or rejected, never raised."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from extract_helpers import bad_images, leaked_bytes, outside_folder
from PIL import EpsImagePlugin, Image

from features import inputs
from features.inputs import (
    DEFAULT_FORMATS,
    Decoded,
    Rejected,
    content_hash,
    decode_image,
    image_format,
    item_text,
    prepare_text,
    probe_image,
    read_image_bytes,
    sniff_format,
    unknown_formats,
)


def _result(path: str | None, root: Path | None, max_bytes: int = 200_000) -> Decoded | Rejected:
    data = read_image_bytes(path, root=root, max_bytes=max_bytes)
    return data if isinstance(data, Rejected) else decode_image(data, max_pixels=1_000_000)


def _outcome(path: str | None, root: Path | None, max_bytes: int = 200_000) -> str:
    out = _result(path, root, max_bytes)
    if isinstance(out, Rejected):
        return f"reject:{out.reason}"
    assert isinstance(out, Decoded) and out.image.mode == "RGB" and min(out.image.size) > 0
    return f"note:{out.note}" if out.note else "ok"


def test_every_kind_of_bad_image_has_its_outcome(tmp_path) -> None:
    root = tmp_path / "images"
    corpus = bad_images(root, max_bytes=200_000)
    assert len(corpus) >= 35
    for name, (path, expect) in corpus.items():
        got = _outcome(path, root)
        kind, _, text = expect.partition(":")
        assert got.startswith(kind) and text in got, f"{name}: expected {expect}, got {got}"


def test_no_reject_detail_carries_the_files_bytes(tmp_path) -> None:
    root = tmp_path / "images"
    for name, (path, _) in bad_images(root, max_bytes=200_000).items():
        out = _result(path, root)
        if isinstance(out, Rejected) and path and Path(path).is_file():
            data = Path(path).read_bytes()
            assert leaked_bytes(out.detail, data) is None, f"{name}: {out.detail!r}"
    text = b"secret text, not a picture: hunter2 hunter2 hunter2\n"
    out = image_format(text)
    assert out == Rejected(
        "not an image", f"no image signature recognised (detected format: unknown); {len(text)} bytes"
    )


def test_paths_are_confined_to_the_image_folder_with_the_reason(tmp_path, monkeypatch) -> None:
    root = tmp_path / "images"
    corpus = bad_images(root, max_bytes=200_000)
    secret = outside_folder(root) / "secret.png"
    assert decode_image(secret.read_bytes()).image.size == (24, 24)  # a fine image, if it were read
    details = {name: _result(corpus[name][0], root).detail for name in ("dotdot_escape", "symlink_escape")}
    assert "'..' leads outside" in details["dotdot_escape"] and str(root) in details["dotdot_escape"]
    assert "a symlink leads outside" in details["symlink_escape"]
    assert "absolute path outside" in _result(str(secret), root).detail
    opened = []
    real_open = os.open
    monkeypatch.setattr(inputs.os, "open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k))
    for name in ("dotdot_escape", "absolute_outside", "symlink_escape", "absolute_system_file"):
        assert _outcome(corpus[name][0], root) == "reject:image path outside data.images", name
    assert opened == [], "a path outside the image folder was opened"
    # relative paths are from the working directory, as ingest writes them
    monkeypatch.chdir(tmp_path)
    assert _outcome("images/plain.png", root) == "ok"
    assert _outcome("images/../images-outside/secret.png", root) == "reject:image path outside data.images"
    # no image folder configured: every path is rejected, none is opened
    opened.clear()
    out = read_image_bytes(str(root / "plain.png"), root=None)
    assert out.reason == "no image folder configured" and "data.images is null" in out.detail
    assert opened == []


def test_a_fifo_in_the_image_folder_is_rejected_without_blocking(tmp_path) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    out = read_image_bytes(str(tmp_path / "pipe.png"), root=tmp_path)
    assert out == Rejected("image path is not a regular file", f"{tmp_path / 'pipe.png'}: a FIFO")


def test_the_byte_limit_bounds_the_read_itself(tmp_path, monkeypatch) -> None:
    class Endless:
        """A file that never ends (/dev/zero, a file still being written)."""

        served = 0

        def read(self, n: int) -> bytes:
            self.served += n
            return b"\0" * n

    f = Endless()
    assert len(inputs._read_bounded(f, 1001)) == 1001 and f.served == 1001
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 5000)
    real_fstat = os.fstat

    def lying_fstat(fd):  # stat says 10 bytes: the read must not trust it
        st = real_fstat(fd)
        return os.stat_result((st.st_mode, *st[1:6], 10, *st[7:]))

    monkeypatch.setattr(inputs.os, "fstat", lying_fstat)
    out = read_image_bytes(str(big), root=tmp_path, max_bytes=1000)
    assert out == Rejected("image file too large", f"{big}: more than max_image_bytes 1000 bytes")
    assert read_image_bytes(str(big), root=tmp_path, max_bytes=5008) == big.read_bytes()


def test_formats_are_told_by_signature_and_only_allowed_plugins_run(tmp_path, monkeypatch) -> None:
    import io

    def enc(fmt: str) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), "red").save(buf, format=fmt)
        return buf.getvalue()

    for fmt in (*DEFAULT_FORMATS, "EPS", "PPM", "ICO", "QOI", "SGI", "DDS"):
        assert sniff_format(enc(fmt)) == fmt
    assert sniff_format(enc("TGA")) is None and sniff_format(b"%PDF-1.7\n") == "PDF"
    calls = []
    real_open = Image.open
    monkeypatch.setattr(
        Image,
        "open",
        lambda fp, mode="r", formats=None: calls.append(formats) or real_open(fp, mode, formats),
    )

    def never(*a, **k):
        raise AssertionError("the EPS plugin ran")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", never)
    eps = enc("EPS")
    out = decode_image(eps)
    assert out == Rejected(
        "image format not allowed",
        f"image format EPS not allowed; allowed: {list(DEFAULT_FORMATS)}; {len(eps)} bytes",
    )
    assert calls == []
    assert isinstance(decode_image(enc("PNG")), Decoded) and calls == [["PNG"]]
    assert decode_image(enc("PNG"), formats=["JPEG"]).reason == "image format not allowed"
    assert probe_image(enc("GIF")) == ("GIF", 8, 8) and probe_image(enc("GIF")).pixels == 64
    assert unknown_formats(["PNG", "PDF", "TGA", "HEIF"]) == ["PDF", "TGA", "HEIF"]


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
