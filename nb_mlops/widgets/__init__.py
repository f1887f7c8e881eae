"""Notebook views (ipywidgets) over `nb_mlops.core`, each with an HTML/text fallback.

Modules here import ipywidgets only when a view is built, so importing them stays cheap. Every
user-supplied string (run names, params, tags) is escaped before it reaches HTML.
"""

from __future__ import annotations

__all__ = ["runs"]
