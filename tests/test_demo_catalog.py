"""Behaviour of the demo catalog that downstream pipelines and newcomers rely on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from pipelines.demo_catalog import COLOURS, DemoSpec, generate_demo

SPEC = DemoSpec(n_items=120, n_users=100, n_interactions=2000, image_size=32, seed=7)
ITEM_COLUMNS = [
    "item_id",
    "title",
    "description",
    "category",
    "colour",
    "shape",
    "pattern",
    "price",
    "image_path",
]
INTERACTION_COLUMNS = ["user_id", "item_id", "timestamp", "rating"]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One generated catalog shared by the read-only tests (generation is the slow part)."""
    out = tmp_path_factory.mktemp("demo")
    stats = generate_demo(out, SPEC, progress=False)
    return out, stats


def _read(out: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    items = pl.read_csv(out / "items.csv", schema_overrides={"price": pl.Float64})
    inter = pl.read_csv(out / "interactions.csv")
    return items, inter


def test_files_and_exact_columns(catalog: tuple[Path, dict]) -> None:
    out, _ = catalog
    for name in ("items.csv", "interactions.csv", "README.txt"):
        assert (out / name).is_file()
    header = (out / "items.csv").read_text().splitlines()[0]
    assert header == ",".join(ITEM_COLUMNS)
    header = (out / "interactions.csv").read_text().splitlines()[0]
    assert header == ",".join(INTERACTION_COLUMNS)
    assert f"seed = {SPEC.seed}" in (out / "README.txt").read_text()


def test_counts_near_targets_and_stats(catalog: tuple[Path, dict]) -> None:
    out, stats = catalog
    items, inter = _read(out)
    assert items.height == SPEC.n_items
    assert inter["user_id"].n_unique() == SPEC.n_users
    assert abs(inter.height - SPEC.n_interactions) <= 0.05 * SPEC.n_interactions
    assert stats["n_items"] == SPEC.n_items
    assert stats["n_users"] == SPEC.n_users
    assert stats["n_interactions"] == inter.height
    assert stats["n_images"] == SPEC.n_items
    assert sum(stats["categories"].values()) == SPEC.n_items
    assert len(stats["categories"]) >= 8
    per_user = inter.group_by("user_id").len()["len"]
    assert per_user.min() >= 5
    # Nearly every item is reachable, so the tail exists in the data at all.
    assert inter["item_id"].n_unique() >= 0.9 * SPEC.n_items


def test_ids_and_referential_integrity(catalog: tuple[Path, dict]) -> None:
    items, inter = _read(catalog[0])
    assert items["item_id"].is_unique().all()
    assert items["item_id"][0] == "item_00001"
    assert inter["user_id"].str.contains(r"^user_\d{5}$").all()
    assert inter.select("user_id", "item_id").is_unique().all()
    assert set(inter["item_id"]) <= set(items["item_id"])


def test_interaction_values_and_order(catalog: tuple[Path, dict]) -> None:
    _, inter = _read(catalog[0])
    assert inter["timestamp"].dtype == pl.Int64
    assert inter["rating"].is_between(1, 5).all()
    start = SPEC.start_timestamp
    assert inter["timestamp"].min() >= start
    assert inter["timestamp"].max() <= start + 181 * 86_400
    assert inter.equals(inter.sort("timestamp", "user_id", "item_id"))


def test_item_text_mentions_attributes(catalog: tuple[Path, dict]) -> None:
    items, _ = _read(catalog[0])
    for row in items.iter_rows(named=True):
        title = row["title"].lower()
        assert row["colour"] in title and row["shape"] in title and row["category"] in title
        assert row["colour"] in row["description"].lower()
        assert row["price"] > 0
    assert items["description"].n_unique() > 0.8 * items.height


def test_images_are_rgb_pngs_of_right_size(catalog: tuple[Path, dict]) -> None:
    out, _ = catalog
    items, _ = _read(out)
    assert items["image_path"][0] == "images/item_00001.png"
    for rel in items["image_path"]:
        with Image.open(out / rel) as img:
            assert img.format == "PNG"
            assert img.mode == "RGB"
            assert img.size == (SPEC.image_size, SPEC.image_size)


def test_images_are_not_duplicates(catalog: tuple[Path, dict]) -> None:
    out, _ = catalog
    items, _ = _read(out)
    blobs = {(out / rel).read_bytes() for rel in items["image_path"]}
    assert len(blobs) == items.height


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path: Path) -> None:
    first, again, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_demo(first, SPEC, progress=False)
    generate_demo(again, SPEC, progress=False)
    generate_demo(other, replace(SPEC, seed=SPEC.seed + 1), progress=False)
    files = ["items.csv", "interactions.csv", "README.txt"]
    files += [f"images/item_{i:05d}.png" for i in (1, 2, 60, 120)]
    for name in files:
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    for name in ("items.csv", "interactions.csv", "images/item_00001.png"):
        assert (first / name).read_bytes() != (other / name).read_bytes(), name


def test_rerun_overwrites_and_drops_stale_images(tmp_path: Path) -> None:
    generate_demo(tmp_path, SPEC, progress=False)
    small = replace(SPEC, n_items=50)
    generate_demo(tmp_path, small, progress=False)
    items, inter = _read(tmp_path)
    assert items.height == 50
    assert len(list((tmp_path / "images").glob("*.png"))) == 50
    assert set(inter["item_id"]) <= set(items["item_id"])


def test_demo_stage_uses_the_demo_section_and_the_top_level_seed(tmp_path: Path) -> None:
    from pipelines.config import Config
    from pipelines.stages import demo

    sizes = {"n_items": 30, "n_users": 20, "n_interactions": 300, "image_size": 16}
    stats = demo.run(Config.from_dict({"seed": 5, "demo": sizes}), tmp_path / "stage", progress=False)
    generate_demo(tmp_path / "lib", DemoSpec(**sizes, seed=5), progress=False)
    assert stats["n_items"] == 30 and stats["n_users"] == 20
    for name in ("items.csv", "interactions.csv", "README.txt", "images/item_00001.png"):
        assert (tmp_path / "stage" / name).read_bytes() == (tmp_path / "lib" / name).read_bytes(), name
    # demo.seed, when set, wins over the top-level seed
    demo.run(Config.from_dict({"seed": 5, "demo": {**sizes, "seed": 6}}), tmp_path / "own", progress=False)
    assert "seed = 6" in (tmp_path / "own" / "README.txt").read_text()


def test_users_concentrate_on_their_dominant_colour(catalog: tuple[Path, dict]) -> None:
    """The content signal is real: taste on colour, far above the uniform base rate."""
    items, inter = _read(catalog[0])
    joined = inter.join(items.select("item_id", "colour"), on="item_id")
    per_colour = joined.group_by("user_id", "colour").len()
    share = per_colour.group_by("user_id").agg(pl.col("len").max() / pl.col("len").sum())
    base_rate = 1 / len(COLOURS)
    assert share["len"].mean() > 2 * base_rate


def test_ratings_are_higher_on_preferred_colour(catalog: tuple[Path, dict]) -> None:
    items, inter = _read(catalog[0])
    joined = inter.join(items.select("item_id", "colour"), on="item_id")
    dominant = (
        joined.group_by("user_id", "colour")
        .len()
        .sort("len", "colour", descending=[True, False])
        .group_by("user_id", maintain_order=True)
        .first()
        .select("user_id", pl.col("colour").alias("dominant"))
    )
    flagged = joined.join(dominant, on="user_id")
    liked = flagged.filter(pl.col("colour") == pl.col("dominant"))["rating"].mean()
    other = flagged.filter(pl.col("colour") != pl.col("dominant"))["rating"].mean()
    assert liked > other + 0.3


def test_image_pixels_reflect_colour(catalog: tuple[Path, dict]) -> None:
    out, _ = catalog
    items, _ = _read(out)

    def mean_rgb(colour: str) -> np.ndarray:
        paths = items.filter(pl.col("colour") == colour)["image_path"]
        assert len(paths) > 0
        pixels = [np.asarray(Image.open(out / p), dtype=np.float64) for p in paths]
        return np.mean([p.reshape(-1, 3).mean(axis=0) for p in pixels], axis=0)

    red, blue = mean_rgb("red"), mean_rgb("blue")
    # Light backgrounds dilute the means, yet the red/blue balance must flip clearly.
    assert red[0] - red[2] > 15
    assert blue[2] - blue[0] > 15
    assert (red[0] - red[2]) - (blue[0] - blue[2]) > 40
