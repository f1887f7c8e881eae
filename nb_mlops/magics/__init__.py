"""IPython magics: thin faces over `nb_mlops.core` and `nb_mlops.pipeline`.

Each module holds one `@magics_class`; `MAGIC_CLASSES` lists them as "module:Class" so that loading
the extension imports only what it registers (no mlflow, no pandas).
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
)


def _magic_classes() -> list[type]:
    found = []
    for spec in MAGIC_CLASSES:
        module_name, _, cls = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a face not built yet
        found.append(getattr(module, cls))
    return found


def load_ipython_extension(ipython: Any) -> None:
    """Register every magic class, then start the background warm-up (imports, store)."""
    for cls in _magic_classes():
        ipython.register_magics(cls)
    warm_up = getattr(importlib.import_module("nb_mlops.magics.track"), "start_warm_up", None)
    if warm_up is not None:
        warm_up(ipython)
