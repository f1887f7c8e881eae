"""IPython magics: thin faces over `nb_mlops.core` and `nb_mlops.pipeline`.

Each module holds one `@magics_class`; `MAGIC_CLASSES` lists them as "module:Class" so that loading
the extension imports only what it registers (no mlflow, no pandas). `%load_ext` declares them
lazily (IPython imports a module the first time one of its magics is used, or asked for help):
importing them all builds an argparse parser per magic and costs tens of milliseconds.
"""

from __future__ import annotations

import importlib
from typing import Any

MAGIC_CLASSES = (
    "nb_mlops.magics.track:TrackMagics",
    "nb_mlops.magics.mlops:MlopsMagics",
    "nb_mlops.magics.data:DataMagics",
    "nb_mlops.magics.pipeline:PipelineMagics",
    "nb_mlops.magics.promote:PromoteMagics",
    "nb_mlops.magics.monitor:MonitorMagics",
)

# (kind, name) of the magics each class provides, so they can be declared without importing it.
# tests/test_architecture.py checks this table against the classes themselves.
MAGIC_NAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "nb_mlops.magics.mlops:MlopsMagics": (("line", "mlops"),),
    "nb_mlops.magics.data:DataMagics": (
        ("line", "snapshot"),
        ("line", "snapshots"),
        ("line", "restore"),
    ),
    "nb_mlops.magics.pipeline:PipelineMagics": (("line", "pipeline"), ("cell", "step")),
    "nb_mlops.magics.promote:PromoteMagics": (("line", "promote"), ("line", "lineage")),
    "nb_mlops.magics.monitor:MonitorMagics": (("line", "score"), ("line", "monitor")),
}
# registered at once: its module also starts the warm-up, so it is imported anyway
_EAGER = "nb_mlops.magics.track:TrackMagics"


def _magic_classes() -> list[type]:
    found = []
    for spec in MAGIC_CLASSES:
        module_name, _, cls = spec.partition(":")
        found.append(getattr(importlib.import_module(module_name), cls))
    return found


def _lazy_supported(ipython: Any) -> bool:
    """IPython ≥ 9.x declares `module:Class` magics lazily (`register_lazy(..., magic_kind)`)."""
    try:
        from IPython.core.magic import LazyMagic  # noqa: F401
    except ImportError:
        return False
    manager = getattr(ipython, "magics_manager", None)
    return manager is not None and hasattr(manager, "register_lazy")


def load_ipython_extension(ipython: Any) -> None:
    """Register every magic class (lazily where IPython can), then start the background warm-up
    (imports, store)."""
    from nb_mlops.magics.track import start_warm_up

    lazy = _lazy_supported(ipython)
    for spec in MAGIC_CLASSES:
        module_name, _, cls = spec.partition(":")
        names = MAGIC_NAMES.get(spec)
        if lazy and names and spec != _EAGER:
            for kind, name in names:
                ipython.magics_manager.register_lazy(name, spec, kind)
        else:
            ipython.register_magics(getattr(importlib.import_module(module_name), cls))
    start_warm_up(ipython)
