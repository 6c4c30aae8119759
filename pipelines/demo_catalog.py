"""Deterministic demo catalog for multimodal recommendation.

Newcomers (and `dvc repro`) need a realistic, small dataset that works offline. This module
synthesises one: items with text and rendered PNG images whose colour/shape/pattern are visible,
users with sparse tastes over those attributes, and interactions sampled from those tastes with
a long-tail popularity prior. Because taste is defined on content, multimodal models can beat
ID-only models, especially on tail items.

Everything is driven by `np.random.default_rng` streams derived from the spec seed, so the same
spec always yields byte-identical files.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw
from tqdm import tqdm

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

CATEGORIES: tuple[str, ...] = (
    "mug",
    "t-shirt",
    "poster",
    "cushion",
    "lamp",
    "notebook",
    "tote bag",
    "cap",
    "vase",
    "sticker",
)
# Light background per category so the category is (weakly) visible in the image too.
CATEGORY_BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "mug": (246, 240, 228),
    "t-shirt": (228, 238, 250),
    "poster": (250, 232, 232),
    "cushion": (232, 248, 232),
    "lamp": (250, 250, 220),
    "notebook": (238, 232, 250),
    "tote bag": (222, 246, 246),
    "cap": (248, 228, 244),
    "vase": (236, 236, 236),
    "sticker": (252, 242, 218),
}
CATEGORY_MATERIALS: dict[str, tuple[str, ...]] = {
    "mug": ("ceramic", "porcelain", "stoneware", "enamel"),
    "t-shirt": ("cotton", "organic cotton", "jersey", "linen-blend"),
    "poster": ("matte paper", "glossy paper", "recycled paper", "canvas"),
    "cushion": ("velvet", "cotton", "linen", "wool-blend"),
    "lamp": ("metal", "glass", "bamboo", "ceramic"),
    "notebook": ("recycled paper", "leatherette", "kraft card", "linen-bound"),
    "tote bag": ("canvas", "cotton", "jute", "recycled polyester"),
    "cap": ("cotton twill", "denim", "wool", "mesh"),
    "vase": ("glass", "ceramic", "terracotta", "porcelain"),
    "sticker": ("vinyl", "matte vinyl", "holographic vinyl", "paper"),
}
CATEGORY_BASE_PRICE: dict[str, float] = {
    "mug": 14.0,
    "t-shirt": 22.0,
    "poster": 18.0,
    "cushion": 29.0,
    "lamp": 49.0,
    "notebook": 12.0,
    "tote bag": 16.0,
    "cap": 19.0,
    "vase": 35.0,
    "sticker": 4.0,
}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 200, 30),
    "green": (50, 160, 60),
    "teal": (0, 150, 150),
    "blue": (40, 80, 210),
    "purple": (130, 60, 180),
    "pink": (240, 110, 170),
    "brown": (130, 80, 40),
    "black": (35, 35, 35),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "diamond",
    "hexagon",
    "heart",
    "cross",
)
PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted", "checked", "gradient")

# Varied wordings so text models must generalise a little, not just match a token.
PATTERN_PHRASES: dict[str, tuple[str, ...]] = {
    "solid": ("in a solid fill", "in one plain colour", "with a clean solid finish"),
    "striped": ("with stripes", "in a striped print", "with bold stripes"),
    "dotted": ("with polka dots", "in a dotted print", "covered in little dots"),
    "checked": ("in a checked print", "with a checkerboard pattern", "with checks"),
    "gradient": ("with a soft gradient", "in a fading gradient", "with an ombre gradient"),
}
SHAPE_PHRASES: dict[str, tuple[str, ...]] = {s: (f"{s}", f"{s} motif", f"{s}-shaped graphic") for s in SHAPES}
SIZES: tuple[str, ...] = ("small", "medium", "large", "compact", "oversized", "mini")
NOISE_WORDS: tuple[str, ...] = ("new", "classic", "everyday", "premium", "handmade", "modern")
NOISE_SENTENCES: tuple[str, ...] = (
    "Ships in 2-3 days.",
    "A great gift idea.",
    "Limited run.",
    "Customer favourite this season.",
    "Easy care, built to last.",
    "Designed in our studio.",
    "Part of the spring collection.",
    "Pairs well with the rest of the range.",
)
LEAD_TEMPLATES: tuple[str, ...] = (
    "A {size} {noise} {material} {category} with a {colour} {shape} {pattern}.",
    "This {noise} {category} features a {colour} {shape} {pattern}, made from {material}.",
    "{Size} {material} {category} decorated with a {shape} in {colour}, {pattern}.",
    "{Colour} {shape} on a {size} {material} {category}, {pattern}.",
)
DETAIL_TEMPLATES: tuple[str, ...] = (
    "The {colour} tone stands out on a light background.",
    "Look for the {shape} front and centre.",
    "The {pattern_word} look is the highlight.",
    "Colour: {colour}. Shape: {shape}.",
)

# Interaction model: p(i|u) ∝ (1-EXPLORE) * softmax(BETA*aff + GAMMA*log_pop) + EXPLORE/n_items.
BETA = 3.5  # taste strength: large enough that a user's picks concentrate on their tastes
GAMMA = 1.0  # popularity strength
ZIPF_EXPONENT = 1.0  # popularity(rank) ∝ rank^-ZIPF_EXPONENT: long tail of rarely seen items
EXPLORE = 0.18  # share of picks that ignore taste and popularity (keeps every item reachable)

DAY = 86_400
SPAN_DAYS = 180
_STREAMS = {"items": 1, "text": 2, "images": 3, "users": 4, "interactions": 5}


@dataclass(frozen=True, kw_only=True)
class DemoSpec:
    """Size and seed of the demo catalog; all outputs are a pure function of this."""

    n_items: int = 2000
    n_users: int = 2000
    n_interactions: int = 50000  # target total, approximately (±5%)
    image_size: int = 64  # square PNG side in px
    seed: int = 42
    start_timestamp: int = 1_700_000_000  # unix seconds; interactions span ~180 days after it


# --------------------------------------------------------------------------------------------
# Sampling helpers
# --------------------------------------------------------------------------------------------


def _rng(seed: int, stream: str) -> np.random.Generator:
    """Independent stream per component, so e.g. changing n_users does not change the items."""
    return np.random.default_rng([seed, _STREAMS[stream]])


def _ids(prefix: str, n: int) -> list[str]:
    """Zero-padded ids so string order equals numeric order."""
    width = max(5, len(str(n)))
    return [f"{prefix}_{i + 1:0{width}d}" for i in range(n)]


def _sample_items(spec: DemoSpec) -> dict[str, np.ndarray]:
    """Item attributes (as indices), popularity prior, price and rendering jitter."""
    rng = _rng(spec.seed, "items")
    n = spec.n_items
    attrs = {
        "category": rng.integers(len(CATEGORIES), size=n),
        "colour": rng.integers(len(COLOURS), size=n),
        "shape": rng.integers(len(SHAPES), size=n),
        "pattern": rng.integers(len(PATTERNS), size=n),
    }
    # Zipf-like exposure over a random permutation of items: long tail, where content helps.
    ranks = rng.permutation(n) + 1
    attrs["log_pop"] = -ZIPF_EXPONENT * np.log(ranks.astype(np.float64))
    base = np.array([CATEGORY_BASE_PRICE[c] for c in CATEGORIES])[attrs["category"]]
    premium = np.where(attrs["pattern"] == 0, 1.0, 1.1)
    attrs["price"] = np.round(base * premium * rng.lognormal(0.0, 0.25, size=n), 2)
    # Jitter: centre offset (fraction of side), radius scale, rotation (degrees), pattern phase.
    attrs["jitter"] = np.column_stack(
        [
            rng.uniform(-0.06, 0.06, size=(n, 2)),
            rng.uniform(0.9, 1.1, size=(n, 1)),
            rng.uniform(-12.0, 12.0, size=(n, 1)),
            rng.uniform(0.0, 1.0, size=(n, 1)),
        ]
    )
    return attrs


def _sample_user_tastes(spec: DemoSpec) -> dict[str, np.ndarray]:
    """Sparse per-user weights over colour/shape/pattern/category (dense arrays, mostly zero)."""
    rng = _rng(spec.seed, "users")
    n = spec.n_users
    tastes = {
        "colour": _sparse_weights(rng, n, len(COLOURS), p_second=0.4, scale=1.0),
        "shape": _sparse_weights(rng, n, len(SHAPES), p_second=0.4, scale=0.9),
        "pattern": _sparse_weights(rng, n, len(PATTERNS), p_second=0.0, scale=0.6),
        "category": _sparse_weights(rng, n, len(CATEGORIES), p_second=0.3, scale=0.8),
    }
    # Not everyone cares about pattern or category.
    tastes["pattern"] *= (rng.random(n) < 0.5)[:, None]
    tastes["category"] *= (rng.random(n) < 0.7)[:, None]
    return tastes


def _sparse_weights(
    rng: np.random.Generator, n_users: int, n_values: int, *, p_second: float, scale: float
) -> np.ndarray:
    """One favourite value per user (weight ~scale), sometimes a second at ~0.7*scale."""
    weights = np.zeros((n_users, n_values))
    rows = np.arange(n_users)
    order = np.argsort(rng.random((n_users, n_values)), axis=1)
    weights[rows, order[:, 0]] = scale * rng.uniform(0.85, 1.15, size=n_users)
    has_second = rng.random(n_users) < p_second
    second = scale * rng.uniform(0.55, 0.85, size=n_users) * has_second
    if n_values > 1:
        weights[rows, order[:, 1]] = second
    return weights


def _interaction_counts(spec: DemoSpec, rng: np.random.Generator) -> np.ndarray:
    """Lognormal counts per user, clipped, with a scale solved so the total hits the target."""
    n_users, n_items = spec.n_users, spec.n_items
    mean = spec.n_interactions / max(n_users, 1)
    lo = min(5, n_items)
    hi = max(lo, min(n_items, max(150, math.ceil(3 * mean))))
    raw = rng.lognormal(0.0, 0.9, size=n_users)
    raw /= raw.mean()

    def total(scale: float) -> int:
        return int(np.clip(np.rint(raw * scale), lo, hi).sum())

    left, right = 0.0, max(mean, 1.0) * 4.0
    while total(right) < spec.n_interactions and right < 1e9:
        right *= 2.0
    for _ in range(60):  # bisection: deterministic and plenty precise
        mid = 0.5 * (left + right)
        left, right = (mid, right) if total(mid) < spec.n_interactions else (left, mid)
    return np.clip(np.rint(raw * right), lo, hi).astype(np.int64)


def _affinity(tastes: dict[str, np.ndarray], users: slice, items: dict[str, np.ndarray]) -> np.ndarray:
    """Affinity matrix (chunk x n_items): sum of the user's weights on the item's attributes."""
    aff = tastes["colour"][users][:, items["colour"]]
    aff += tastes["shape"][users][:, items["shape"]]
    aff += tastes["pattern"][users][:, items["pattern"]]
    aff += tastes["category"][users][:, items["category"]]
    return aff


def _sample_interactions(spec: DemoSpec, items: dict[str, np.ndarray], *, progress: bool) -> pl.DataFrame:
    """Per-user Plackett-Luce draws (Gumbel top-k) from taste x popularity, plus exploration.

    p(i | u) ∝ (1 - eps) * softmax(beta * aff(u, i) + gamma * log_pop(i)) + eps / n_items;
    users are processed in chunks so memory stays at chunk x n_items.
    """
    beta, gamma, eps = BETA, GAMMA, EXPLORE
    rng = _rng(spec.seed, "interactions")
    tastes = _sample_user_tastes(spec)
    counts = _interaction_counts(spec, rng)
    n_users, n_items = spec.n_users, spec.n_items
    chunk = max(1, min(n_users, 262_144 // max(n_items, 1)))
    users_out, items_out, aff_out = [], [], []
    starts = range(0, n_users, chunk)
    for start in tqdm(starts, desc="interactions", unit="chunk", disable=not progress):
        rows = slice(start, min(start + chunk, n_users))
        aff = _affinity(tastes, rows, items)
        logits = beta * aff + gamma * items["log_pop"][None, :]
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        keys = np.log((1.0 - eps) * probs + eps / n_items) + rng.gumbel(size=probs.shape)
        k = counts[rows]
        kmax = int(k.max())
        top = np.argpartition(-keys, kmax - 1, axis=1)[:, :kmax]
        top_keys = np.take_along_axis(keys, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_keys, axis=1, kind="stable"), axis=1)
        keep = np.arange(kmax)[None, :] < k[:, None]
        user_idx = np.broadcast_to(np.arange(rows.start, rows.stop)[:, None], top.shape)
        users_out.append(user_idx[keep])
        items_out.append(top[keep])
        aff_out.append(np.take_along_axis(aff, top, axis=1)[keep])
    user_idx = np.concatenate(users_out)
    item_idx = np.concatenate(items_out)
    timestamps = _timestamps(spec, rng, counts)
    ratings = _ratings(rng, np.concatenate(aff_out))
    order = np.lexsort((item_idx, user_idx, timestamps))
    user_ids, item_ids = _ids("user", n_users), _ids("item", n_items)
    return pl.DataFrame(
        {
            "user_id": [user_ids[i] for i in user_idx[order]],
            "item_id": [item_ids[i] for i in item_idx[order]],
            "timestamp": timestamps[order],
            "rating": ratings[order],
        },
        schema={"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64, "rating": pl.Int64},
    )


def _timestamps(spec: DemoSpec, rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    """Each user is active for a sub-window of the ~180-day span; events uniform within it."""
    span = SPAN_DAYS * DAY
    duration = np.maximum(3 * DAY, (span * rng.beta(1.2, 2.0, size=len(counts)))).astype(np.int64)
    offset = (rng.random(len(counts)) * (span - duration)).astype(np.int64)
    per_event_start = np.repeat(spec.start_timestamp + offset, counts)
    per_event_len = np.repeat(duration, counts)
    return per_event_start + (rng.random(int(counts.sum())) * per_event_len).astype(np.int64)


def _ratings(rng: np.random.Generator, aff: np.ndarray) -> np.ndarray:
    """Ratings rise with affinity, so explicit feedback carries the same content signal."""
    z = aff + rng.normal(0.0, 0.6, size=aff.shape)
    return np.clip(np.rint(2.4 + 1.0 * z), 1, 5).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def _item_texts(spec: DemoSpec, items: dict[str, np.ndarray]) -> tuple[list[str], list[str]]:
    """Titles name the visible attributes; descriptions restate them in varied words + noise."""
    rng = _rng(spec.seed, "text")
    n = spec.n_items
    u = rng.random((n, 9))
    n_sentences = rng.integers(1, 4, size=n)
    titles, descriptions = [], []
    for i in range(n):
        category = CATEGORIES[items["category"][i]]
        colour = COLOUR_NAMES[items["colour"][i]]
        shape = SHAPES[items["shape"][i]]
        pattern = PATTERNS[items["pattern"][i]]
        titles.append(f"{colour.capitalize()} {pattern} {shape} {category}")
        size = _pick(SIZES, u[i, 0])
        words = {
            "size": size,
            "Size": size.capitalize(),
            "noise": _pick(NOISE_WORDS, u[i, 1]),
            "material": _pick(CATEGORY_MATERIALS[category], u[i, 2]),
            "category": category,
            "colour": colour,
            "Colour": colour.capitalize(),
            "shape": _pick(SHAPE_PHRASES[shape], u[i, 3]),
            "pattern": _pick(PATTERN_PHRASES[pattern], u[i, 4]),
            "pattern_word": pattern,
        }
        sentences = [_pick(LEAD_TEMPLATES, u[i, 5]).format(**words)]
        if n_sentences[i] >= 2:
            sentences.append(_pick(DETAIL_TEMPLATES, u[i, 6]).format(**{**words, "shape": shape}))
        if n_sentences[i] >= 3:
            sentences.append(_pick(NOISE_SENTENCES, u[i, 7]))
        descriptions.append(_fix_articles(" ".join(sentences)))
    return titles, descriptions


def _fix_articles(text: str) -> str:
    """Templates say 'a' everywhere; turn it into 'an' before vowels so the text reads natural."""
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)


def _pick(options: tuple[str, ...], u: float) -> str:
    """Map a pre-drawn uniform to an option, so text randomness is drawn in one vectorised go."""
    return options[min(int(u * len(options)), len(options) - 1)]


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def _shape_polygon(shape: str) -> np.ndarray:
    """Unit-radius outline (x, y) centred at 0, y pointing down, as an (n, 2) array."""

    def ring(n: int, phase: float, radii: np.ndarray | float = 1.0) -> np.ndarray:
        t = np.deg2rad(phase) + 2 * np.pi * np.arange(n) / n
        return np.column_stack([np.cos(t), np.sin(t)]) * np.asarray(radii).reshape(-1, 1)

    if shape == "circle":
        return ring(48, 0.0)
    if shape == "square":
        return ring(4, 45.0) * 1.05
    if shape == "triangle":
        return ring(3, -90.0) + np.array([0.0, 0.15])
    if shape == "star":
        return ring(10, -90.0, np.tile([1.0, 0.45], 5))
    if shape == "diamond":
        return ring(4, -90.0) * np.array([0.72, 1.0])
    if shape == "hexagon":
        return ring(6, 0.0)
    if shape == "cross":
        a = 0.32
        pts = [
            (-a, -1),
            (a, -1),
            (a, -a),
            (1, -a),
            (1, a),
            (a, a),
            (a, 1),
            (-a, 1),
            (-a, a),
            (-1, a),
            (-1, -a),
            (-a, -a),
        ]
        return np.array(pts, dtype=np.float64) * 0.95
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = np.column_stack([x, y + 2.5])
        return pts / np.abs(pts).max()
    raise ValueError(f"unknown shape {shape!r}")


_POLYGONS: dict[str, np.ndarray] = {s: _shape_polygon(s) for s in SHAPES}


def _contrast(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Darker tone for light colours, lighter tone for dark ones: pattern stays visible."""
    c = np.asarray(rgb, dtype=np.float64)
    lum = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
    tone = c * 0.5 if lum > 140 else c + (255.0 - c) * 0.6
    return tuple(int(v) for v in np.rint(tone))


def _pattern_fill(pattern: str, size: int, base: tuple, tone: tuple, phase: float) -> Image.Image:
    """Full-canvas texture in the item colour; it gets clipped to the shape by a mask."""
    if pattern == "gradient":
        ramp = np.linspace(0.0, 1.0, size)[:, None, None]
        arr = np.asarray(base, float) * (1 - ramp) + np.asarray(tone, float) * ramp
        return Image.fromarray(np.broadcast_to(np.rint(arr), (size, size, 3)).astype(np.uint8))
    img = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(img)
    period = max(4, size // 6)
    shift = int(phase * period)
    if pattern == "striped":
        for y in range(-period + shift, size, period):
            draw.rectangle((0, y, size, y + period // 2 - 1), fill=tone)
    elif pattern == "dotted":
        r = max(1, period // 4)
        for cy in range(shift - period, size + period, period):
            for cx in range(shift - period, size + period, period):
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tone)
    elif pattern == "checked":
        for row, y in enumerate(range(shift - period, size, period)):
            for col, x in enumerate(range(shift - period, size, period)):
                if (row + col) % 2:
                    draw.rectangle((x, y, x + period - 1, y + period - 1), fill=tone)
    return img


def render_item_image(
    *, category: str, colour: str, shape: str, pattern: str, size: int, jitter: np.ndarray
) -> Image.Image:
    """Render one item: category background, coloured patterned shape, small per-item jitter.

    Drawn at 2x and box-downsampled for anti-aliasing; pure function of its inputs.
    """
    canvas = size * 2
    bg = Image.new("RGB", (canvas, canvas), CATEGORY_BACKGROUNDS[category])
    base = COLOURS[colour]
    fill = _pattern_fill(pattern, canvas, base, _contrast(base), float(jitter[4]))
    theta = np.deg2rad(jitter[3])
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    radius = 0.38 * canvas * jitter[2]
    centre = canvas / 2 + jitter[:2] * canvas
    pts = _POLYGONS[shape] @ rot.T * radius + centre
    mask = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(mask).polygon([(float(x), float(y)) for x, y in pts], fill=255)
    bg.paste(fill, (0, 0), mask)
    return bg.reduce(2)


def _write_images(
    out_dir: Path,
    spec: DemoSpec,
    items: dict[str, np.ndarray],
    item_ids: list[str],
    *,
    progress: bool,
) -> list[str]:
    """Render all item PNGs (no metadata, so bytes depend only on pixels) and drop stale ones."""
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in tqdm(range(spec.n_items), desc="images", unit="img", disable=not progress):
        img = render_item_image(
            category=CATEGORIES[items["category"][i]],
            colour=COLOUR_NAMES[items["colour"][i]],
            shape=SHAPES[items["shape"][i]],
            pattern=PATTERNS[items["pattern"][i]],
            size=spec.image_size,
            jitter=items["jitter"][i],
        )
        rel = f"images/{item_ids[i]}.png"
        img.save(out_dir / rel, format="PNG")
        paths.append(rel)
    wanted = {Path(p).name for p in paths}
    for old in img_dir.glob("item_*.png"):
        if old.name not in wanted:  # leftovers of a larger earlier run would confuse loaders
            old.unlink()
    return paths


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------


def _validate(spec: DemoSpec) -> None:
    """Fail early with a clear message rather than deep inside numpy."""
    if spec.n_items < 1 or spec.n_users < 1 or spec.n_interactions < 1:
        raise ValueError("n_items, n_users and n_interactions must be positive")
    if spec.image_size < 8:
        raise ValueError("image_size must be at least 8 px")


def _items_frame(
    spec: DemoSpec, items: dict[str, np.ndarray], item_ids: list[str], image_paths: list[str]
) -> pl.DataFrame:
    """items.csv rows; price as fixed 2-decimal text so the CSV bytes never depend on float repr."""
    titles, descriptions = _item_texts(spec, items)
    return pl.DataFrame(
        {
            "item_id": item_ids,
            "title": titles,
            "description": descriptions,
            "category": [CATEGORIES[c] for c in items["category"]],
            "colour": [COLOUR_NAMES[c] for c in items["colour"]],
            "shape": [SHAPES[s] for s in items["shape"]],
            "pattern": [PATTERNS[p] for p in items["pattern"]],
            "price": [f"{p:.2f}" for p in items["price"]],
            "image_path": image_paths,
        }
    )


def _write_readme(out_dir: Path, spec: DemoSpec, stats: dict) -> None:
    """Human-readable provenance; no wall-clock times so the file stays reproducible."""
    lines = [
        "Synthetic multimodal recommendation demo catalog (generated, not real data).",
        "Generated by pipelines/demo_catalog.py; same spec => byte-identical files.",
        "",
        "Files:",
        "  items.csv         item_id,title,description,category,colour,shape,pattern,price,image_path",
        "  images/<id>.png   rendered item image (colour/shape/pattern visible)",
        "  interactions.csv  user_id,item_id,timestamp,rating (sorted by timestamp,user,item)",
        "",
        "Users have sparse tastes over colour/shape/pattern/category; picks follow",
        f"taste x Zipf-like popularity with ~{EXPLORE:.0%} random exploration.",
        "",
        "Spec:",
        *[f"  {k} = {v}" for k, v in asdict(spec).items()],
        "",
        "Counts:",
        *[f"  {k} = {stats[k]}" for k in ("n_items", "n_users", "n_interactions", "n_images")],
    ]
    (out_dir / "README.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _stats(items_df: pl.DataFrame, inter: pl.DataFrame, n_images: int) -> dict:
    """Summary returned to callers (and logged) so pipelines can sanity-check the output."""
    per_user = inter.group_by("user_id").len()["len"]
    return {
        "n_items": items_df.height,
        "n_users": per_user.len(),
        "n_interactions": inter.height,
        "n_images": n_images,
        "n_items_with_interactions": inter["item_id"].n_unique(),
        "interactions_per_user": {
            "min": int(per_user.min()),
            "mean": round(float(per_user.mean()), 2),
            "max": int(per_user.max()),
        },
        "timestamp_range": (int(inter["timestamp"].min()), int(inter["timestamp"].max())),
        "mean_rating": round(float(inter["rating"].mean()), 3),
        "categories": dict(sorted(Counter(items_df["category"].to_list()).items())),
        "colours": dict(sorted(Counter(items_df["colour"].to_list()).items())),
        "shapes": dict(sorted(Counter(items_df["shape"].to_list()).items())),
        "patterns": dict(sorted(Counter(items_df["pattern"].to_list()).items())),
    }


def generate_demo(out_dir: Path, spec: DemoSpec, *, progress: bool = True) -> dict:
    """Writes the catalog; returns stats dict (counts of items/users/interactions/images, ...).

    Overwrites items.csv, interactions.csv, README.txt and images/item_*.png in out_dir.
    """
    _validate(spec)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = _sample_items(spec)
    item_ids = _ids("item", spec.n_items)
    image_paths = _write_images(out_dir, spec, items, item_ids, progress=progress)
    items_df = _items_frame(spec, items, item_ids, image_paths)
    items_df.write_csv(out_dir / "items.csv", line_terminator="\n")
    inter = _sample_interactions(spec, items, progress=progress)
    inter.write_csv(out_dir / "interactions.csv", line_terminator="\n")
    stats = _stats(items_df, inter, len(image_paths))
    _write_readme(out_dir, spec, stats)
    logger.info(
        "demo catalog in %s: %d items, %d users, %d interactions, %d images, %d/%d items with interactions",
        out_dir,
        stats["n_items"],
        stats["n_users"],
        stats["n_interactions"],
        stats["n_images"],
        stats["n_items_with_interactions"],
        stats["n_items"],
    )
    return stats
