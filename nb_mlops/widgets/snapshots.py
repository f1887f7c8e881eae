"""The `%snapshots` view: a table of names, versions, sizes and profiles (ipywidgets), or text.

Every user-provided string (names, messages, column names, values) is HTML-escaped: it is shown as
text, never markup.
"""

from __future__ import annotations

from typing import Any

from nb_mlops.present.snapshots import profile_html, snapshots_html, snapshots_text

__all__ = ["show_snapshots"]


def _rows(name: str | None) -> list[Any]:
    from nb_mlops.core.data import snapshots

    return snapshots(name)


def show_snapshots(name: str | None = None) -> Any:
    """A widget listing versions with an expandable profile per version; text without ipywidgets."""
    items = _rows(name)
    try:
        import ipywidgets as widgets
    except ImportError:
        print(snapshots_text(items))
        return None
    table = widgets.HTML(snapshots_html(items))
    profiles = [s for s in items if s.profile.get("columns")]
    if not profiles:
        return table
    accordion = widgets.Accordion(
        children=[widgets.HTML(profile_html(s.profile)) for s in profiles]
    )
    for index, snap in enumerate(profiles):
        accordion.set_title(index, f"{snap.ref} profile")
    return widgets.VBox([table, accordion])
