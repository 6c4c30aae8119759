"""Turning an item row into an encoder input, or into a reason it cannot be one.

Pure functions (no Beam, no torch): text assembly, image decoding with the checks a
real catalog needs, and the content hash that keys the feature cache.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile, UnidentifiedImageError

# Refuse to decode images above this many pixels (decompression bombs); params can lower it.
DEFAULT_MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class Rejected:
    reason: str
    detail: str = ""


def content_hash(modality: str, payload: bytes) -> str:
    """sha256 over the modality tag and the exact input bytes the encoder sees."""
    h = hashlib.sha256(modality.encode())
    h.update(b"\0")
    h.update(payload)
    return h.hexdigest()


def item_text(row: dict[str, Any], fields: list[str], separator: str = ". ") -> str | Rejected:
    """Join the non-empty text fields; reject when nothing but whitespace remains."""
    parts = []
    for f in fields:
        v = row.get(f)
        if v is None:
            continue
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError as e:
                return Rejected("invalid utf-8 text", f"field {f}: {e}")
        v = str(v)
        if any(0xD800 <= ord(c) <= 0xDFFF for c in v):
            return Rejected("invalid utf-8 text", f"field {f}: lone surrogate code point")
        v = " ".join(v.split())
        if v:
            parts.append(v)
    if not parts:
        return Rejected("empty text", f"fields {fields} are empty or whitespace only")
    return separator.join(parts)


def read_image_bytes(path: str | None) -> bytes | Rejected:
    if path is None or str(path).strip() == "":
        return Rejected("missing image path", "image_path is empty")
    p = Path(path)
    if not p.is_file():
        return Rejected("missing image file", str(path))
    return p.read_bytes()


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image | Rejected:
    """Decode to an RGB PIL image: first frame of animations, alpha composited on white,
    grayscale/CMYK/16-bit converted. Truncated, corrupt, non-image and oversized files
    come back as ``Rejected`` with the reason."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                return Rejected("decompression bomb", f"{w}x{h} pixels > max_pixels {max_pixels}")
            img.seek(0)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return Rejected("decompression bomb", str(e))
    except UnidentifiedImageError as e:
        return Rejected("not an image", str(e))
    except (OSError, SyntaxError, ValueError) as e:
        return Rejected("corrupt or truncated image", str(e))
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping everything to white.
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() or 1.0
        img = Image.fromarray((arr / hi * 255).astype("uint8"), mode="L")
    return img.convert("RGB") if img.mode != "RGB" else img
