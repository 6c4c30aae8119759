"""Small inline-SVG charts for the report: lines, grouped bars and a scatter map.

Hand-written SVG keeps the page self-contained, small and fast to build (no plotting
library to import, no raster images); every chart is a string of markup with its data
values in ``<title>`` tooltips.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

# Tableau 10 + two greys: distinct on screen and in print.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#393b79",
    "#637939",
)
OTHER = "#c7c7c7"

_W, _H = 440, 250
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 52, 12, 26, 42


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _num(v: float) -> str:
    """Compact coordinates (one decimal) keep maps with thousands of points small."""
    return f"{v:.1f}".rstrip("0").rstrip(".")


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _tick_label(v: float) -> str:
    return f"{v:.3g}"


def _frame(title: str, body: str, legend: Sequence[tuple[str, str]] = (), width: int = _W) -> str:
    items = "".join(f'<span class="lg"><i style="background:{c}"></i>{_e(name)}</span>' for name, c in legend)
    return (
        f'<figure class="chart"><svg viewBox="0 0 {width} {_H}" width="{width}" height="{_H}" role="img">'
        f"<title>{_e(title)}</title>"
        f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" class="ct">{_e(title)}</text>{body}</svg>'
        + (f"<figcaption>{items}</figcaption>" if items else "")
        + "</figure>"
    )


def _axes(y_ticks: list[float], sy, x0: float, x1: float, y_label: str) -> str:
    out = []
    for t in y_ticks:
        y = sy(t)
        out.append(
            f'<line x1="{x0}" x2="{x1}" y1="{_num(y)}" y2="{_num(y)}" class="grid"/>'
            f'<text x="{x0 - 4}" y="{_num(y + 3)}" text-anchor="end">{_tick_label(t)}</text>'
        )
    mid = (_PAD_T + _H - _PAD_B) / 2
    out.append(
        f'<text transform="translate(12 {mid:.0f}) rotate(-90)" text-anchor="middle">{_e(y_label)}</text>'
    )
    return "".join(out)


def line_chart(
    series: dict[str, Sequence[tuple[float, float | None]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_names: Sequence[str] | None = None,
    colors: dict[str, str] | None = None,
) -> str:
    """One line with point markers per series. ``x_names``: categorical x (positions 0..n-1
    labelled by name, e.g. snapshot ids); otherwise x is numeric."""
    colors = colors or {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(series)}
    pts = [(x, y) for s in series.values() for x, y in s if y is not None and math.isfinite(y)]
    if not pts:
        return _frame(title, '<text x="50%" y="50%" text-anchor="middle">no data</text>')
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    y_ticks = nice_ticks(min(0.0, min(ys)), max(ys))
    x_lo, x_hi = (0.0, max(1.0, len(x_names) - 1.0)) if x_names else (min(xs), max(xs))
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    x0, x1, y0, y1 = _PAD_L, _W - _PAD_R, _H - _PAD_B, _PAD_T

    def sx(v: float) -> float:
        return x0 + (v - x_lo) / (x_hi - x_lo) * (x1 - x0)

    def sy(v: float) -> float:
        return y0 - (v - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (y0 - y1)

    body = [_axes(y_ticks, sy, x0, x1, y_label)]
    if x_names:
        step = max(1, math.ceil(len(x_names) / 8))
        for i, name in enumerate(x_names):
            if i % step == 0:
                body.append(f'<text x="{_num(sx(i))}" y="{y0 + 14}" text-anchor="middle">{_e(name)}</text>')
    else:
        for t in nice_ticks(x_lo, x_hi, 6):
            if x_lo <= t <= x_hi:
                body.append(
                    f'<text x="{_num(sx(t))}" y="{y0 + 14}" text-anchor="middle">{_tick_label(t)}</text>'
                )
    body.append(f'<text x="{(x0 + x1) / 2:.0f}" y="{_H - 8}" text-anchor="middle">{_e(x_label)}</text>')
    for name, s in series.items():
        c = colors[name]
        good = [(x, y) for x, y in s if y is not None and math.isfinite(y)]
        if len(good) > 1:
            path = " ".join(f"{_num(sx(x))},{_num(sy(y))}" for x, y in good)
            body.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in good:
            label = x_names[int(x)] if x_names else _tick_label(x)
            body.append(
                f'<circle cx="{_num(sx(x))}" cy="{_num(sy(y))}" r="3" fill="{c}">'
                f"<title>{_e(name)} {_e(label)}: {y:.4g}</title></circle>"
            )
    return _frame(title, "".join(body), [(n, colors[n]) for n in series])


def bar_chart(
    groups: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    title: str,
    y_label: str,
    x_label: str = "",
    colors: dict[str, str] | None = None,
    y_max: float | None = None,
) -> str:
    """Grouped bars: one group per ``groups`` entry, one bar per series inside it."""
    colors = colors or {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(series)}
    vals = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    if not groups or not vals:
        return _frame(title, '<text x="50%" y="50%" text-anchor="middle">no data</text>')
    width = max(_W, _PAD_L + _PAD_R + len(groups) * max(24, 8 * len(series) + 8))
    y_ticks = nice_ticks(min(0.0, min(vals)), y_max if y_max is not None else max(vals))
    x0, x1, y0, y1 = _PAD_L, width - _PAD_R, _H - _PAD_B, _PAD_T

    def sy(v: float) -> float:
        return y0 - (v - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (y0 - y1)

    body = [_axes(y_ticks, sy, x0, x1, y_label)]
    gw = (x1 - x0) / len(groups)
    bw = gw * 0.8 / max(1, len(series))
    for g, gname in enumerate(groups):
        gx = x0 + g * gw + gw * 0.1
        body.append(
            f'<text x="{_num(x0 + (g + 0.5) * gw)}" y="{y0 + 14}" text-anchor="middle">{_e(gname)}</text>'
        )
        for j, (name, s) in enumerate(series.items()):
            v = s[g] if g < len(s) else None
            if v is None or not math.isfinite(v):
                continue
            top, base = sy(max(v, 0.0)), sy(min(v, 0.0))
            body.append(
                f'<rect x="{_num(gx + j * bw)}" y="{_num(top)}" width="{_num(max(bw - 1, 1))}" '
                f'height="{_num(max(base - top, 0.5))}" fill="{colors[name]}">'
                f"<title>{_e(name)} {_e(gname)}: {v:.4g}</title></rect>"
            )
    if x_label:
        body.append(f'<text x="{(x0 + x1) / 2:.0f}" y="{_H - 8}" text-anchor="middle">{_e(x_label)}</text>')
    legend = [(n, colors[n]) for n in series] if len(series) > 1 or x_label else []
    return _frame(title, "".join(body), legend, width)


def scatter_map(
    xy: Sequence[tuple[float, float]],
    classes: Sequence[int],
    titles: Sequence[str],
    legend: Sequence[tuple[str, str]],
    *,
    title: str,
    uid: str,
    size: int = 400,
) -> str:
    """Points coloured by class (index into ``legend``: (name, colour)); each point's title
    shows on hover. Axes carry no units (a projection), so none are drawn. ``uid`` prefixes
    the colour classes so two maps on one page never share a rule."""
    if not xy:
        return _frame(title, '<text x="50%" y="50%" text-anchor="middle">no items</text>')
    xs = sorted(p[0] for p in xy)
    ys = sorted(p[1] for p in xy)
    # The central 99% sets the frame (outliers are pinned to its edge), so a few far
    # points do not squash the rest into a corner.
    cut = len(xs) // 200
    lo_x, hi_x, lo_y, hi_y = xs[cut], xs[-1 - cut], ys[cut], ys[-1 - cut]
    span = max(hi_x - lo_x, hi_y - lo_y) or 1.0
    pad = 10
    inner = size - 2 * pad

    def sx(v: float) -> float:
        v = min(max(v, lo_x), hi_x)
        return pad + (v - lo_x) / span * inner + (inner - (hi_x - lo_x) / span * inner) / 2

    def sy(v: float) -> float:
        v = min(max(v, lo_y), hi_y)
        return size - pad - (v - lo_y) / span * inner - (inner - (hi_y - lo_y) / span * inner) / 2

    style = "".join(f".{uid}{i}{{fill:{c}}}" for i, (_, c) in enumerate(legend))
    dots = "".join(
        f'<circle class="{uid}{c}" cx="{_num(sx(x))}" cy="{_num(sy(y))}" r="2.6">'
        f"<title>{_e(t)}</title></circle>"
        for (x, y), c, t in zip(xy, classes, titles, strict=True)
    )
    items = "".join(f'<span class="lg"><i style="background:{c}"></i>{_e(n)}</span>' for n, c in legend)
    return (
        f'<figure class="chart map"><svg viewBox="0 0 {size} {size}" width="{size}" height="{size}"'
        ' role="img">'
        f"<title>{_e(title)}</title><style>{style}</style>"
        f'<rect width="{size}" height="{size}" fill="#fafafa"/>{dots}</svg>'
        f'<figcaption style="max-width:{size}px"><strong>{_e(title)}</strong><br/>{items}'
        "</figcaption></figure>"
    )


def stacked_hbar(
    rows: Sequence[str],
    series: dict[str, Sequence[float]],
    *,
    title: str,
    x_label: str,
    colors: dict[str, str] | None = None,
) -> str:
    """One horizontal bar per row, split into the series' segments (e.g. passed / failed)."""
    colors = colors or {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(series)}
    totals = [sum(float(s[r] or 0) for s in series.values()) for r in range(len(rows))]
    if not rows or not any(totals):
        return _frame(title, '<text x="50%" y="50%" text-anchor="middle">no data</text>')
    label_w = min(220, 12 + 6 * max(len(r) for r in rows))
    bar_h, gap, top = 16, 6, _PAD_T + 4
    height = top + len(rows) * (bar_h + gap) + 36
    width = _W + label_w - _PAD_L
    x0, x1 = label_w, width - _PAD_R
    ticks = nice_ticks(0.0, max(totals))

    def sx(v: float) -> float:
        return x0 + v / ticks[-1] * (x1 - x0)

    body = []
    for t in ticks:
        body.append(
            f'<line x1="{_num(sx(t))}" x2="{_num(sx(t))}" y1="{top - 4}" y2="{height - 30}" class="grid"/>'
            f'<text x="{_num(sx(t))}" y="{height - 18}" text-anchor="middle">{_tick_label(t)}</text>'
        )
    for r, name in enumerate(rows):
        y = top + r * (bar_h + gap)
        body.append(f'<text x="{x0 - 4}" y="{y + bar_h - 4}" text-anchor="end">{_e(name)}</text>')
        left = 0.0
        for sname, s in series.items():
            v = float(s[r] or 0)
            if v <= 0:
                continue
            body.append(
                f'<rect x="{_num(sx(left))}" y="{y}" width="{_num(sx(left + v) - sx(left))}" '
                f'height="{bar_h}" fill="{colors[sname]}">'
                f"<title>{_e(name)} {_e(sname)}: {v:.4g}</title></rect>"
            )
            left += v
    body.append(f'<text x="{(x0 + x1) / 2:.0f}" y="{height - 4}" text-anchor="middle">{_e(x_label)}</text>')
    items = "".join(f'<span class="lg"><i style="background:{colors[n]}"></i>{_e(n)}</span>' for n in series)
    return (
        f'<figure class="chart"><svg viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        f' role="img"><title>{_e(title)}</title>'
        f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" class="ct">{_e(title)}</text>'
        f"{''.join(body)}</svg><figcaption>{items}</figcaption></figure>"
    )
