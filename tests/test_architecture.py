"""Layering (DESIGN.md §2), checked in fresh interpreters through `sys.modules`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nb_mlops

PACKAGE = Path(nb_mlops.__file__).parent
UI_AND_RUNNERS = {
    "IPython",
    "ipywidgets",
    "jupyter_server",
    "tornado",
    "papermill",
    "click",
    "rich",
}
HEAVY = {"mlflow", "pandas", "papermill", "tornado", "jupyter_server", "ipywidgets"}


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def _core_modules() -> list[str]:
    names = []
    for path in sorted((PACKAGE / "core").rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_core_imports_no_ui_server_or_runner_library() -> None:
    imports = "\n".join(f"import {name}" for name in _core_modules())
    assert not (_loaded_after(imports) & UI_AND_RUNNERS)


def test_tracking_core_imports_no_mlflow_or_pandas() -> None:
    # the modules on the %%track hot path stay light: mlflow loads in the background warm-up
    loaded = _loaded_after(
        "import nb_mlops.core.tracking, nb_mlops.core.writer, nb_mlops.core.capture.notebook,"
        " nb_mlops.core.capture.environment, nb_mlops.core.capture.git"
    )
    assert not (loaded & (HEAVY | UI_AND_RUNNERS))


def test_package_and_magics_import_no_heavy_library() -> None:
    loaded = _loaded_after(
        "import nb_mlops, nb_mlops.magics\nnb_mlops.magics._magic_classes()\n"
        "import nb_mlops.magics.track"
    )
    assert not (loaded & HEAVY)
