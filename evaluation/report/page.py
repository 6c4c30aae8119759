"""The HTML report: one self-contained page (no network, no script) with the models, example
users, feature galleries and maps, dataset, validation, drift and run history.

``render`` takes the loaded inputs (``ReportInputs``) and returns the page; the report
stage reads and computes them. Charts are inline SVG (``svg``), thumbnails ``data:`` URIs.
"""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

import numpy as np

from evaluation.report import svg
from evaluation.report.inputs import ExampleUser, ItemCard, ReportInputs


def _e(v: Any) -> str:
    return html.escape(str(v) if v is not None else "", quote=True)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _charts(*charts: str) -> str:
    return '<div class="charts">' + "".join(charts) + "</div>"


# ------------------------------------------------------------------------------- item cards


def _card(item: ItemCard | None, px: int, caption: str = "", cls: str = "") -> str:
    """A thumbnail with its title below, or (no image) the title in the thumbnail's box."""
    if item is None:
        return ""
    tip = _e(f"{item.title} ({item.item_id})" + (f" · {item.category}" if item.category else ""))
    if item.image:
        pic = f'<img src="{item.image}" alt="{_e(item.title)}" width="{px}" height="{px}">'
    else:
        why = f" · no image: {item.missing}" if item.missing else ""
        pic = f'<div class="noimg" style="width:{px}px;height:{px}px">{_e(item.title)}</div>'
        tip += _e(why)
    cap = f"<small>{_e(caption)}</small>" if caption else ""
    return (
        f'<figure class="{f"it {cls}".strip()}" style="width:{px + 8}px" title="{tip}">{pic}'
        f"<figcaption>{_e(item.title)}</figcaption>{cap}</figure>"
    )


def _strip(label: str, cards: list[str], extra: str = "") -> str:
    inner = "".join(cards) or '<span class="muted">none</span>'
    return f'<div class="strip"><div class="lbl">{label}{extra}</div><div class="row">{inner}</div></div>'


# ---------------------------------------------------------------------------------- sections


def _model_colors(models: list[str]) -> dict[str, str]:
    return {m: svg.PALETTE[i % len(svg.PALETTE)] for i, m in enumerate(models)}


def _metric_charts(inputs: ReportInputs, colors: dict[str, str]) -> str:
    ks = sorted(inputs.ks)
    metrics = inputs.metrics
    kmax = max(ks)
    out = []
    for m, label in (("recall", "Recall"), ("ndcg", "NDCG")):
        series = {name: [(float(k), r["test"].get(f"{m}@{k}")) for k in ks] for name, r in metrics.items()}
        out.append(svg.line_chart(series, title=f"test {label}@K", x_label="K", y_label=label, colors=colors))
    buckets: list[str] = []
    for r in metrics.values():
        for b in (r.get("test_breakdown") or {}).get("by_popularity") or {}:
            if b not in buckets:
                buckets.append(b)
    if buckets:
        for key, label in (
            (f"recall@{kmax}", f"test Recall@{kmax}"),
            (f"share@{kmax}", "share of top-K slots"),
        ):
            series = {
                name: [
                    ((r.get("test_breakdown") or {}).get("by_popularity") or {}).get(b, {}).get(key)
                    for b in buckets
                ]
                for name, r in metrics.items()
            }
            out.append(
                svg.bar_chart(
                    buckets,
                    series,
                    title=f"{label} by item popularity",
                    y_label=label,
                    x_label="items by popularity (most popular first)",
                    colors=colors,
                )
            )
    return _charts(*out)


def _histograms(inputs: ReportInputs, colors: dict[str, str]) -> str:
    if not inputs.per_user:
        return "<p>no per-user metrics (reports/per_user is empty)</p>"
    kmax = max(inputs.ks)
    bins = inputs.histogram_bins
    edges = np.linspace(0.0, 1.0, bins + 1)
    groups = ["0"] + [f"≤{e:.2g}" for e in edges[1:]]
    out = []
    for metric in (f"recall@{kmax}", f"ndcg@{kmax}"):
        series = {}
        for model, cols in inputs.per_user.items():
            v = np.asarray(cols.get(metric, []), dtype=np.float64)
            if v.size == 0:
                continue
            zero = float((v <= 0).mean())
            counts = np.histogram(v[v > 0], bins=edges)[0] / v.size
            series[model] = [zero, *counts.tolist()]
        out.append(
            svg.bar_chart(
                groups,
                series,
                title=f"users by test {metric}",
                y_label="share of users",
                x_label=metric,
                colors={m: colors.get(m, svg.OTHER) for m in series},
            )
        )
    return _charts(*out)


def _curves(inputs: ReportInputs, colors: dict[str, str]) -> str:
    series: dict[str, list[tuple[float, float | None]]] = {}
    key = ""
    for model, rows in sorted(inputs.curves.items()):
        keys = [k for r in rows for k in r if k.startswith("valid_")]
        if not keys:
            continue
        key = keys[0]
        series[model] = [(float(r["epoch"]), r.get(key)) for r in rows if r.get(key) is not None]
    if not series:
        return "<p>no training curves</p>"
    return _charts(
        svg.line_chart(
            series,
            title=f"{key.removeprefix('valid_')} on the valid split by epoch",
            x_label="epoch",
            y_label=key.removeprefix("valid_"),
            colors={m: colors.get(m, svg.OTHER) for m in series},
        )
    )


def _example_users(inputs: ReportInputs) -> str:
    if not inputs.examples:
        return "<p>no example users (no user has both training and test interactions)</p>"
    px = inputs.thumb_px
    notes = "".join(f"<li>{_e(n)}</li>" for n in inputs.ranking_notes)
    out = [f'<ul class="notes">{notes}</ul>' if notes else ""]
    for u in inputs.examples:
        out.append(_one_user(u, inputs.items, px))
    return "".join(out)


def _one_user(u: ExampleUser, items: dict[int, ItemCard], px: int) -> str:
    test = set(u.test)
    hist = [_card(items.get(i), px) for i in u.history]
    more = f" (latest {len(u.history)} of {u.n_history})" if u.n_history > len(u.history) else ""
    parts = [
        f'<div class="user"><h4>user {_e(u.user_id)}</h4>',
        _strip("training history", hist, more),
        _strip("test items", [_card(items.get(i), px, cls="truth") for i in u.test]),
    ]
    for model, lists in u.rankings.items():
        for r in lists:
            hits = sum(i in test for i in r.items)
            cards = [
                _card(
                    items.get(i),
                    px,
                    f"#{rank} ✓ test hit" if i in test else f"#{rank}",
                    "hit" if i in test else "",
                )
                for rank, i in enumerate(r.items, 1)
            ]
            parts.append(
                _strip(f"<b>{_e(model)}</b> {_e(r.label)}", cards, f" · {hits} hit{'s' * (hits != 1)}")
            )
    parts.append("</div>")
    return "".join(parts)


def _galleries(inputs: ReportInputs) -> str:
    px = inputs.thumb_px
    maps = {m.feature: m for m in inputs.maps}
    legend, index = _category_legend(inputs)
    out = []
    names = list(dict.fromkeys([g.feature for g in inputs.galleries] + list(maps)))
    for name in names:
        out.append(f'<h3 id="feat-{_e(name)}">{_e(name)}</h3><div class="feat">')
        gallery = next((g for g in inputs.galleries if g.feature == name), None)
        if gallery is None or not gallery.queries:
            out.append("<p>no gallery (no items with a vector)</p>")
        else:
            rows = []
            for q, nbrs, sims in zip(gallery.queries, gallery.neighbours, gallery.similarities, strict=True):
                cards = [
                    _card(inputs.items.get(i), px, f"cos {s:.3f}") for i, s in zip(nbrs, sims, strict=True)
                ]
                query = _card(inputs.items.get(q), px, "query", "query")
                rows.append(
                    f'<div class="strip"><div class="q">{query}</div>'
                    f'<div class="row">{"".join(cards)}</div></div>'
                )
            out.append(f'<div class="gallery">{"".join(rows)}</div>')
        m = maps.get(name)
        if m is not None:
            classes = [index.get(c, len(legend) - 1) for c in m.categories]
            out.append(
                svg.scatter_map(
                    [(float(x), float(y)) for x, y in m.xy],
                    classes,
                    m.titles,
                    legend,
                    title=f"{name}: {len(m.titles)} items, {m.method}, coloured by category",
                    uid=f"m{names.index(name)}c",
                )
            )
        out.append("</div>")
    return "".join(out) or "<p>no feature tables</p>"


def _category_legend(inputs: ReportInputs) -> tuple[list[tuple[str, str]], dict[str | None, int]]:
    """One category -> colour mapping for every map on the page: the most frequent
    ``max_categories`` categories get colours, the rest share grey."""
    counts = Counter(c for m in inputs.maps for c in m.categories)
    top = [c for c, _ in counts.most_common(inputs.max_categories)]
    legend = [
        (str(c) if c is not None else "(no category)", svg.PALETTE[i % len(svg.PALETTE)])
        for i, c in enumerate(top)
    ]
    index: dict[str | None, int] = {c: i for i, c in enumerate(top)}
    if len(counts) > len(top):
        legend.append((f"other ({len(counts) - len(top)} categories)", svg.OTHER))
    return legend, index


def _validation_chart(validation: dict[str, Any]) -> str:
    tables = validation.get("tables") or {}
    if not tables:
        return ""
    names = list(tables)
    passed = [float(v["expectations"] - v["failed"]) for v in tables.values()]
    failed = [float(v["failed"]) for v in tables.values()]
    return _charts(
        svg.stacked_hbar(
            names,
            {"passed": passed, "failed": failed},
            title="expectations per table",
            x_label="expectations",
            colors={"passed": "#2ca02c", "failed": "#d62728"},
        )
    )


def _drift_chart(drift: dict[str, Any]) -> str:
    ran = {t: d for t, d in drift.items() if d.get("shares")}
    if not ran:
        return ""
    names = list(ran)
    series = {k: [ran[t]["shares"].get(f"{k}_share") for t in names] for k in ("added", "removed", "changed")}
    cos = {
        "min unchanged cosine": [
            (ran[t].get("checks") or {}).get("min_unchanged_cosine", {}).get("value") for t in names
        ]
    }
    return _charts(
        svg.bar_chart(
            names,
            series,
            title="catalog churn since the previous snapshot",
            y_label="share of items",
            x_label="feature",
        ),
        svg.bar_chart(
            names,
            cos,
            title="lowest cosine of an unchanged item",
            y_label="cosine",
            x_label="feature",
            y_max=1.0,
        ),
    )


def _history(inputs: ReportInputs, colors: dict[str, str]) -> str:
    runs = inputs.history
    if not runs:
        return (
            "<p>no snapshot history yet (no run log): metrics and drift over runs appear"
            " once snapshot runs are recorded.</p>"
        )
    names = [str(r.get("snapshot") or r.get("snapshot_id") or i) for i, r in enumerate(runs)]
    kmax = max(inputs.ks)
    metric = f"recall@{kmax}"
    series: dict[str, list[tuple[float, float | None]]] = {}
    drift: dict[str, list[tuple[float, float | None]]] = {}
    for i, r in enumerate(runs):
        for model, m in (r.get("metrics") or {}).items():
            vals = m.get("test", m) if isinstance(m, dict) else {}
            v = vals.get(metric)
            if isinstance(v, int | float):
                series.setdefault(model, []).append((float(i), float(v)))
        d = r.get("drift") or (r.get("validation") or {}).get("drift") or {}
        for table, entry in d.items():
            v = (entry.get("shares") or {}).get("changed_share") if isinstance(entry, dict) else None
            if isinstance(v, int | float):
                drift.setdefault(table, []).append((float(i), float(v)))
    rows = [
        [
            n,
            r.get("git_sha") or r.get("code_version") or "",
            {True: "pass", False: "FAIL"}.get((r.get("validation") or {}).get("success"), ""),
        ]
        for n, r in zip(names, runs, strict=True)
    ]
    return _charts(
        svg.line_chart(
            series,
            title=f"test {metric} over runs",
            x_label="snapshot",
            y_label=metric,
            x_names=names,
            colors={m: colors.get(m, svg.OTHER) for m in series},
        ),
        svg.line_chart(
            drift, title="changed items over runs", x_label="snapshot", y_label="changed share", x_names=names
        ),
    ) + _table(["snapshot", "code", "validation"], rows)


# -------------------------------------------------------------------------------------- page

FEATURE_COLUMNS = ["feature", "encoder", "weights", "dim", "L2-normalised", "embedded", "reused", "rejected"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px;color:#222}
nav{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid #ddd;z-index:2}
nav a{margin-right:12px;color:#1f5fa8;text-decoration:none}
table{border-collapse:collapse;margin:6px 0}
td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}
.warn{background:#fec;padding:6px;border-left:4px solid #e80}
.muted{color:#888}
.charts{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0}
.chart svg{font-size:10px;background:#fff;border:1px solid #eee}
.chart .ct{font-size:12px;font-weight:600}
.chart .grid{stroke:#e5e5e5}
.chart figcaption{font-size:11px;max-width:440px}
.lg{margin-right:10px;white-space:nowrap}
.lg i{display:inline-block;width:10px;height:10px;margin-right:3px;vertical-align:middle}
.strip{display:flex;align-items:flex-start;gap:8px;margin:4px 0}
.strip .lbl{width:150px;flex:none;font-size:12px}
.strip .q{flex:none;border-right:2px solid #ccc;padding-right:8px}
.row{display:flex;flex-wrap:wrap;gap:4px}
.it{font-size:10px;line-height:1.15;text-align:center;padding:2px;border:2px solid transparent;
border-radius:3px}
.it img{display:block;margin:auto;object-fit:contain;background:#f4f4f4}
.it figcaption{overflow:hidden;text-overflow:ellipsis;display:-webkit-box;-webkit-line-clamp:2;
-webkit-box-orient:vertical;max-height:2.4em}
.it small{display:block;color:#555;white-space:nowrap}
.it.hit small{color:#1a7a1a;font-weight:600}
.it.hit{border-color:#2ca02c;background:#eaf7ea}
.it.truth{border-color:#9ccc9c}
.it.query{border-color:#1f77b4}
.noimg{display:flex;align-items:center;justify-content:center;margin:auto;background:#eef1f6;
color:#334;font-size:9px;overflow:hidden;text-align:center;padding:2px;box-sizing:border-box}
.feat{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.user{border-top:1px solid #ddd;padding:4px 0}
.user h4{margin:6px 0}
"""


def render(inputs: ReportInputs) -> str:
    """The whole page as one HTML string."""
    metrics, ingest, validation, trained = inputs.metrics, inputs.ingest, inputs.validation, inputs.trained
    ks = inputs.ks
    colors = _model_colors(list(metrics))
    cols = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "precision", "map")]
    model_rows = [
        [name]
        + [m["test"].get(c, "") for c in cols]
        + [m["best_epoch"], trained.get(name, {}).get("seconds_per_epoch", "")]
        for name, m in metrics.items()
    ]
    kmax = max(ks)
    breakdown_rows = []
    for name, m in metrics.items():
        b = m.get("test_breakdown") or {}
        pop = b.get("by_popularity") or {}
        few = b.get("few_interactions") or {}
        breakdown_rows.append(
            [name, b.get("coverage", {}).get(f"coverage@{kmax}", "")]
            + [v.get(f"recall@{kmax}", "") for v in pop.values()]
            + [few.get(f"recall@{kmax}", "")]
        )
    pop_names = list((next(iter(metrics.values()), {}).get("test_breakdown") or {}).get("by_popularity", {}))
    sig_rows = [
        [
            f"{r['a']} vs {r['b']}",
            r["metric"],
            r["diff"],
            f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]",
            f"{r['p_wilcoxon_holm']:.2g}",
            "yes" if r["significant"] else "no",
        ]
        for r in (inputs.significance or {}).get("pairs", [])
    ]
    split_rows = [
        [s, v["users"], v["items"], v["interactions"], v["density"], v["cold_items"]]
        for s, v in ingest["split"].items()
    ]
    c = ingest["counts"]
    feat_rows, warnings = [], []
    for name, m in inputs.features.items():
        feat_rows.append(
            [
                name,
                m.get("encoder"),
                m.get("weights"),
                m.get("dim"),
                m.get("normalized"),
                m["counts"]["embedded"],
                m["counts"].get("reused", ""),
                m["counts"]["rejected"],
            ]
        )
        if m.get("random_weights"):
            warnings.append(
                f"Feature <b>{_e(name)}</b> was produced with RANDOMLY INITIALISED "
                f"weights ({_e(m.get('weights'))}): its vectors carry no pretrained "
                "semantics (its gallery and map show it). Give a pretrained tag or checkpoint path "
                "for real use."
            )
    sid_rows = [
        [
            name,
            f"{m.get('method')} {m.get('levels')}x{m.get('codebook_size')}",
            (m.get("source") or {}).get("table", ""),
            m.get("row_count"),
            m.get("collision_rate_before_suffix"),
            m.get("collision_rate_after_suffix"),
            " / ".join(_fmt(float(u)) for u in m.get("use", [])),
            " / ".join(f"{float(p):.1f}" for p in m.get("perplexity", [])),
            m.get("largest_group"),
            (m.get("items_without_source") or {}).get("count", 0),
        ]
        for name, m in inputs.semantic_ids.items()
    ]
    val_rows = [
        [t, v["rows"], v["expectations"], v["failed"], "pass" if v["success"] else "FAIL"]
        for t, v in validation["tables"].items()
    ]
    drift = validation.get("drift") or {}
    drift_rows = [
        [
            t,
            d.get("status"),
            d.get("reason") or "",
            *(
                d.get("shares", {}).get(f"{k}_share", d.get("shares", {}).get(k, ""))
                for k in ("added", "removed", "changed")
            ),
            d.get("checks", {}).get("min_unchanged_cosine", {}).get("value", ""),
        ]
        for t, d in drift.items()
    ]
    issues = [f"FAIL: {ln}" for ln in validation.get("failures", [])]
    issues += [f"warn: {ln}" for ln in validation.get("warnings", [])]
    val_notes = "".join(f"<li>{_e(ln)}</li>" for ln in issues) or "<li>no failures or warnings</li>"
    warn = "".join(f'<p class="warn">{w}</p>' for w in warnings)
    notes = "".join(f"<li>{_e(n)}</li>" for n in inputs.notes)
    nav = "".join(
        f'<a href="#{a}">{t}</a>'
        for a, t in (
            ("models", "Models"),
            ("users", "Example users"),
            ("features", "Features"),
            ("dataset", "Dataset"),
            ("validation", "Validation"),
            ("history", "Runs"),
        )
    )
    sig = (
        _table(
            [
                "pair",
                "metric",
                "mean diff (a - b)",
                "95% bootstrap CI",
                "Holm-adjusted Wilcoxon p",
                "significant",
            ],
            sig_rows,
        )
        if sig_rows
        else "<p>no pairwise tests</p>"
    )
    sid = (
        _table(
            [
                "table",
                "method",
                "source",
                "items",
                "collisions before suffix",
                "after suffix",
                "codebook use per level",
                "perplexity per level",
                "largest group",
                "items without a vector",
            ],
            sid_rows,
        )
        if sid_rows
        else "<p>no semantic-ID tables</p>"
    )
    drift_table = (
        _table(
            ["feature", "status", "reason", "added", "removed", "changed", "min unchanged cosine"], drift_rows
        )
        if drift_rows
        else "<p>no drift checks ran</p>"
    )
    breakdown = _table(
        ["model", f"coverage@{kmax}"]
        + [f"recall, items in popularity {p}" for p in pop_names]
        + ["recall, users with few train items"],
        breakdown_rows,
    )
    return f"""<!doctype html><html lang="en"><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>Multimodal recommendation report</title><style>{_CSS}</style>
<body><nav>{nav}</nav>
<h1>Multimodal recommendation report</h1>{warn}
<ul class="notes">{notes}</ul>
<h2 id="models">Models (test split, full ranking, training items masked)</h2>
{_table(["model"] + cols + ["best epoch", "s/epoch"], model_rows)}
{_metric_charts(inputs, colors)}
<h3>Coverage and where the hits are (test, @{kmax})</h3>
{breakdown}
<h3>Per-user metrics</h3>
{_histograms(inputs, colors)}
<h3>Paired significance (per-user test metrics)</h3>
{sig}
<h3>Training curves</h3>{_curves(inputs, colors)}
<h2 id="users">Example users</h2>
{_example_users(inputs)}
<h2 id="features">Features</h2>
{_table(FEATURE_COLUMNS, feat_rows)}
<p>Per feature table: sampled query items (left) with their nearest neighbours by cosine similarity,
and a 2-D map of a sample of the items coloured by category (hover a point for its title).</p>
{_galleries(inputs)}
<h3>Semantic IDs</h3>
{sid}
<h2 id="dataset">Dataset</h2>
<p>items: {c["items"]["input"]} in, {c["items"]["accepted"]} accepted, {c["items"]["rejected"]} rejected;
interactions: {c["interactions"]["input"]} in, {c["interactions"]["accepted"]} accepted,
{c["interactions"]["rejected"]} rejected; users: {c["users"]}.</p>
{_table(["split", "users", "items", "interactions", "density", "cold items"], split_rows)}
<h2 id="validation">Validation (Great Expectations)</h2>
{_table(["table", "rows", "expectations", "failed", "result"], val_rows)}
{_validation_chart(validation)}
<ul>{val_notes}</ul>
<h3>Drift against the previous snapshot</h3>
{drift_table}
{_drift_chart(drift)}
<h2 id="history">Runs</h2>
{_history(inputs, colors)}
</body></html>
"""
