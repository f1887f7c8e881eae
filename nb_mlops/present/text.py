"""Text for people: HTML escaping, terminal-safe strings, numbers and byte sizes."""

from __future__ import annotations

import html
import math
import unicodedata

__all__ = ["esc", "format_number", "format_size", "plain"]


def esc(value: object) -> str:
    """HTML-escape any value (quotes included: safe in attributes too)."""
    return html.escape(str(value), quote=True)


def plain(value: object, width: int | None = None) -> str:
    """Text for a terminal: control characters (escape sequences, newlines) become '?'."""
    text = "".join(
        "?" if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in str(value)
    )
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def format_number(value: float | None) -> str:
    """A metric for display: 4 significant digits, NaN spelled out, missing as blank."""
    if value is None:
        return ""
    if math.isnan(value):
        return "NaN"
    return f"{value:.4g}"


def format_size(n: int | None) -> str:
    """A byte count for display (`512 B`, `1.5 KB`, … `GB`), missing as `-`."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"  # pragma: no cover
