"""Small server-side SVG charts for the admin: no JavaScript, no CDN, readable in any browser."""

import math

from django.utils.html import escape
from django.utils.safestring import mark_safe

_LEGEND_CHARS = 60
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#4b5563")


def _ticks(low, high, count=5):
    if high == low:
        return [low]
    step = (high - low) / (count - 1)
    return [low + step * i for i in range(count)]


def _nice_ticks(low, high, count=6):
    """About `count` ticks on round numbers (1, 2, 2.5 or 5 times a power of ten) covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / (count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks, tick = [], first
    while tick <= high + step * 1e-9:
        ticks.append(round(tick, 12))
        tick += step
    return ticks


def _fmt(value):
    if abs(value) >= 1000 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.3g}"


def line_chart_svg(
    series,
    *,
    title,
    x_label="step",
    y_label="",
    width=640,
    height=260,
    thresholds=(),
    y_range=None,
    x_format=None,
    dashed=(),
    legend=None,
):
    """An SVG line chart of {label: [(x, y), ...]}, one coloured line and legend entry per label.

    `thresholds`: (value, label) pairs drawn as dotted black lines across the plot; `y_range`: (low, high) to
    fix the axis (None on either side: from the data); `x_format`: how an x tick reads (times, say);
    `dashed`: labels of the series drawn dashed (an estimate beside the measured line); `legend`: whether to
    draw the legend (default: only for more than one line).
    """
    legend = len(series) > 1 if legend is None else legend
    points = [(x, y) for line in series.values() for x, y in line if y is not None]
    if not points:
        return ""
    series = {label: [(x, y) for x, y in line if y is not None] for label, line in series.items()}
    x_format = x_format or _fmt
    left, top, bottom = 64 if y_label else 56, 28, 40
    # Room for the legend beside the plot, as wide as its longest label (about 6 px a character).
    longest = max((len(str(label)[:_LEGEND_CHARS]) for label in series), default=0)
    right = int(min(40 + 6 * longest, width / 2)) if legend else 36
    plot_w, plot_h = width - left - right, height - top - bottom
    xs, ys = [p[0] for p in points], [p[1] for p in points] + [value for value, _ in thresholds]
    x_min, x_max = min(xs), max(xs)
    y_min, y_max = min(ys), max(ys)
    if y_min == y_max:
        y_min, y_max = y_min - 0.5, y_max + 0.5
    pad = (y_max - y_min) * 0.05
    y_min, y_max = y_min - pad, y_max + pad
    fixed_low, fixed_high = y_range if y_range is not None else (None, None)
    y_min = fixed_low if fixed_low is not None else y_min
    y_max = fixed_high if fixed_high is not None else y_max
    # Stretch the free ends to round numbers, so the axis starts and ends on a labelled tick.
    ticks = _nice_ticks(y_min, y_max)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 0
    if step:
        y_min = y_min if fixed_low is not None else math.floor(y_min / step + 1e-9) * step
        y_max = y_max if fixed_high is not None else math.ceil(y_max / step - 1e-9) * step

    def sx(x):
        return left + (plot_w * (x - x_min) / (x_max - x_min) if x_max != x_min else plot_w / 2)

    def sy(y):
        return top + plot_h * (1 - (y - y_min) / (y_max - y_min))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' role="img" aria-label="{escape(title)}" style="background:#fff;font:11px sans-serif">',
        f'<text x="{left}" y="16" font-weight="bold" font-size="12">{escape(title)}</text>',
    ]
    for tick in _nice_ticks(y_min, y_max):
        y = sy(tick)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#374151">{_fmt(tick)}</text>')
    for tick in _ticks(x_min, x_max):
        x = sx(tick)
        parts.append(
            f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle" fill="#374151">'
            f"{escape(x_format(tick))}</text>"
        )
    if y_label:
        parts.append(
            f'<text transform="translate(12 {top + plot_h / 2:.0f}) rotate(-90)" text-anchor="middle" '
            f'fill="#6b7280">{escape(y_label)}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle" fill="#6b7280">'
        f"{escape(x_label)}</text>"
    )
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#9ca3af"/>')
    for value, label in thresholds:
        y = sy(value)
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#111827" '
            f'stroke-width="1.5" stroke-dasharray="2 3"/>'
            f'<text x="{left + plot_w - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#111827" stroke="#fff" '
            f'stroke-width="3" paint-order="stroke">{escape(label)}</text>'
        )
    for index, (label, line) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        if not line:
            continue
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(line))
        dash = ' stroke-dasharray="5 3"' if label in dashed else ""
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{coords}"/>')
        if len(line) == 1:
            x, y = line[0]
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>')
        if legend:
            legend_x, legend_y = width - right + 10, top + 10 + 14 * index
            parts.append(f'<rect x="{legend_x}" y="{legend_y - 9}" width="10" height="10" fill="{color}"/>')
            text = escape(str(label)[:_LEGEND_CHARS])
            parts.append(f'<text x="{legend_x + 14}" y="{legend_y}" fill="#111827">{text}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))


def histogram_svg(edges, counts, *, title, width=220, height=90):
    """A small SVG bar chart of a histogram (len(edges) == len(counts) + 1)."""
    if not counts or len(edges) != len(counts) + 1:
        return ""
    top, bottom = 16, 16
    plot_h = height - top - bottom
    peak = max(counts) or 1
    bar_w = width / len(counts)
    bars = "".join(
        f'<rect x="{i * bar_w + 1:.1f}" y="{top + plot_h - plot_h * c / peak:.1f}" width="{bar_w - 2:.1f}" '
        f'height="{plot_h * c / peak:.1f}" fill="{PALETTE[0]}"><title>{_fmt(edges[i])} – {_fmt(edges[i + 1])}: '
        f"{c}</title></rect>"
        for i, c in enumerate(counts)
    )
    return mark_safe(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}"><text x="0" y="11" font-size="11">{escape(title)}</text>{bars}'
        f'<text x="0" y="{height - 3}" font-size="10" fill="#6b7280">{_fmt(edges[0])}</text>'
        f'<text x="{width}" y="{height - 3}" font-size="10" fill="#6b7280" text-anchor="end">{_fmt(edges[-1])}</text>'
        "</svg>"
    )


def _svg_open(width, height, title):
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' role="img" aria-label="{escape(title)}" style="background:#fff;font:11px sans-serif">'
        f'<text x="8" y="16" font-weight="bold" font-size="12">{escape(title)}</text>'
    )


def _legend(labels, *, x, y):
    parts = []
    for index, label in enumerate(labels):
        color = PALETTE[index % len(PALETTE)]
        parts.append(f'<rect x="{x}" y="{y + 14 * index - 9}" width="10" height="10" fill="{color}"/>')
        text = escape(str(label)[:_LEGEND_CHARS])
        parts.append(f'<text x="{x + 14}" y="{y + 14 * index}" fill="#111827">{text}</text>')
    return "".join(parts)


def bar_chart_svg(categories, series, *, title, x_label="", y_label="", width=640, height=240, percent=False):
    """Grouped bars: for each category on the x axis one bar per series ({label: [value per category]}),
    a y axis with gridlines and its unit, and a legend when there is more than one series.
    `percent`: the values are shares (0 to 1), shown as percentages."""
    values = [v for line in series.values() for v in line if v is not None]
    if not categories or not values:
        return ""
    longest = max((len(str(label)[:_LEGEND_CHARS]) for label in series), default=0)
    left, top, bottom = 64, 28, 44
    right = int(min(40 + 6 * longest, width / 3)) if len(series) > 1 else 16
    plot_w, plot_h = width - left - right, height - top - bottom
    ticks = _nice_ticks(0, max(values) or 1)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1
    peak = math.ceil((max(values) or 1) / step - 1e-9) * step
    ticks = _nice_ticks(0, peak)

    def fmt(value):
        return f"{value:.0%}" if percent else _fmt(value)

    parts = [_svg_open(width, height, title)]
    for tick in ticks:
        y = top + plot_h * (1 - tick / peak)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#374151">{fmt(tick)}</text>')
    group_w = plot_w / len(categories)
    bar_w = max(group_w * 0.8 / len(series), 1)
    # Label every category when they fit (about 6 px a character), else every n-th.
    widest = max(len(str(c)) for c in categories) * 6 + 4
    label_every = max(1, int(widest // group_w) + 1) if widest > group_w else 1
    for i, category in enumerate(categories):
        x0 = left + group_w * i + group_w * 0.1
        for j, (label, line) in enumerate(series.items()):
            value = line[i] if i < len(line) else None
            if value is None:
                continue
            h = plot_h * value / peak
            color = PALETTE[j % len(PALETTE)]
            parts.append(
                f'<rect x="{x0 + bar_w * j:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 1:.1f}" height="{h:.1f}"'
                f' fill="{color}"><title>{escape(str(label))} {escape(str(category))}: {fmt(value)}</title></rect>'
            )
        if i % label_every == 0:
            parts.append(
                f'<text x="{left + group_w * (i + 0.5):.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                f'fill="#374151">{escape(str(category)[:16])}</text>'
            )
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#9ca3af"/>')
    if x_label:
        parts.append(
            f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle" fill="#6b7280">'
            f"{escape(x_label)}</text>"
        )
    if y_label:
        parts.append(
            f'<text transform="translate(12 {top + plot_h / 2:.0f}) rotate(-90)" text-anchor="middle" '
            f'fill="#6b7280">{escape(y_label)}</text>'
        )
    if len(series) > 1:
        parts.append(_legend(series, x=width - right + 10, y=top + 10))
    parts.append("</svg>")
    return mark_safe("".join(parts))


def _heat_color(severity):
    """White (no sign of drift) through amber to red (at and beyond the threshold)."""
    severity = max(0.0, min(severity, 1.0))
    if severity < 0.5:
        t = severity / 0.5
        r, g, b = 255, int(255 - (255 - 221) * t), int(255 - (255 - 120) * t)
    else:
        t = (severity - 0.5) / 0.5
        r, g, b = int(253 - (253 - 220) * t), int(221 - (221 - 38) * t), int(120 - (120 - 38) * t)
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap_svg(rows, columns, cells, *, title, legend, width=980, cell_h=22):
    """Rows (features) × columns (times): `cells[(row, column)]` is (severity 0..1, drifted, tooltip) or absent.
    Severity 1 is the threshold; drifted cells carry a cross. `legend`: what the colour means."""
    if not rows or not columns or not cells:
        return ""
    label_w = min(8 + 7 * max(len(str(r)) for r in rows), 200)
    top, bottom = 28, 56
    plot_w = width - label_w - 16
    cell_w = plot_w / len(columns)
    height = top + cell_h * len(rows) + bottom
    parts = [_svg_open(width, height, title)]
    for i, row in enumerate(rows):
        y = top + cell_h * i
        parts.append(
            f'<text x="{label_w - 6}" y="{y + cell_h / 2 + 4:.1f}" text-anchor="end" fill="#111827">'
            f"{escape(str(row))}</text>"
        )
        for j, column in enumerate(columns):
            x = label_w + cell_w * j
            cell = cells.get((row, column))
            if cell is None:
                parts.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{cell_w:.1f}" height="{cell_h}" fill="#f3f4f6" '
                    f'stroke="#fff"><title>{escape(str(row))} {escape(str(column))}: not tested</title></rect>'
                )
                continue
            severity, drifted, tip = cell
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{cell_w:.1f}" height="{cell_h}" fill="{_heat_color(severity)}" '
                f'stroke="#fff"><title>{escape(tip)}</title></rect>'
            )
            if drifted:
                cx, cy, d = x + cell_w / 2, y + cell_h / 2, min(cell_w, cell_h) * 0.25
                parts.append(
                    f'<path d="M{cx - d:.1f},{cy - d:.1f}L{cx + d:.1f},{cy + d:.1f}M{cx - d:.1f},{cy + d:.1f}'
                    f'L{cx + d:.1f},{cy - d:.1f}" stroke="#fff" stroke-width="2"/>'
                )
    base = top + cell_h * len(rows)
    label_every = max(1, int(70 // cell_w) + 1) if cell_w < 70 else 1
    for j, column in enumerate(columns):
        if j % label_every == 0 or j == len(columns) - 1 and len(columns) == 1:
            parts.append(
                f'<text x="{label_w + cell_w * (j + 0.5):.1f}" y="{base + 14}" text-anchor="middle" '
                f'fill="#374151">{escape(str(column))}</text>'
            )
    # The colour scale: from no drift to the threshold and beyond, and what the cross means.
    scale_y = base + 28
    for k in range(11):
        parts.append(
            f'<rect x="{label_w + 18 * k}" y="{scale_y}" width="18" height="10" fill="{_heat_color(k / 10)}" '
            f'stroke="#e5e7eb"/>'
        )
    parts.append(
        f'<text x="{label_w + 18 * 11 + 8}" y="{scale_y + 9}" fill="#374151">{escape(legend)}; '
        f"× drifted; grey: not tested</text>"
    )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def sparkline_svg(values, *, title, width=120, height=28):
    """A tiny line of values (hourly traffic, say) with no axes, for a table cell; the title gives the range."""
    values = [v for v in values if v is not None]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1
    step = width / max(len(values) - 1, 1)
    coords = " ".join(
        f"{step * i:.1f},{height - 3 - (height - 6) * (v - low) / span:.1f}" for i, v in enumerate(values)
    )
    return mark_safe(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<polyline fill="none" stroke="{PALETTE[0]}" stroke-width="1.5" points="{coords}"/></svg>'
    )
