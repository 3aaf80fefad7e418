"""Small server-side SVG charts for the admin: no JavaScript, no CDN, readable in any browser."""

from django.utils.html import escape
from django.utils.safestring import mark_safe

_LEGEND_CHARS = 60
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#4b5563")


def _ticks(low, high, count=5):
    if high == low:
        return [low]
    step = (high - low) / (count - 1)
    return [low + step * i for i in range(count)]


def _fmt(value):
    if abs(value) >= 1000 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.3g}"


def line_chart_svg(series, *, title, x_label="step", width=640, height=260, legend=None):
    """An SVG line chart of {label: [(x, y), ...]}, one coloured line and legend entry per label (the legend is
    left out for a single line unless `legend` is true)."""
    legend = len(series) > 1 if legend is None else legend
    points = [(x, y) for line in series.values() for x, y in line]
    if not points:
        return ""
    left, top, bottom = 56, 28, 40
    # Room for the legend beside the plot, as wide as its longest label (about 6 px a character).
    longest = max((len(str(label)[:_LEGEND_CHARS]) for label in series), default=0)
    right = int(min(40 + 6 * longest, width / 2)) if legend else 16
    plot_w, plot_h = width - left - right, height - top - bottom
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_min, x_max = min(xs), max(xs)
    y_min, y_max = min(ys), max(ys)
    if y_min == y_max:
        y_min, y_max = y_min - 0.5, y_max + 0.5
    pad = (y_max - y_min) * 0.05
    y_min, y_max = y_min - pad, y_max + pad

    def sx(x):
        return left + (plot_w * (x - x_min) / (x_max - x_min) if x_max != x_min else plot_w / 2)

    def sy(y):
        return top + plot_h * (1 - (y - y_min) / (y_max - y_min))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' role="img" aria-label="{escape(title)}" style="background:#fff;font:11px sans-serif">',
        f'<text x="{left}" y="16" font-weight="bold" font-size="12">{escape(title)}</text>',
    ]
    for tick in _ticks(y_min, y_max):
        y = sy(tick)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#374151">{_fmt(tick)}</text>')
    for tick in _ticks(x_min, x_max):
        x = sx(tick)
        parts.append(
            f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle" fill="#374151">{_fmt(tick)}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle" fill="#6b7280">'
        f"{escape(x_label)}</text>"
    )
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#9ca3af"/>')
    for index, (label, line) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(line))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{coords}"/>')
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
