"""Start-up costs of the `nb-mlops` process that are not ours to pay up front.

papermill imports nbformat, which imports jsonschema, which imports the optional IRI checker
`rfc3987_syntax`; that module builds a Lark Earley parser at import time (≈ 1.5–2 s of CPU here,
python-jsonschema/jsonschema#1392). Every `nb-mlops pipeline run` and every JupyterLab job would pay
it for a check it never makes (notebook schemas use no `iri` format). In our own process only,
the module is replaced by a stand-in that imports the real one on first use, so IRI validation
behaves exactly as before when something does ask for it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

__all__ = ["defer_slow_imports"]

_SLOW = "rfc3987_syntax"


class _OnFirstUse(types.ModuleType):
    """A module whose real import happens when one of its attributes is first needed."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_real(), name)


def _real() -> types.ModuleType:
    module = sys.modules.get(_SLOW)
    if module is not None and not isinstance(module, _OnFirstUse):
        return module
    stand_in = sys.modules.pop(_SLOW, None)
    try:
        return importlib.import_module(_SLOW)
    except BaseException:
        if stand_in is not None:
            sys.modules[_SLOW] = stand_in
        raise


def _is_valid_syntax(term: str, value: str) -> Any:
    # jsonschema binds this name at its own import: it must exist before the real module does
    return _real().is_valid_syntax(term, value)


def defer_slow_imports() -> None:
    """Install the stand-in (once; not when the module is already loaded or not installed)."""
    spec = None if _SLOW in sys.modules else importlib.util.find_spec(_SLOW)
    if spec is None:
        return
    stand_in = _OnFirstUse(_SLOW, "stand-in: the real module is imported on first use")
    stand_in.is_valid_syntax = _is_valid_syntax  # type: ignore[attr-defined]
    # the real package's folder: `from rfc3987_syntax import is_valid_syntax` finds the name above,
    # and an import of one of its submodules still works
    stand_in.__path__ = list(spec.submodule_search_locations or [])
    sys.modules[_SLOW] = stand_in
