"""A self-contained HTML evaluation report: metrics of every model, with inline SVG plots.

:func:`build_report` turns an evaluation table (one row per model, flat keys such as
``"ndcg@10"``, as :meth:`recsys.pipeline.Pipeline.evaluate` gives) and optional extras
into one HTML page with no external assets: every plot is inline SVG drawn here, so the
report needs no plotting library, opens offline and can be attached to a ticket.

Sections: a summary of the artifact; the metrics table; accuracy per model (NDCG, recall
and precision at the largest cut-off); recall@k curves over the evaluated cut-offs;
catalogue coverage against average popularity of the recommended items (popularity bias);
the hybrid ranker's validation figures against its blend baseline and each candidate
source; and the training curves of models that record them (``history_``: SVD++, DeepFM,
DIN).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.errors import DataError

__all__ = ["build_report", "pipeline_extras", "write_report"]

_PALETTE = (
    "#4269d0",
    "#efb118",
    "#ff725c",
    "#6cc5b0",
    "#3ca951",
    "#ff8ab7",
    "#a463f2",
    "#97bbf5",
    "#9c6b4e",
    "#9498a0",
)
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#1d1d1f;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:.5rem 0}
.scroll{overflow-x:auto;max-width:100%}
th,td{padding:.25rem .6rem;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f6f6f8}
tr.best td{font-weight:600}.muted{color:#666}.grid{display:flex;flex-wrap:wrap;gap:1rem}
figure{margin:0}figcaption{color:#555;font-size:.9rem;max-width:520px}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: object, digits: int = 4) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value.is_integer() and abs(value) >= 100:
            return f"{int(value):,}"
        return f"{value:.{digits}f}"
    return _esc(value)


# ---------------------------------------------------------------------------- SVG
def _nice_max(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def _ticks(top: float, n: int = 4) -> list[float]:
    return [top * i / n for i in range(n + 1)]


def bar_chart(
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    width: int = 520,
    height: int = 280,
) -> str:
    """Grouped vertical bars: one group per entry of ``groups``, one bar per series."""
    left, right, bottom = 48, 12, 70
    top = 28 + 13 * (_legend_rows(list(series), left, width - right) - 1)
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if math.isfinite(v)]
    ymax = _nice_max(max(values, default=1.0))
    n_groups, n_series = max(len(groups), 1), max(len(series), 1)
    group_w = plot_w / n_groups
    bar_w = group_w * 0.8 / n_series
    parts = [_svg_open(width, height, title), _axis_y(left, top, plot_w, plot_h, ymax)]
    for s, (name, vals) in enumerate(series.items()):
        colour = _PALETTE[s % len(_PALETTE)]
        for g, v in enumerate(vals):
            if not math.isfinite(v):
                continue
            h = plot_h * v / ymax
            x = left + g * group_w + group_w * 0.1 + s * bar_w
            y = top + plot_h - h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{_esc(groups[g])} {_esc(name)}: {v:.4f}</title></rect>'
            )
    for g, label in enumerate(groups):
        x = left + (g + 0.5) * group_w
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 12}" font-size="11" text-anchor="end" '
            f'transform="rotate(-35 {x:.1f} {top + plot_h + 12})">{_esc(label)}</text>'
        )
    parts.append(_legend(list(series), left, 8 + 6, width - right))
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    y_label: str = "",
    width: int = 520,
    height: int = 280,
    log_x: bool = False,
) -> str:
    """Lines through ``(x, y)`` points, one per series, with markers."""
    left, right, bottom = 52, 12, 44
    top = 28 + 13 * (_legend_rows(list(series), left, width - right) - 1)
    plot_w, plot_h = width - left - right, height - top - bottom
    pts = [p for ps in series.values() for p in ps if math.isfinite(p[1])]
    if not pts:
        return ""
    xs = [p[0] for p in pts]

    def fx(x: float) -> float:
        return math.log10(x) if log_x else x

    xmin, xmax = fx(min(xs)), fx(max(xs))
    if xmax == xmin:
        xmax = xmin + 1
    ys = [p[1] for p in pts]
    ymin_raw, ymax_raw = min(ys), max(ys)
    ymin = 0.0 if ymin_raw >= 0 else -_nice_max(-ymin_raw)
    ymax = _nice_max(ymax_raw) if ymax_raw > 0 else 0.0
    if ymax == ymin:
        ymax = ymin + 1

    def px(x: float) -> float:
        return left + plot_w * (fx(x) - xmin) / (xmax - xmin)

    def py(y: float) -> float:
        return top + plot_h * (1 - (y - ymin) / (ymax - ymin))

    parts = [_svg_open(width, height, title)]
    for t in _ticks(ymax - ymin):
        y = py(ymin + t)
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{ymin + t:.3g}</text>"
        )
    for x in sorted(set(xs)):
        parts.append(
            f'<text x="{px(x):.1f}" y="{top + plot_h + 14}" font-size="10" '
            f'text-anchor="middle">{x:g}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" font-size="11" '
        f'text-anchor="middle">{_esc(x_label)}</text>'
    )
    if y_label:
        parts.append(
            f'<text x="12" y="{top + plot_h / 2:.1f}" font-size="11" text-anchor="middle" '
            f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">{_esc(y_label)}</text>'
        )
    for s, (name, ps) in enumerate(series.items()):
        colour = _PALETTE[s % len(_PALETTE)]
        good = [(x, y) for x, y in ps if math.isfinite(y)]
        if not good:
            continue
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in good)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in good:
            parts.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}">'
                f"<title>{_esc(name)} {x:g}: {y:.4f}</title></circle>"
            )
    parts.append(_legend(list(series), left, 8 + 6, width - right))
    parts.append("</svg>")
    return "".join(parts)


def scatter_chart(
    points: Mapping[str, tuple[float, float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 520,
    height: int = 300,
) -> str:
    """Labelled points (one per model)."""
    left, right, top, bottom = 56, 16, 28, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    good = {k: v for k, v in points.items() if all(math.isfinite(c) for c in v)}
    if not good:
        return ""
    xmax = _nice_max(max(v[0] for v in good.values()))
    ymax = _nice_max(max(v[1] for v in good.values()))
    parts = [_svg_open(width, height, title), _axis_y(left, top, plot_w, plot_h, ymax)]
    for t in _ticks(xmax):
        x = left + plot_w * t / xmax
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 14}" font-size="10" '
            f'text-anchor="middle">{t:.3g}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" font-size="11" '
        f'text-anchor="middle">{_esc(x_label)}</text>'
        f'<text x="12" y="{top + plot_h / 2:.1f}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">{_esc(y_label)}</text>'
    )
    for s, (name, (xv, yv)) in enumerate(good.items()):
        x = left + plot_w * xv / xmax
        y = top + plot_h * (1 - yv / ymax)
        colour = _PALETTE[s % len(_PALETTE)]
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{colour}">'
            f"<title>{_esc(name)}: {xv:.4g}, {yv:.4g}</title></circle>"
            f'<text x="{x + 7:.1f}" y="{y + 4:.1f}" font-size="11">{_esc(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _svg_open(width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}" '
        f'font-family="system-ui,sans-serif"><rect width="100%" height="100%" fill="#fff"/>'
        f'<text x="{width / 2:.0f}" y="16" font-size="13" font-weight="600" '
        f'text-anchor="middle">{_esc(title)}</text>'
    )


def _axis_y(left: int, top: int, plot_w: int, plot_h: int, ymax: float) -> str:
    parts = []
    for t in _ticks(ymax):
        y = top + plot_h * (1 - t / ymax)
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{t:.3g}</text>"
        )
    parts.append(
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#999"/>'
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" '
        f'stroke="#999"/>'
    )
    return "".join(parts)


def _legend_rows(names: Sequence[str], x0: int, width: int) -> int:
    """How many rows :func:`_legend` needs."""
    rows, x = 1, float(x0)
    for name in names:
        step = 22 + 6.5 * len(name)
        if x + step > width and x > x0:
            rows, x = rows + 1, float(x0)
        x += step
    return rows


def _legend(names: Sequence[str], x0: int, y0: int, width: int = 500) -> str:
    """Colour keys in rows, wrapped at ``width``."""
    parts, x, y = [], float(x0), float(y0)
    for s, name in enumerate(names):
        step = 22 + 6.5 * len(name)
        if x + step > width and x > x0:
            x, y = float(x0), y + 13
        colour = _PALETTE[s % len(_PALETTE)]
        parts.append(
            f'<rect x="{x:.0f}" y="{y + 8:.0f}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 13:.0f}" y="{y + 17:.0f}" font-size="11">{_esc(name)}</text>'
        )
        x += step
    return "".join(parts)


# ---------------------------------------------------------------------------- report
def _cutoffs(columns: Sequence[str], metric: str) -> list[int]:
    pat = re.compile(rf"^{re.escape(metric)}@(\d+)$")
    return sorted(int(m.group(1)) for c in columns if (m := pat.match(str(c))))


def _figure(svg: str, caption: str) -> str:
    if not svg:
        return ""
    return f"<figure>{svg}<figcaption>{_esc(caption)}</figcaption></figure>"


def _metrics_table(table: pd.DataFrame, columns: Sequence[str], best_by: str | None) -> str:
    best = None
    if best_by and best_by in table.columns and table[best_by].notna().any():
        best = str(table[best_by].astype(float).idxmax())
    head = "".join(f"<th>{_esc(c)}</th>" for c in ["model", *columns])
    rows = []
    for name, row in table.iterrows():
        cls = ' class="best"' if str(name) == best else ""
        cells = "".join(f"<td>{_fmt(_py(row.get(c)))}</td>" for c in columns)
        rows.append(f"<tr{cls}><td>{_esc(name)}</td>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _py(value: Any) -> Any:
    if value is None:
        return float("nan")
    if hasattr(value, "item"):
        return value.item()
    return value


def build_report(
    table: pd.DataFrame,
    *,
    title: str = "recsys evaluation",
    info: Mapping[str, Any] | None = None,
    histories: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
    ranker: Mapping[str, Any] | None = None,
    highlight: str | None = None,
    ks: Sequence[int] | None = None,
) -> str:
    """The HTML text of a self-contained evaluation report.

    Stability: provisional

    Parameters
    ----------
    table
        One row per model (index = name), flat metric columns (``"ndcg@10"``, ...), as
        :meth:`recsys.pipeline.Pipeline.evaluate` returns.
    title
        Page title.
    info
        ``label -> value`` pairs shown in the summary (artifact, version, data sizes).
    histories
        ``model -> history_`` (one dict of metrics per epoch) for the training curves.
    ranker
        The hybrid ranker's training metrics (``manifest.json`` ``metrics.ranker``).
    highlight
        Metric whose best row is shown in bold (default: ``ndcg@<main cut-off>``).
    ks
        Cut-offs shown in the metrics table; the smallest is the main cut-off of the
        accuracy and coverage plots. Default: every cut-off of the table (main: 10 when
        evaluated, else the largest). The recall@k curve always uses every cut-off.

    Returns
    -------
    str
        A complete HTML document.

    Raises
    ------
    DataError
        If the table is empty or has no ``@k`` metric.
    """
    if table.empty:
        raise DataError("build_report: the evaluation table is empty")
    columns = [str(c) for c in table.columns]
    available = _cutoffs(columns, "ndcg") or _cutoffs(columns, "recall")
    if not available:
        raise DataError(f"build_report: no metric@k column in {columns[:10]}")
    shown_ks = sorted(set(ks) & set(available)) if ks else available
    if not shown_ks:
        raise DataError(f"build_report: cut-offs {list(ks or [])} not in the table {available}")
    if ks:
        kmax = min(shown_ks)
    else:
        kmax = 10 if 10 in available else max(available)
    highlight = highlight or f"ndcg@{kmax}"
    models = [str(i) for i in table.index]

    def col(name: str) -> list[float]:
        if name not in table.columns:
            return [float("nan")] * len(models)
        return [float(_py(v)) for v in table[name].tolist()]

    body: list[str] = [f"<h1>{_esc(title)}</h1>"]
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    body.append(f'<p class="muted">Generated {stamp}; every plot is inline SVG.</p>')
    if info:
        rows = "".join(
            f"<tr><td>{_esc(k)}</td><td>{_fmt(_py(v))}</td></tr>" for k, v in info.items()
        )
        body.append(f"<h2>Summary</h2><table><tbody>{rows}</tbody></table>")
    shown = [
        c
        for c in columns
        if (m := re.match(r"^(ndcg|recall|precision|map|hit_rate|mrr|coverage|novelty)@(\d+)$", c))
        and int(m.group(2)) in shown_ks
    ]
    body.append("<h2>Metrics</h2>")
    body.append(f'<div class="scroll">{_metrics_table(table, shown or columns, highlight)}</div>')
    figs = []
    acc = {m: col(f"{m}@{kmax}") for m in ("ndcg", "recall", "precision") if f"{m}@{kmax}" in table}
    figs.append(
        _figure(
            bar_chart(models, acc, title=f"Accuracy at {kmax}"),
            f"NDCG, recall and precision at {kmax} per model (full ranking, seen items excluded).",
        )
    )
    rk = _cutoffs(columns, "recall")
    if len(rk) >= 2:
        curves = {m: [(k, col(f"recall@{k}")[i]) for k in rk] for i, m in enumerate(models)}
        figs.append(
            _figure(
                line_chart(curves, title="Recall@k", x_label="k", y_label="recall", log_x=True),
                "Recall at every evaluated cut-off.",
            )
        )
    cov, pop = f"coverage@{kmax}", f"avg_popularity@{kmax}"
    if cov in table and pop in table:
        pts = {m: (col(pop)[i], col(cov)[i]) for i, m in enumerate(models)}
        figs.append(
            _figure(
                scatter_chart(
                    pts,
                    title="Coverage and popularity bias",
                    x_label=f"average popularity of recommended items @{kmax}",
                    y_label=f"catalogue coverage @{kmax}",
                ),
                "Upper left is better: models that cover more of the catalogue and lean less "
                "on popular items.",
            )
        )
    elif cov in table:
        figs.append(_figure(bar_chart(models, {cov: col(cov)}, title="Coverage"), cov))
    body.append(
        f'<h2>Accuracy, recall curves and coverage</h2><div class="grid">{"".join(figs)}</div>'
    )
    if ranker:
        body.append(_ranker_section(ranker))
    if histories:
        body.append(_training_section(histories))
    doc = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        + "".join(body)
        + "</body></html>\n"
    )
    return doc


def _ranker_section(ranker: Mapping[str, Any]) -> str:
    parts = ["<h2>Hybrid ranker</h2>"]
    keys = [
        ("learner", "learner"),
        ("n_training_users", "training users"),
        ("n_holdout_users", "held-out users"),
        ("n_training_rows", "training rows (candidates)"),
        ("n_training_positives", "positives"),
        ("candidates_per_user", "candidates per user"),
        ("candidate_recall", "candidate recall of the label slice"),
        ("n_features", "features"),
        ("n_trees", "trees"),
    ]
    rows = "".join(
        f"<tr><td>{_esc(label)}</td><td>{_fmt(ranker[k])}</td></tr>"
        for k, label in keys
        if k in ranker
    )
    parts.append(f"<table><tbody>{rows}</tbody></table>")
    ndcg = {}
    if "holdout_ndcg@10" in ranker:
        ndcg["ranker"] = float(ranker["holdout_ndcg@10"])
    for key, value in ranker.items():
        m = re.match(r"^holdout_(.+)_ndcg@10$", str(key))
        if m:
            ndcg[m.group(1).removeprefix("source:")] = float(value)
    if ndcg:
        parts.append(
            _figure(
                bar_chart(list(ndcg), {"ndcg@10": list(ndcg.values())}, title="Validation NDCG@10"),
                "On the held-out users' label slices (the latest interactions of the training "
                "data), within the retrieved candidates: the learned ranker, the reciprocal-"
                "rank blend (baseline) and each candidate source alone.",
            )
        )
    return "".join(parts)


def _training_section(histories: Mapping[str, Sequence[Mapping[str, float]]]) -> str:
    figs = []
    for name, history in histories.items():
        if not history:
            continue
        keys = [k for k in history[0] if k not in ("epoch", "seconds", "learning_rate")]
        series = {
            k: [
                (float(h.get("epoch", i + 1)), float(h.get(k, float("nan"))))
                for i, h in enumerate(history)
            ]
            for k in keys
        }
        figs.append(
            _figure(
                line_chart(series, title=f"{name} training", x_label="epoch"),
                f"{name}: per-epoch metrics recorded during training (history_).",
            )
        )
    if not figs:
        return ""
    return f'<h2>Training curves</h2><div class="grid">{"".join(figs)}</div>'


def pipeline_extras(pipe: Any) -> dict[str, Any]:
    """The ``info``, ``histories`` and ``ranker`` arguments of :func:`build_report` for a
    loaded :class:`~recsys.pipeline.Pipeline`."""
    manifest = getattr(pipe, "manifest", {}) or {}
    data = manifest.get("data", {})
    info: dict[str, Any] = {
        "version": pipe.version,
        "components": ", ".join(pipe.components),
        "default answer": pipe.primary,
        "users": data.get("n_users", len(pipe.user_map)),
        "items": data.get("n_items", len(pipe.item_map)),
        "training interactions": data.get("n_interactions", ""),
    }
    skipped = manifest.get("skipped_components") or {}
    if skipped:
        info["skipped components"] = "; ".join(f"{k}: {v}" for k, v in skipped.items())
    histories = {
        name: list(getattr(model, "history_", []) or [])
        for name, model in pipe.models.items()
        if getattr(model, "history_", None)
    }
    ranker = (manifest.get("metrics") or {}).get("ranker") or {}
    return {"info": info, "histories": histories, "ranker": ranker}


def write_report(path: Path, table: pd.DataFrame, **kwargs: Any) -> Path:
    """Write :func:`build_report` to ``path`` (UTF-8); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_report(table, **kwargs), encoding="utf-8")
    return path
