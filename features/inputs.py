"""Turning an item row into an encoder input, or into a reason it cannot be one.

Pure functions (no Beam, no torch): text assembly, image reading and decoding with the
checks a real catalog needs, and the content hash that keys the feature cache. What was
changed on the way (text cut, first frame of an animation, alpha dropped) comes back as a
note; what cannot be used comes back as ``Rejected`` with the reason. Nothing raises.

Images are untrusted files: a path is resolved and must lie inside the image folder
(``data.images``), the read stops after ``max_bytes`` + 1 bytes, the format is told by the
signature bytes and only an allowed one is decoded (by its own Pillow plugin alone), and
no reject detail ever carries the file's bytes (size and format name only).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import re
import stat
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageFile, ImageOps

# Bump when assembly or decoding changes what an encoder sees: it is part of the cache key.
INPUT_VERSION = "in-2"
# Refuse to decode images above this many pixels (decompression bombs); params can lower it.
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_BYTES = 50_000_000
DEFAULT_MAX_CHARS = 20_000
DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BYTES_LITERAL = re.compile(r"""b(['"]).*?(?<!\\)\1""")
_CHUNK = 1 << 20
_SNIFF_BYTES = 32
_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
)


def _prefix(*sigs: bytes) -> Callable[[bytes], bool]:
    return lambda head: head.startswith(sigs)


# Signature -> format name (Pillow's, where Pillow has a reader). The allowlist is checked
# against this, so a plugin never sees a file whose format was not allowed; formats without a
# signature (TGA, raw) are never decoded at all.
_SIGNATURES: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("PNG", _prefix(b"\x89PNG\r\n\x1a\n")),
    ("JPEG", _prefix(b"\xff\xd8\xff")),
    ("GIF", _prefix(b"GIF87a", b"GIF89a")),
    ("WEBP", lambda h: h[:4] == b"RIFF" and h[8:12] == b"WEBP"),
    ("BMP", _prefix(b"BM")),
    ("TIFF", _prefix(b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")),
    ("EPS", _prefix(b"%!PS", b"\xc5\xd0\xd3\xc6")),
    ("PDF", _prefix(b"%PDF-")),
    ("PSD", _prefix(b"8BPS")),
    ("ICO", _prefix(b"\x00\x00\x01\x00")),
    ("JPEG2000", _prefix(b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xffO\xffQ")),
    ("AVIF", lambda h: h[4:8] == b"ftyp" and h[8:12] in (b"avif", b"avis")),
    ("HEIF", lambda h: h[4:8] == b"ftyp" and h[8:12] in (b"heic", b"heix", b"hevc", b"mif1", b"msf1")),
    ("QOI", _prefix(b"qoif")),
    ("DDS", _prefix(b"DDS ")),
    ("ICNS", _prefix(b"icns")),
    ("FITS", _prefix(b"SIMPLE  =")),
    ("SGI", _prefix(b"\x01\xda")),
    ("SUN", _prefix(b"\x59\xa6\x6a\x95")),
    ("PCX", lambda h: len(h) > 2 and h[0] == 0x0A and h[1] in (0, 2, 3, 4, 5) and h[2] == 1),
    ("PPM", lambda h: len(h) > 2 and h[:1] == b"P" and h[1:2] in b"1234567" and h[2:3].isspace()),
    ("XBM", _prefix(b"#define")),
    ("XPM", _prefix(b"/* XPM */")),
    ("WMF", _prefix(b"\xd7\xcd\xc6\x9a")),
    ("HDF5", _prefix(b"\x89HDF\r\n\x1a\n")),
    ("BLP", _prefix(b"BLP1", b"BLP2")),
)
_SIGNATURE_NAMES = {name for name, _ in _SIGNATURES}


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


class Probe(NamedTuple):
    """What an image's header says, read without decoding its pixels."""

    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def sniff_format(data: bytes) -> str | None:
    """The format named by the file's signature bytes (Pillow's format name), or None."""
    head = data[:_SNIFF_BYTES]
    for fmt, test in _SIGNATURES:
        if test(head):
            return fmt
    return None


def unknown_formats(formats: Sequence[str]) -> list[str]:
    """Entries of an allowlist that cannot be recognised by signature or opened by Pillow."""
    Image.init()
    return [f for f in formats if f not in _SIGNATURE_NAMES or f not in Image.OPEN]


def _looks_like(data: bytes) -> str:
    text = data[:_SNIFF_BYTES].lstrip().lower()
    for marker, name in (
        (b"<svg", "SVG"),
        (b"<?xml", "XML"),
        (b"<!doctype html", "HTML"),
        (b"<html", "HTML"),
    ):
        if text.startswith(marker):
            return name
    return "unknown"


def image_format(data: bytes, formats: Sequence[str] = DEFAULT_FORMATS) -> str | Rejected:
    """The file's format when its signature names one in ``formats``, else why not.

    Only signature bytes are looked at: no decoder runs. The detail gives the size and the
    detected format name, never the file's bytes."""
    fmt = sniff_format(data)
    allowed = [f.upper() for f in formats]
    if fmt is None:
        return Rejected(
            "not an image",
            f"no image signature recognised (detected format: {_looks_like(data)}); {len(data)} bytes",
        )
    if fmt not in allowed:
        return Rejected(
            "image format not allowed",
            f"image format {fmt} not allowed; allowed: {allowed}; {len(data)} bytes",
        )
    return fmt


def _safe(e: BaseException) -> str:
    """An exception as detail text: bytes literals (file content) blanked, length capped."""
    msg = _BYTES_LITERAL.sub("<bytes>", str(e))
    return f"{type(e).__name__}: {msg}"[:200]


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def resolve_image_path(path: str, root: str | Path | None) -> Path | Rejected:
    """The real path of ``path`` (relative paths are from the working directory, as ingest
    writes them), or a reject when it is not inside ``root``: ``..`` escapes, absolute paths
    elsewhere and symlinks whose target lies outside are refused; nothing is opened."""
    if root is None:
        return Rejected(
            "no image folder configured",
            f"{path}: data.images is null; set it to the folder image_path values point into",
        )
    root_real = Path(os.path.realpath(root))
    p = Path(path)
    full = p if p.is_absolute() else Path.cwd() / p
    real = Path(os.path.realpath(full))
    if _inside(real, root_real):
        return real
    lexical = Path(os.path.normpath(full))
    if _inside(lexical, root_real) or _inside(lexical, Path(os.path.abspath(root))):
        how = "a symlink leads outside"
    elif ".." in p.parts:
        how = "'..' leads outside"
    elif p.is_absolute():
        how = "absolute path outside"
    else:
        how = "relative path outside"
    return Rejected("image path outside data.images", f"{path}: {how} {root}")


def _read_bounded(f: Any, limit: int) -> bytes:
    """At most ``limit`` bytes of ``f``, read in chunks (however big the file says it is)."""
    chunks, left = [], limit
    while left > 0:
        chunk = f.read(min(left, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_image_bytes(
    path: str | bytes | None, *, root: str | Path | None, max_bytes: int = DEFAULT_MAX_BYTES
) -> bytes | Rejected:
    """The image file's bytes, or why they cannot be read: no path, outside ``root`` (the
    ``data.images`` folder; None rejects every path), missing, a folder or other non-file,
    empty, or over ``max_bytes``. The bound is on the read itself (at most ``max_bytes`` + 1
    bytes are read), not on what ``stat`` says."""
    if isinstance(path, bytes):
        path = path.decode("utf-8", errors="replace")
    if path is None or str(path).strip() == "":
        return Rejected("missing image path", "image_path is empty")
    path = str(path)
    real = resolve_image_path(path, root)
    if isinstance(real, Rejected):
        return real
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except FileNotFoundError:
        return Rejected("missing image file", path)
    except IsADirectoryError:
        return Rejected("image path is a folder", path)
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symlink put in place after the path was resolved
            return Rejected("image path outside data.images", f"{path}: a symlink leads outside {root}")
        return Rejected("unreadable image file", f"{path}: {_safe(e)}")
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            if stat.S_ISDIR(mode):
                return Rejected("image path is a folder", path)
            return Rejected("image path is not a regular file", f"{path}: {_file_kind(mode)}")
        with os.fdopen(fd, "rb", buffering=0) as f:
            data = _read_bounded(f, max_bytes + 1)
    except OSError as e:
        return Rejected("unreadable image file", f"{path}: {_safe(e)}")
    if not data:
        return Rejected("empty image file", path)
    if len(data) > max_bytes:
        return Rejected("image file too large", f"{path}: more than max_image_bytes {max_bytes} bytes")
    return data


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device")):
        if test(mode):
            return name
    return "not a regular file"


def _open(data: bytes, formats: Sequence[str], max_pixels: int) -> tuple[Image.Image, str] | Rejected:
    """Open (header only) with the one Pillow plugin the signature names, if it is allowed."""
    fmt = image_format(data, formats)
    if isinstance(fmt, Rejected):
        return fmt
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return Rejected("decompression bomb", _safe(e))
    except Exception as e:  # noqa: BLE001 - PIL plugins raise OSError, SyntaxError, ValueError, struct.error...
        return Rejected("corrupt or truncated image", f"{fmt} signature but unreadable header: {_safe(e)}")
    w, h = img.size
    if w * h > max_pixels:
        return Rejected("decompression bomb", f"{w}x{h} pixels > max_image_pixels {max_pixels}")
    return img, fmt


def probe_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, formats: Sequence[str] = DEFAULT_FORMATS
) -> Probe | Rejected:
    """Format and size from the header (allowlist and pixel limit checked); no pixels decoded."""
    out = _open(data, formats, max_pixels)
    if isinstance(out, Rejected):
        return out
    img, fmt = out
    return Probe(fmt, *img.size)


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, formats: Sequence[str] = DEFAULT_FORMATS
) -> Decoded | Rejected:
    """Decode to an RGB PIL image: first frame of animations, EXIF rotation applied, alpha
    composited on white, grayscale/CMYK/16-bit converted. Only a format in ``formats``,
    recognised by its signature, is decoded, by its own plugin alone. Truncated, corrupt,
    non-image, disallowed and oversized files come back as ``Rejected`` with the reason."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    out = _open(data, formats, max_pixels)
    if isinstance(out, Rejected):
        return out
    img, fmt = out
    notes = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            frames = int(getattr(img, "n_frames", 1) or 1)
            if frames > 1:
                notes.append(f"animated ({frames} frames): first frame used")
            img.seek(0)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return Rejected("decompression bomb", _safe(e))
    except MemoryError as e:
        return Rejected("decompression bomb", f"out of memory decoding: {_safe(e)}")
    except Exception as e:  # noqa: BLE001 - PIL plugins raise OSError, SyntaxError, ValueError, struct.error...
        return Rejected("corrupt or truncated image", f"{fmt} signature but undecodable content: {_safe(e)}")
    with contextlib.suppress(Exception):  # a broken EXIF block is ignored, the pixels are fine
        img = ImageOps.exif_transpose(img) or img
    try:
        rgb, note = to_rgb(img)
    except Exception as e:  # noqa: BLE001 - exotic modes PIL cannot convert
        return Rejected("unsupported image mode", f"mode {img.mode}: {_safe(e)}")
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
