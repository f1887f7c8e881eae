"""Notebook → typed papermill pipelines: build (`convert`), the parameter contract (`params`),
the `pipeline.yaml` format (`spec`) and runs (`runner`: DAG, parallel steps, cache, resume).

Importing this package is cheap (step kernels import `nb_mlops.pipeline.kernel` from it): the
public names load their modules, and papermill, on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["PipelineRun", "build_pipeline", "load_pipeline", "run_pipeline"]

_LAZY = {
    "build_pipeline": "nb_mlops.pipeline.convert",
    "load_pipeline": "nb_mlops.pipeline.spec",
    "run_pipeline": "nb_mlops.pipeline.runner",
    "PipelineRun": "nb_mlops.pipeline.runner",
}

if TYPE_CHECKING:  # pragma: no cover
    from nb_mlops.pipeline.convert import build_pipeline
    from nb_mlops.pipeline.runner import PipelineRun, run_pipeline
    from nb_mlops.pipeline.spec import load_pipeline


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nb_mlops.pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
