"""The reproduction check: does the pipeline reproduce the notebook's last interactive tracked run?

For each metric of that run: the interactive value, the pipeline value and whether they agree
within `reproduce_tolerance` (relative, default 1e-6) plus 1e-9 absolute. The verdict is the tag
`nb_mlops.reproduced`; the details go to the artifact `reproduction.json`.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["check_reproduction", "compare"]

ABS_TOL = 1e-9
DEFAULT_REL_TOL = 1e-6


def compare(
    interactive: dict[str, float], pipeline: dict[str, float], rel_tol: float
) -> dict[str, Any]:
    """Per metric: both values and whether they agree; `reproduced` when all agree."""
    rows = {}
    for name, expected in sorted(interactive.items()):
        got = pipeline.get(name)
        agree = got is not None and math.isclose(got, expected, rel_tol=rel_tol, abs_tol=ABS_TOL)
        rows[name] = {"interactive": expected, "pipeline": got, "agree": agree}
    return {
        "rel_tol": rel_tol,
        "abs_tol": ABS_TOL,
        "metrics": rows,
        "reproduced": all(r["agree"] for r in rows.values()),
    }


def _same_notebook(run_source: str, ours: Path, root: Path) -> bool:
    if not run_source:
        return False
    path = Path(run_source)
    path = path if path.is_absolute() else root / path
    try:
        return path.resolve() == ours
    except OSError:
        return False


def check_reproduction(run: Any, metrics: dict[str, float]) -> bool | None:
    """Compare with the notebook's last interactive run; None when it has none (no tag is set)."""
    cfg = run.cfg
    ours = run.spec.notebook_path
    found = run.rec.interactive_runs(run.exp_id)
    last = next(
        (
            (run_id, values)
            for run_id, source, values in found
            if _same_notebook(source, ours, cfg.root) and values
        ),
        None,
    )
    if last is None:
        return None
    rel_tol = float(cfg.settings.get("reproduce_tolerance", DEFAULT_REL_TOL))
    report = compare(last[1], metrics, rel_tol)
    report["interactive_run_id"] = last[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reproduction.json"
        path.write_text(json.dumps(report, indent=1, sort_keys=True))
        run.rec.log_artifact(run.run_id, run.exp_id, path)
    return bool(report["reproduced"])
