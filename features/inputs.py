"""Turning an item row into an encoder input, or into a reason it cannot be one.

Pure functions (no Beam, no torch): text assembly, image reading and decoding with the
checks a real catalog needs, and the content hash that keys the feature cache. What was
changed on the way (text cut, first frame of an animation, alpha dropped) comes back as a
note; what cannot be used comes back as ``Rejected`` with the reason. Nothing raises.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Bump when assembly or decoding changes what an encoder sees: it is part of the cache key.
INPUT_VERSION = "in-2"
# Refuse to decode images above this many pixels (decompression bombs); params can lower it.
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_BYTES = 50_000_000
DEFAULT_MAX_CHARS = 20_000
# Signatures of common image formats: such a file that PIL cannot identify is corrupt, not "not an image".
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Rejected:
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Decoded:
    """An RGB image ready for an encoder, with a note when decoding had to change it."""

    image: Image.Image
    note: str | None = None


def content_hash(modality: str, payload: bytes) -> str:
    """sha256 over the modality tag and the exact input bytes the encoder sees."""
    h = hashlib.sha256(modality.encode())
    h.update(b"\0")
    h.update(payload)
    return h.hexdigest()


def _field_text(value: Any, field: str) -> str | Rejected:
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            return Rejected("invalid utf-8 text", f"field {field}: {e}")
    value = str(value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return Rejected("invalid utf-8 text", f"field {field}: lone surrogate code point ({e.reason})")
    return " ".join(_CONTROL.sub("", value).split())


def prepare_text(
    row: dict[str, Any], fields: list[str], *, separator: str = ". ", max_chars: int = DEFAULT_MAX_CHARS
) -> tuple[str, str | None] | Rejected:
    """(text, note) from the non-empty text fields, whitespace collapsed, cut at ``max_chars``.

    Rejects invalid UTF-8 (bytes or lone surrogates) and text that is empty or whitespace only.
    """
    parts = []
    for f in fields:
        v = row.get(f)
        if v is None:
            continue
        v = _field_text(v, f)
        if isinstance(v, Rejected):
            return v
        if v:
            parts.append(v)
    if not parts:
        return Rejected("empty text", f"fields {fields} are empty or whitespace only")
    text = separator.join(parts)
    if max_chars and len(text) > max_chars:
        return text[:max_chars], f"text of {len(text)} characters cut to max_text_chars {max_chars}"
    return text, None


def item_text(row: dict[str, Any], fields: list[str], separator: str = ". ") -> str | Rejected:
    """The joined text fields (no length cap), or why there is none."""
    out = prepare_text(row, fields, separator=separator, max_chars=0)
    return out if isinstance(out, Rejected) else out[0]


def read_image_bytes(path: str | bytes | None, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes | Rejected:
    """The image file's bytes, or why they cannot be read (missing, a folder, empty, too big)."""
    if isinstance(path, bytes):
        path = path.decode("utf-8", errors="replace")
    if path is None or str(path).strip() == "":
        return Rejected("missing image path", "image_path is empty")
    p = Path(path)
    try:
        if p.is_dir():
            return Rejected("image path is a folder", str(path))
        if not p.is_file():
            return Rejected("missing image file", str(path))
        size = p.stat().st_size
        if size == 0:
            return Rejected("empty image file", str(path))
        if max_bytes and size > max_bytes:
            return Rejected("image file too large", f"{path}: {size} bytes > max_image_bytes {max_bytes}")
        return p.read_bytes()
    except OSError as e:
        return Rejected("unreadable image file", f"{path}: {e}")


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded | Rejected:
    """Decode to an RGB PIL image: first frame of animations, EXIF rotation applied, alpha
    composited on white, grayscale/CMYK/16-bit converted. Truncated, corrupt, non-image
    and oversized files come back as ``Rejected`` with the reason."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    notes = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                return Rejected("decompression bomb", f"{w}x{h} pixels > max_image_pixels {max_pixels}")
            frames = int(getattr(img, "n_frames", 1) or 1)
            if frames > 1:
                notes.append(f"animated ({frames} frames): first frame used")
            img.seek(0)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return Rejected("decompression bomb", str(e))
    except UnidentifiedImageError:
        if data.startswith(_IMAGE_MAGIC):
            return Rejected(
                "corrupt or truncated image", f"image signature {data[:4]!r} but undecodable content"
            )
        return Rejected("not an image", f"no image format recognised; first bytes {data[:16]!r}")
    except MemoryError as e:
        return Rejected("decompression bomb", f"out of memory decoding: {e}")
    except Exception as e:  # noqa: BLE001 - PIL plugins raise OSError, SyntaxError, ValueError, struct.error...
        return Rejected("corrupt or truncated image", f"{type(e).__name__}: {e}")
    with contextlib.suppress(Exception):  # a broken EXIF block is ignored, the pixels are fine
        img = ImageOps.exif_transpose(img) or img
    try:
        rgb, note = to_rgb(img)
    except Exception as e:  # noqa: BLE001 - exotic modes PIL cannot convert
        return Rejected("unsupported image mode", f"mode {img.mode}: {e}")
    if note:
        notes.append(note)
    return Decoded(rgb, "; ".join(notes) or None)


def to_rgb(img: Image.Image) -> tuple[Image.Image, str | None]:
    """(RGB image, note) for any PIL mode; the note says when pixels were changed, not just recoded."""
    mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg, f"{mode} with alpha composited on white"
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            scale = 65535.0
        else:
            finite = arr[np.isfinite(arr)]
            hi = float(finite.max()) if finite.size else 0.0
            scale = 1.0 if mode == "F" and hi <= 1.0 else max(hi, 255.0)
        arr = np.nan_to_num(np.clip(arr / scale, 0.0, 1.0))
        gray = Image.fromarray((arr * 255).round().astype("uint8"))
        return gray.convert("RGB"), f"{mode} pixels scaled to 8 bits"
    if mode == "CMYK":
        return img.convert("RGB"), "CMYK converted to RGB"
    return (img.convert("RGB") if mode != "RGB" else img), None
