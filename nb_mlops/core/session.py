"""State shared within one Python process (a kernel session): the data versions it has used.

Data snapshots note each version they take or restore here; tracking logs every noted version to
the runs of the same session as MLflow dataset inputs (a snapshot taken before a tracked cell is
data that cell may use). Neither side imports the other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DataUse", "add_listener", "data_used", "note_data_use", "remove_listener"]


@dataclass(frozen=True)
class DataUse:
    """One data version used in this session.

    Attributes:
        name: snapshot name.
        version: 1, 2, ...
        digest: content hash of the version.
        context: "train", "eval", "test" or None.
        source: `nbmlops://NAME@vN` (files: plus `?path=...`).
        path: the workspace path of a file snapshot, else None.
        rows: row count for tables, else None.
        schema: column name → dtype string, for tables (MLflow dataset schema).
        profile: summary statistics, as stored with the snapshot.
    """

    name: str
    version: int
    digest: str
    context: str | None = None
    source: str = ""
    path: str | None = None
    rows: int | None = None
    schema: dict[str, str] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)

    @property
    def tag_value(self) -> str:
        """The value of the run tag `nb_mlops.data.<name>`: `vN:<digest>`."""
        return f"v{self.version}:{self.digest}"


_lock = threading.Lock()
_used: dict[str, DataUse] = {}
_listeners: list[Callable[[DataUse], None]] = []


def note_data_use(use: DataUse) -> None:
    """Record that this session used `use` (the latest version of a name wins) and tell listeners."""
    with _lock:
        _used.pop(use.name, None)
        _used[use.name] = use
        listeners = list(_listeners)
    for listener in listeners:
        listener(use)


def data_used() -> list[DataUse]:
    """Every data version noted in this session, oldest first."""
    with _lock:
        return list(_used.values())


def add_listener(listener: Callable[[DataUse], None]) -> None:
    with _lock:
        _listeners.append(listener)


def remove_listener(listener: Callable[[DataUse], None]) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def clear() -> None:
    """Forget every noted use (tests; a new kernel session)."""
    with _lock:
        _used.clear()
