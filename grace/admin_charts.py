"""Small inline SVG bar charts for the admin dashboard (no JavaScript, no library).

Every number is formatted here and every label escaped by ``format_html``.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH = 360
HEIGHT = 64
TOP = 12


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def svg_bars(
    values: Sequence[float],
    *,
    labels: Sequence[str],
    title: str,
    unit: str = "",
    color: str = "#417690",
    peak: float | None = None,
) -> SafeString:
    """One bar per bucket, scaled to the largest value (or ``peak``); each bar has a
    tooltip with its bucket's start time and value."""
    count = max(1, len(values))
    top = peak if peak is not None else max(values, default=0.0)
    scale = (HEIGHT - TOP) / top if top > 0 else 0.0
    step = WIDTH / count
    bars = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{} {}{}</title></rect>',
        (
            (
                f"{i * step:.2f}", f"{HEIGHT - value * scale:.2f}", f"{max(step - 1, 1):.2f}",
                f"{value * scale:.2f}", color, label, _number(value), unit,
            )
            for i, (value, label) in enumerate(zip(values, labels, strict=False))
        ),
    )
    return format_html(
        '<svg class="grace-chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        'aria-label="{title}"><line x1="0" y1="{h}" x2="{w}" y2="{h}" stroke="#ccc"/>{bars}'
        '<text x="2" y="9" font-size="9" fill="#666">max {top}{unit}</text></svg>',
        w=WIDTH, h=HEIGHT, title=title, bars=bars, top=_number(top), unit=unit,
    )
