"""The HTML report: galleries, maps, example users and charts on the tiny demo, the
libraries behind them (chunked neighbours, projections, thumbnails, SVG charts), seeding,
catalogs without images, missing exports and the run history."""

from __future__ import annotations

import base64
import io
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image
from report_helpers import run_through_report

from evaluation.report import ExampleUser, ItemCard, Ranking, ReportInputs, render, svg
from evaluation.report.visuals import nearest_neighbours, project_2d, seeded_sample, thumbnail
from features.inputs import Rejected
from pipelines.layout import Layout
from pipelines.stages import report

MAX_BYTES = 5 * 2**20
MAX_SECONDS = 30


@pytest.fixture(scope="module")
def run(tiny_store, tmp_path_factory):
    """(config, layout, report summary) of the tiny demo run through the report stage."""
    root, _, _ = tiny_store
    config = tiny_config(root)
    layout, summary = run_through_report(root, config, tmp_path_factory.mktemp("report"))
    return config, layout, summary


def _other_reports(layout: Layout, tmp_path: Path, **drop: bool) -> Layout:
    """The same run with its own reports folder (and, optionally, store tables left out)."""
    skip = [k for k, v in drop.items() if v]
    store = layout.store
    if skip:
        store = tmp_path / "store"
        shutil.copytree(layout.store, store, ignore=lambda d, names: [n for n in names if n in skip])
    shutil.copytree(layout.reports, tmp_path / "reports")
    return Layout(store=store, models=layout.models, reports=tmp_path / "reports")


# ---------------------------------------------------------------------------- the stage


def test_report_shows_galleries_maps_users_and_charts(run) -> None:
    config, layout, summary = run
    page = layout.report().read_text()
    rp = config.report
    assert summary["bytes"] == len(page.encode()) <= MAX_BYTES
    assert summary["seconds"] <= MAX_SECONDS
    features = layout.feature_names()
    assert summary["galleries"] == features == ["image_clip", "text_minilm"]
    for name in features:
        section = page.split(f'id="feat-{name}"')[1].split("<h3")[0]
        assert section.count('class="it query"') == rp.gallery_queries
        assert section.count("cos ") == rp.gallery_queries * rp.neighbours
        assert f"{name}: 120 items, PCA" in section and section.count("<circle ") == 120
    users = page.split('id="users"')[1].split('id="features"')[0].split('<div class="user">')[1:]
    assert len(users) == summary["example_users"] == rp.example_users == 3
    for u in users:
        for model in config.train.models:
            assert f"<b>{model}</b> evaluated" in u and f"<b>{model}</b> exported" in u
        assert "training history" in u and "test items" in u
    for title in (
        "test Recall@K",
        "test NDCG@K",
        "test Recall@20 by item popularity",
        "share of top-K slots by item popularity",
        "users by test recall@20",
        "users by test ndcg@20",
        "on the valid split by epoch",
        "expectations per table",
    ):
        assert f"{title}</title>" in page, title
    assert "RANDOMLY INITIALISED" in page  # the tiny image encoder is random
    assert "no snapshot history yet" in page  # no run log in this store
    assert page.count("<img ") > 0 and 'class="noimg"' not in page  # every drawn item has its image


def test_thumbnails_are_small_embedded_jpegs(run) -> None:
    config, layout, _ = run
    page = layout.report().read_text()
    uris = set(re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page))
    assert uris
    for b64 in list(uris)[:20]:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            assert im.format == "JPEG" and max(im.size) <= config.report.thumbnail_px


def test_same_seed_same_page_another_seed_another_sample(run, tmp_path) -> None:
    config, layout, _ = run
    first = layout.report().read_text()
    again = _other_reports(layout, tmp_path / "again")
    report.run(config, again)
    assert again.report().read_text() == first
    other = _other_reports(layout, tmp_path / "other")
    report.run(config.updated({"report": {"seed": 7}}), other)
    assert other.report().read_text() != first


def test_a_catalog_without_images_gets_titles_in_the_same_layout(run, tmp_path) -> None:
    config, layout, _ = run
    no_images = _other_reports(layout, tmp_path)
    summary = report.run(config.updated({"data": {"images": None}}), no_images)
    page = no_images.report().read_text()
    assert "<img " not in page
    cards = page.count('<figure class="it')
    assert cards > 0 and page.count('class="noimg"') == cards
    assert "no image folder (data.images)" in page
    assert summary["example_users"] == 3 and len(summary["galleries"]) == 2


def test_report_without_exported_tables_still_shows_users(run, tmp_path) -> None:
    config, layout, _ = run
    bare = _other_reports(layout, tmp_path, embeddings=True, recommendations=True)
    report.run(config, bare)
    page = bare.report().read_text()
    assert f"not exported (no embeddings or recommendations): {', '.join(config.train.models)}" in page
    users = page.split('id="users"')[1].split('id="features"')[0]
    assert users.count('<div class="user">') == 3 and "training history" in users
    assert "</b> evaluated" not in users and "</b> exported" not in users


def test_history_comes_from_the_run_log(run, tmp_path) -> None:
    from pipelines.runs import append_run

    config, layout, _ = run
    logged = _other_reports(layout, tmp_path, _runs=True)
    for i, snap in enumerate(("2026-12-01", "2026-12-02")):
        append_run(
            logged.runs_root,
            {
                "run_id": f"{snap}.x",
                "snapshot": snap,
                "status": "ok",
                "git_sha": "abc",
                "validation": {"success": True},
                "metrics": {"bpr": {"test": {"recall@20": 0.1 + i / 10}}},
                "drift": {"features/text_minilm": {"shares": {"changed_share": 0.05 * i}}},
            },
        )
    append_run(logged.runs_root, {"run_id": "2026-12-03.x", "snapshot": "2026-12-03", "status": "failed"})
    report.run(config, logged)
    runs = logged.report().read_text().split('id="history"')[1]
    assert "test recall@20 over runs" in runs and "changed items over runs" in runs
    assert "2026-12-01" in runs and "2026-12-02" in runs and "2026-12-03" not in runs  # failed runs left out


# ---------------------------------------------------------------------------- libraries


def test_nearest_neighbours_in_chunks_match_a_dense_scan() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(53, 7)).astype(np.float32)
    present = rng.random(53) > 0.2
    queries = np.nonzero(present)[0][:6]
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    dense = unit[queries] @ unit.T
    dense[:, ~present] = -np.inf
    dense[np.arange(len(queries)), queries] = -np.inf
    want = np.argsort(-dense, axis=1)[:, :5]
    for chunk in (1, 4, 17, 53, 1000):
        idx, sims = nearest_neighbours(x, present, queries, 5, chunk_rows=chunk)
        assert idx.shape == (6, 5)
        np.testing.assert_array_equal(idx, want)
        np.testing.assert_allclose(sims, np.take_along_axis(dense, want, axis=1), rtol=1e-5)
        assert present[idx].all() and not (idx == queries[:, None]).any()
    idx, _ = nearest_neighbours(x[:3], np.ones(3, bool), np.array([0]), 10)
    assert idx.shape == (1, 2)  # at most the other present items


def test_projection_and_sampling_are_seeded() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 16))
    xy, caption = project_2d(x, "pca", seed=3)
    assert xy.shape == (60, 2) and caption.startswith("PCA")
    np.testing.assert_allclose(project_2d(x, "pca", seed=3)[0], xy)
    pool = np.arange(100)
    a = seeded_sample(pool, 10, np.random.default_rng([5, 1]))
    assert list(a) == sorted(a) and len(set(a)) == 10
    assert list(a) == list(seeded_sample(pool, 10, np.random.default_rng([5, 1])))
    assert list(seeded_sample(pool, 500, np.random.default_rng(0))) == list(pool)
    pytest.importorskip("sklearn")
    xy, caption = project_2d(x, "tsne", seed=3)
    assert xy.shape == (60, 2) and caption.startswith("t-SNE")


def test_thumbnail_fits_and_refuses_what_extract_refuses() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (300, 150), (200, 10, 10)).save(buf, format="PNG")
    uri = thumbnail(buf.getvalue(), px=48, quality=70)
    assert isinstance(uri, str) and uri.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        assert im.size == (48, 24)
    bad = thumbnail(buf.getvalue()[:40], px=48, quality=70)
    assert isinstance(bad, Rejected) and "corrupt" in bad.reason
    refused = thumbnail(buf.getvalue(), px=48, quality=70, formats=["JPEG"])
    assert isinstance(refused, Rejected)


def test_svg_charts_are_well_formed_and_escape_labels() -> None:
    nasty = 'a<b>&"c'
    charts = [
        svg.line_chart(
            {nasty: [(1, 0.1), (2, 0.3)], "m": [(1, None), (2, 0.2)]}, title=nasty, x_label="K", y_label="y"
        ),
        svg.line_chart({"m": [(0, 1.0)]}, title="t", x_label="snapshot", y_label="y", x_names=[nasty]),
        svg.line_chart({}, title="empty", x_label="x", y_label="y"),
        svg.bar_chart(
            [nasty, "b"], {"m": [0.5, None], nasty: [0.1, 0.2]}, title="t", y_label="y", x_label="x"
        ),
        svg.stacked_hbar([nasty, "b"], {"passed": [3, 4], "failed": [1, 0]}, title="t", x_label="n"),
        svg.scatter_map(
            [(0, 0), (1, 2), (5, 1)],
            [0, 1, 0],
            [nasty, "b", "c"],
            [("x", "#000"), (nasty, "#fff")],
            title=nasty,
            uid="u",
        ),
    ]
    for c in charts:
        ET.fromstring(c)  # parses as XML: every label escaped, every tag closed
        assert "<b>" not in c
    assert svg.nice_ticks(0, 0.23) == [0.0, 0.05, 0.1, 0.15, 0.2, 0.25]


def _inputs(**extra) -> ReportInputs:
    return ReportInputs(
        ks=[10, 20],
        metrics={"bpr": {"test": {"recall@10": 0.1, "recall@20": 0.2, "ndcg@10": 0.05}, "best_epoch": 1}},
        ingest={
            "split": {"train": {"users": 1, "items": 3, "interactions": 3, "density": 1.0, "cold_items": 0}},
            "counts": {
                "items": {"input": 3, "accepted": 3, "rejected": 0},
                "interactions": {"input": 3, "accepted": 3, "rejected": 0},
                "users": 1,
            },
        },
        validation={"tables": {}},
        trained={},
        features={},
        curves={},
        **extra,
    )


def test_hits_are_marked_exactly_on_test_items() -> None:
    items = {i: ItemCard(idx=i, item_id=f"i{i}", title=f"title {i}") for i in range(12)}
    user = ExampleUser(
        user_idx=0,
        user_id="u0",
        history=[0, 1],
        n_history=5,
        test=[3, 7],
        rankings={"bpr": [Ranking("evaluated", [2, 3, 4, 5, 6, 7, 8, 9, 10, 11])]},
    )
    page = render(_inputs(items=items, examples=[user]))
    row = page.split("<b>bpr</b> evaluated")[1].split('<div class="strip">')[0]
    assert "2 hits" in row and row.count('class="it hit"') == 2
    hits = re.findall(r'<figure class="it hit"[^>]*>.*?<figcaption>(.*?)</figcaption>', row)
    assert hits == ["title 3", "title 7"]
    assert "latest 2 of 5" in page and 'class="noimg"' in page  # no images: the titles stand in


def test_history_section_without_and_with_runs() -> None:
    assert "no snapshot history yet" in render(_inputs())
    runs = [
        {"snapshot": "s1", "metrics": {"bpr": {"recall@20": 0.1}}, "validation": {"success": True}},
        {
            "snapshot": "s2",
            "metrics": {"bpr": {"test": {"recall@20": 0.2}}},
            "validation": {"success": False},
        },
    ]
    page = render(_inputs(history=runs)).split('id="history"')[1]
    assert "test recall@20 over runs" in page and "FAIL" in page and "s1" in page and "s2" in page
