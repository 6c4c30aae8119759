"""Report stage: reads the run's metrics, validation, ingest and feature manifests, samples
what the page shows (gallery queries, map points, example users, all seeded by
``report.seed``) and writes one self-contained ``reports/report.html``.

Everything sampled is bounded by ``report.*``: neighbours are scanned in blocks of
``report.chunk_rows`` catalog rows, example users are scored one small batch at a time,
and only the items drawn get a thumbnail, so the stage's cost follows the page, not the
catalog squared.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from evaluation.report import ExampleUser, Gallery, ItemCard, ItemMap, Ranking, ReportInputs, render
from evaluation.report.visuals import nearest_neighbours, project_2d, seeded_sample, thumbnail
from features.inputs import Rejected, read_image_bytes
from features.reader import load_features
from features.store import MANIFEST, arrow_to_embeddings, read_manifest, read_table
from pipelines.config import Config, ReportParams
from pipelines.layout import Layout
from pipelines.runs import read_runs

log = logging.getLogger(__name__)

# Independent random streams, so changing one sample size never reshuffles the others.
_STREAM = {"queries": 1, "map": 2, "users": 3}


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _published(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def _rng(seed: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAM[purpose]])


def _filtered(path: Path, column: str, values: np.ndarray, columns: list[str]) -> Any:
    """Rows of a published table whose ``column`` is in ``values`` (a pushed-down filter)."""
    dataset = ds.dataset(path, format="parquet")
    return dataset.to_table(columns=columns, filter=ds.field(column).isin(values.tolist()))


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best finite scores, best first."""
    k = min(k, int(np.isfinite(scores).sum()))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


class _Catalog:
    """The items table's display columns and the thumbnails drawn so far (one per item)."""

    def __init__(self, config: Config, layout: Layout) -> None:
        t = read_table(layout.items(), ["item_idx", "item_id", "title", "category", "image_path"])
        order = np.argsort(t.column("item_idx").to_numpy())
        self.n = t.num_rows
        self.ids = np.asarray(t.column("item_id").to_pylist(), dtype=object)[order]
        self.titles = np.asarray(t.column("title").to_pylist(), dtype=object)[order]
        self.categories = np.asarray(t.column("category").to_pylist(), dtype=object)[order]
        self.paths = np.asarray(t.column("image_path").to_pylist(), dtype=object)[order]
        self.root = Path(config.data.images).resolve() if config.data.images else None
        self.extract = config.extract
        self.params = config.report
        self.cards: dict[int, ItemCard] = {}
        self.missing: dict[str, int] = {}

    def title(self, i: int) -> str:
        t = self.titles[i]
        return str(t) if t not in (None, "") else str(self.ids[i])

    def card(self, i: int) -> None:
        """Make item ``i``'s card (thumbnail, or why it has none) once."""
        i = int(i)
        if i in self.cards:
            return
        image: str | None = None
        why: str | None = None
        path = self.paths[i]
        if self.root is None:
            why = "no image folder (data.images)"
        elif path in (None, ""):
            why = "no image path"
        else:
            data = read_image_bytes(str(path), root=self.root, max_bytes=self.extract.max_image_bytes)
            out = (
                data
                if isinstance(data, Rejected)
                else thumbnail(
                    data,
                    px=self.params.thumbnail_px,
                    quality=self.params.thumbnail_quality,
                    max_pixels=self.extract.max_image_pixels,
                    formats=self.extract.image_formats,
                )
            )
            if isinstance(out, Rejected):
                why = out.reason
            else:
                image = out
        if why:
            self.missing[why] = self.missing.get(why, 0) + 1
        cat = self.categories[i]
        self.cards[i] = ItemCard(
            idx=i,
            item_id=str(self.ids[i]),
            title=self.title(i),
            category=str(cat) if cat not in (None, "") else None,
            image=image,
            missing=why,
        )


def _galleries(
    layout: Layout, catalog: _Catalog, rp: ReportParams, seed: int
) -> tuple[list[Gallery], list[ItemMap], dict[str, dict[str, Any]]]:
    """Per feature table: neighbours of seeded query items and a 2-D map of a seeded sample.
    Queries and map points are drawn once among items every table has, so the tables can be
    compared item for item."""
    names = layout.feature_names()
    feats = {name: load_features(layout.feature(name), n_items=catalog.n) for name in names}
    everywhere = np.ones(catalog.n, dtype=bool)
    for f in feats.values():
        everywhere &= f.present
    shared = np.nonzero(everywhere)[0]
    galleries, maps = [], []
    for name, f in feats.items():
        # Tables with no item in common (disjoint rejects) each sample among their own items.
        pool = shared if len(shared) else np.nonzero(f.present)[0]
        queries = seeded_sample(pool, rp.gallery_queries, _rng(seed, "queries"))
        points = seeded_sample(pool, rp.map_points, _rng(seed, "map"))
        idx, sims = nearest_neighbours(f.matrix, f.present, queries, rp.neighbours, chunk_rows=rp.chunk_rows)
        galleries.append(
            Gallery(
                feature=name,
                queries=[int(q) for q in queries],
                neighbours=[[int(i) for i in row] for row in idx],
                similarities=[[float(s) for s in row] for row in sims],
            )
        )
        for i in np.concatenate([queries, idx.reshape(-1)]):
            catalog.card(i)
        xy, method = project_2d(f.matrix[points], rp.map_method, seed)
        maps.append(
            ItemMap(
                feature=name,
                method=method,
                xy=xy,
                categories=[None if c in (None, "") else str(c) for c in catalog.categories[points]],
                titles=[catalog.title(i) for i in points],
            )
        )
    return galleries, maps, {name: f.manifest for name, f in feats.items()}


def _example_users(
    config: Config, layout: Layout, catalog: _Catalog, models: list[str], seed: int
) -> tuple[list[ExampleUser], list[str]]:
    """Seeded users with training and test interactions: their recent history, test items,
    and per model the top-K as evaluated (train items masked, from the exported embeddings)
    and as exported (``store/recommendations``, seen items excluded)."""
    rp = config.report
    inter = read_table(layout.interactions(), ["user_idx", "item_idx", "timestamp", "split"])
    users = inter.column("user_idx").to_numpy()
    items = inter.column("item_idx").to_numpy()
    ts = inter.column("timestamp").to_numpy(zero_copy_only=False)
    split = inter.column("split")
    train = pc.equal(split, "train").to_numpy(zero_copy_only=False)
    test = pc.equal(split, "test").to_numpy(zero_copy_only=False)
    both = np.intersect1d(np.unique(users[train]), np.unique(users[test]))
    chosen = seeded_sample(both, rp.example_users, _rng(seed, "users"))
    if len(chosen) == 0:
        return [], []
    uid = _filtered(layout.users(), "user_idx", chosen, ["user_idx", "user_id"])
    user_ids = dict(zip(uid.column("user_idx").to_pylist(), uid.column("user_id").to_pylist(), strict=True))
    examples: list[ExampleUser] = []
    for u in chosen:
        mine = users == u
        hist_rows = np.nonzero(mine & train)[0]
        when = np.nan_to_num(ts[hist_rows].astype(np.float64), nan=-np.inf)
        hist = items[hist_rows[np.argsort(-when, kind="stable")]]
        examples.append(
            ExampleUser(
                user_idx=int(u),
                user_id=str(user_ids.get(int(u), u)),
                history=[int(i) for i in hist[: rp.history_max]],
                n_history=len(hist),
                test=[int(i) for i in np.unique(items[mine & test])],
                rankings={},
            )
        )
    notes = []
    evaluated_models, exported_models = [], []
    for model in models:
        lists: dict[int, list[Ranking]] = {e.user_idx: [] for e in examples}
        rec_path = layout.recommendations(model)
        excluded = read_manifest(rec_path).get("excluded_seen", []) if _published(rec_path) else None
        ue_path, ie_path = layout.user_embeddings(model), layout.item_embeddings(model)
        # The exported list already is the evaluation's view when export masked train only.
        if (excluded is None or set(excluded) != {"train"}) and _published(ue_path) and _published(ie_path):
            ie_t = read_table(ie_path, ["item_idx", "embedding"])
            emb = arrow_to_embeddings(ie_t.column("embedding"))
            ie = np.zeros((catalog.n, emb.shape[1]), np.float32)
            ie[ie_t.column("item_idx").to_numpy()] = emb
            ue_t = _filtered(ue_path, "user_idx", chosen, ["user_idx", "embedding"])
            ue = dict(
                zip(
                    ue_t.column("user_idx").to_pylist(),
                    arrow_to_embeddings(ue_t.column("embedding")),
                    strict=True,
                )
            )
            for e in examples:
                if e.user_idx not in ue:
                    continue
                scores = ie @ ue[e.user_idx]
                scores[items[(users == e.user_idx) & train]] = -np.inf
                lists[e.user_idx].append(
                    Ranking("evaluated (train items masked)", [int(i) for i in _top(scores, rp.top_k)])
                )
            evaluated_models.append(model)
        if excluded is not None:
            recs = _filtered(rec_path, "user_idx", chosen, ["user_idx", "rank", "item_idx"])
            rank = recs.column("rank").to_numpy()
            keep = rank <= rp.top_k
            by_user: dict[int, list[tuple[int, int]]] = {}
            for u, r, i in zip(
                recs.column("user_idx").to_numpy()[keep],
                rank[keep],
                recs.column("item_idx").to_numpy()[keep],
                strict=True,
            ):
                by_user.setdefault(int(u), []).append((int(r), int(i)))
            label = "exported (store/recommendations)"
            for e in examples:
                lists[e.user_idx].append(Ranking(label, [i for _, i in sorted(by_user.get(e.user_idx, []))]))
            exported_models.append((model, excluded))
        for e in examples:
            if lists[e.user_idx]:
                e.rankings[model] = lists[e.user_idx]
    if evaluated_models:
        notes.append(
            f"evaluated: the top-{rp.top_k} under the evaluation protocol (all items ranked, training "
            "items masked), scored from the exported user and item embeddings; test hits are marked."
        )
    by_exclusion: dict[tuple[str, ...], list[str]] = {}
    for model, excluded in exported_models:
        by_exclusion.setdefault(tuple(excluded), []).append(model)
    for excluded, names in by_exclusion.items():
        notes.append(
            f"exported ({', '.join(names)}): the top-{rp.top_k} of the table downstream teams read, "
            f"with the user's {', '.join(excluded) or 'no'} items excluded"
            + ("; test items are among them, so it cannot hit them." if "test" in excluded else ".")
        )
    missing = [m for m in models if m not in evaluated_models and m not in dict(exported_models)]
    if missing:
        notes.append(f"not exported (no embeddings or recommendations): {', '.join(missing)}")
    for e in examples:
        for i in e.history + e.test + [i for lists in e.rankings.values() for r in lists for i in r.items]:
            catalog.card(i)
    return examples, notes


def _per_user(layout: Layout, ks: list[int]) -> dict[str, dict[str, np.ndarray]]:
    kmax = max(ks)
    wanted = [f"recall@{kmax}", f"ndcg@{kmax}"]
    out = {}
    for f in sorted(layout.per_user().glob("*.parquet")):
        t = pq.read_table(f)
        out[f.stem] = {c: t.column(c).to_numpy() for c in wanted if c in t.column_names}
    return out


def _history(layout: Layout) -> list[dict[str, Any]]:
    """Finished snapshot runs from the run log (empty when there is none yet)."""
    return [r for r in read_runs(layout.runs_root) if r.get("status") == "ok"]


def run(config: Config, layout: Layout) -> dict[str, Any]:
    t0 = time.perf_counter()
    rp = config.report
    seed = config.seed if rp.seed is None else rp.seed
    curves_dir = layout.curves()
    significance = layout.significance()
    metrics = _json(layout.metrics())
    catalog = _Catalog(config, layout)
    galleries, maps, feature_manifests = _galleries(layout, catalog, rp, seed)
    examples, ranking_notes = _example_users(config, layout, catalog, list(metrics), seed)
    cards = catalog.cards
    notes = [
        f"{len(cards)} items drawn; samples seeded by report.seed ({seed}): "
        f"{len(galleries[0].queries) if galleries else 0} gallery queries, "
        f"{len(maps[0].titles) if maps else 0} map points, {len(examples)} example users."
    ]
    if catalog.missing:
        notes.append(
            "shown as titles (no thumbnail): "
            + ", ".join(f"{n} item{'s' * (n != 1)}: {why}" for why, n in sorted(catalog.missing.items()))
        )
    inputs = ReportInputs(
        ks=list(config.evaluate.ks),
        metrics=metrics,
        ingest=_json(layout.ingest_stats()),
        validation=_json(layout.validation_summary()),
        trained=_json(layout.train_summary()),
        features=feature_manifests,
        curves={f.stem: _json(f) for f in sorted(curves_dir.glob("*.json"))},
        significance=_json(significance) if significance.exists() else {},
        semantic_ids={name: read_manifest(layout.semantic_ids(name)) for name in layout.semantic_id_names()},
        items=cards,
        galleries=galleries,
        maps=maps,
        examples=examples,
        ranking_notes=ranking_notes,
        per_user=_per_user(layout, list(config.evaluate.ks)),
        history=_history(layout),
        notes=notes,
        thumb_px=rp.thumbnail_px,
        histogram_bins=rp.histogram_bins,
        max_categories=rp.max_categories,
    )
    out = layout.report(write=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    page = render(inputs)
    out.write_text(page)
    seconds = round(time.perf_counter() - t0, 2)
    log.info(
        "report: %s (%.2f MB, %d thumbnails, %d galleries, %d example users) in %.1f s",
        out,
        len(page.encode()) / 2**20,
        sum(c.image is not None for c in cards.values()),
        len(galleries),
        len(examples),
        seconds,
    )
    return {
        "report": str(out),
        "models": sorted(metrics),
        "bytes": len(page.encode()),
        "seconds": seconds,
        "example_users": len(examples),
        "galleries": [g.feature for g in galleries],
    }
