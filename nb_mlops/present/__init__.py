"""Text and HTML for people, shared by every face (magics, widgets, the CLI).

Pure formatting over `nb_mlops.core` values: byte sizes, numbers, times, tables of runs and of data
snapshots, promotion decisions and lineages. Nothing here imports IPython, ipywidgets, click or a
server library, so each face renders the same values the same way without importing another face.
"""

from __future__ import annotations

__all__: list[str] = []
