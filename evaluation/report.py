"""The HTML report: one page with the dataset, features, validation and model metrics.

``render`` takes the loaded inputs (``ReportInputs``) and returns the page; the report
stage reads them from the store and reports folder.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ReportInputs:
    """Everything the page shows, as loaded JSON (no paths)."""

    ks: list[int]
    metrics: dict[str, Any]
    ingest: dict[str, Any]
    validation: dict[str, Any]
    trained: dict[str, Any]
    features: dict[str, dict[str, Any]]  # feature name -> its table's manifest
    curves: dict[str, list[dict[str, Any]]]  # model -> per-epoch rows
    significance: dict[str, Any] = field(default_factory=dict)
    semantic_ids: dict[str, dict[str, Any]] = field(default_factory=dict)  # table name -> its manifest


def _table(header: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _curves_png(curves: dict[str, list[dict[str, Any]]]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for model, rows in sorted(curves.items()):
        rows = [r for r in rows if r.get("valid_recall@20") is not None]
        ax.plot([r["epoch"] for r in rows], [r["valid_recall@20"] for r in rows], label=model)
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid Recall@20")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render(inputs: ReportInputs) -> str:
    metrics, ingest, validation, trained = inputs.metrics, inputs.ingest, inputs.validation, inputs.trained
    ks = inputs.ks
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
    sig_rows = []
    if inputs.significance:
        for r in inputs.significance.get("pairs", []):
            sig_rows.append(
                [
                    f"{r['a']} vs {r['b']}",
                    r["metric"],
                    r["diff"],
                    f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]",
                    f"{r['p_wilcoxon_holm']:.2g}",
                    "yes" if r["significant"] else "no",
                ]
            )
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
                m["counts"]["rejected"],
            ]
        )
        if m.get("random_weights"):
            warnings.append(
                f"Feature <b>{html.escape(name)}</b> was produced with RANDOMLY INITIALISED "
                f"weights ({html.escape(str(m.get('weights')))}): its vectors carry no pretrained "
                "semantics. Give a pretrained tag or checkpoint path for real use."
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
    drift_rows = [
        [
            t,
            d.get("status"),
            d.get("reason") or "",
            *(d.get("shares", {}).get(k, "") for k in ("added", "removed", "changed")),
            d.get("checks", {}).get("min_unchanged_cosine", {}).get("value", ""),
        ]
        for t, d in (validation.get("drift") or {}).items()
    ]
    issues = [f"FAIL: {ln}" for ln in validation.get("failures", [])]
    issues += [f"warn: {ln}" for ln in validation.get("warnings", [])]
    val_notes = "".join(f"<li>{html.escape(ln)}</li>" for ln in issues) or "<li>no failures or warnings</li>"
    png = _curves_png(inputs.curves)
    img = f'<img src="data:image/png;base64,{png}">' if png else ""
    warn = "".join(f'<p class="warn">{w}</p>' for w in warnings)
    return f"""<!doctype html><meta charset=utf-8><title>Multimodal recommendation report</title>
<style>body{{font-family:sans-serif;max-width:1100px}} td,th{{padding:2px 8px;border-bottom:1px solid #ddd;
text-align:right}} .warn{{background:#fec;padding:6px;border-left:4px solid #e80}}</style>
<h1>Multimodal recommendation report</h1>{warn}
<h2>Models (test split, full ranking, training items masked)</h2>
{_table(["model"] + cols + ["best epoch", "s/epoch"], model_rows)}
<h3>Coverage and where the hits are (test, @{kmax})</h3>
{
        _table(
            ["model", f"coverage@{kmax}"]
            + [f"recall, items in popularity {p}" for p in pop_names]
            + ["recall, users with few train items"],
            breakdown_rows,
        )
    }
<h3>Paired significance (per-user test metrics)</h3>
{
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
    }
<h2>Training curves</h2>{img}
<h2>Dataset</h2>
<p>items: {c["items"]["input"]} in, {c["items"]["accepted"]} accepted, {c["items"]["rejected"]} rejected;
interactions: {c["interactions"]["input"]} in, {c["interactions"]["accepted"]} accepted,
{c["interactions"]["rejected"]} rejected; users: {c["users"]}.</p>
{_table(["split", "users", "items", "interactions", "density", "cold items"], split_rows)}
<h2>Features</h2>
{_table(["feature", "encoder", "weights", "dim", "L2-normalised", "embedded", "rejected"], feat_rows)}
<h2>Semantic IDs</h2>
{
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
    }
<h2>Validation (Great Expectations)</h2>
{_table(["table", "rows", "expectations", "failed", "result"], val_rows)}
<ul>{val_notes}</ul>
<h3>Drift against the previous snapshot</h3>
{
        _table(
            ["feature", "status", "reason", "added", "removed", "changed", "min unchanged cosine"], drift_rows
        )
        if drift_rows
        else "<p>no drift checks ran</p>"
    }
"""
