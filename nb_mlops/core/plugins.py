"""Plugin discovery: the entry points of the `nb_mlops.gates`, `nb_mlops.executors` and
`nb_mlops.marshallers` groups, read once per process and loaded by name.

Every extension point resolves its plugins here, so a plugin that fails to import is always the
same one-line `PluginError` naming it, never a silently missing gate, executor or marshaller.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from nb_mlops.core.errors import PluginError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = ["GATES", "EXECUTORS", "MARSHALLERS", "entry_points", "forget", "load"]

GATES = "nb_mlops.gates"
EXECUTORS = "nb_mlops.executors"
MARSHALLERS = "nb_mlops.marshallers"

_FOUND: dict[str, dict[str, EntryPoint]] = {}
_LOCK = threading.Lock()


def entry_points(group: str) -> dict[str, EntryPoint]:
    """The installed plugins of `group`, name → entry point (the first on `sys.path` wins).

    Read once per process and group (`forget()` reads again): only distributions whose
    `entry_points.txt` mentions the group are parsed, which keeps this cheap in step kernels.
    """
    with _LOCK:
        found = _FOUND.get(group)
        if found is None:
            from importlib.metadata import distributions

            found = {}
            for dist in distributions():
                text = dist.read_text("entry_points.txt")
                if text and f"[{group}]" in text:
                    for ep in dist.entry_points:
                        if ep.group == group:
                            found.setdefault(ep.name, ep)
            _FOUND[group] = found
        return found


def load(group: str, name: str) -> Any:
    """Import the object the plugin `name` of `group` points to.

    Raises:
        KeyError: no installed plugin of that name.
        PluginError: its import failed (the message names the plugin and what went wrong).
    """
    ep = entry_points(group)[name]
    try:
        return ep.load()
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise PluginError(
            f"plugin {name!r} of entry-point group {group} ({ep.value}) failed to load: "
            f"{type(exc).__name__}: {first}; fix or uninstall the package that declares it"
        ) from exc


def forget() -> None:
    """Read the entry points again on next use (after installing a plugin in this process)."""
    with _LOCK:
        _FOUND.clear()
