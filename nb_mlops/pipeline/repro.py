"""The reproduction check: does the pipeline reproduce the notebook's interactive tracked run that
used the same parameter values?

The run compared with is the newest interactive run of the same notebook whose recorded
parameters equal the pipeline's (a run that recorded none of them is used only when no run
matches). Each of its metrics must agree with the pipeline's within `reproduce_tolerance`
(relative, default 1e-6) plus 1e-9 absolute. The verdict is the tag `nb_mlops.reproduced`; what
was compared (run, parameters, the first metric that differs, both values, the tolerance) is the
tag `nb_mlops.reproduction`, which the `require_reproduced` gate reports; every metric goes to the
artifact `reproduction.json`.
"""

from __future__ import annotations

import ast
import json
import math
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["REPORT_TAG", "check_reproduction", "compare", "same_value", "summary"]

ABS_TOL = 1e-9
DEFAULT_REL_TOL = 1e-6
REPORT_TAG = "nb_mlops.reproduction"


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


def same_value(recorded: str, value: Any) -> bool:
    """Whether a parameter recorded as text (MLflow params are strings, written by `%%track` as
    `str(value)` and by the runner as JSON) stands for `value`."""
    if isinstance(value, str) and recorded == value:
        return True
    readings: list[Any] = []
    for parse in (json.loads, ast.literal_eval):
        try:
            readings.append(parse(recorded))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return any(_same(reading, value) for reading in readings)


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same kind at every depth: `False` is not `0`, `[False]` not `[0]`; an
    int and a float of equal value are the same number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _match(recorded: dict[str, str], params: dict[str, Any]) -> str:
    """`same` (every pipeline parameter recorded, with the same value), `unknown` (none of them
    recorded) or `differs`."""
    known = [name for name in params if name in recorded]
    if not known:
        return "same" if not params else "unknown"
    if len(known) < len(params):
        return "differs"
    return "same" if all(same_value(recorded[n], params[n]) for n in params) else "differs"


def _same_notebook(run_source: str, ours: Path, root: Path) -> bool:
    if not run_source:
        return False
    path = Path(run_source)
    path = path if path.is_absolute() else root / path
    try:
        return path.resolve() == ours
    except OSError:
        return False


def _shown(params: dict[str, Any], limit: int = 6, recorded: bool = False) -> str:
    """`C=0.5, name='x'` (recorded parameters are text already: shown as they are)."""
    items = [
        f"{k}={v!r}" if isinstance(v, str) and not recorded else f"{k}={v}"
        for k, v in params.items()
    ]
    more = f", … {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more or "no parameters"


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The short form of a reproduction report the gate reads (fits an MLflow tag)."""
    out: dict[str, Any] = {
        "interactive_run_id": report.get("interactive_run_id"),
        "parameters": report.get("parameters_shown"),
        "matched": report.get("matched"),
        "rel_tol": report.get("rel_tol"),
        "abs_tol": ABS_TOL,
        "compared": len(report.get("metrics", {})),
    }
    differing = [(k, v) for k, v in report.get("metrics", {}).items() if not v["agree"]]
    if differing:
        name, row = differing[0]
        out.update(
            metric=name,
            interactive=row["interactive"],
            pipeline=row["pipeline"],
            differing=len(differing),
        )
    if report.get("last_interactive"):
        out["last_interactive"] = report["last_interactive"]
    return out


def check_reproduction(run: Any, metrics: dict[str, float]) -> bool | None:
    """Compare with the interactive run of the same notebook that used the pipeline's parameter
    values; None when the notebook has no interactive run with metrics (no tag is set).

    Sets the tag `nb_mlops.reproduction` on the pipeline run (what was compared) and logs
    `reproduction.json` (every metric)."""
    cfg = run.cfg
    ours = run.spec.notebook_path
    params: dict[str, Any] = dict(run.params)
    candidates = [
        (run_id, values, recorded)
        for run_id, source, values, recorded in run.rec.interactive_runs(run.exp_id)
        if _same_notebook(source, ours, cfg.root) and values
    ]
    if not candidates:
        return None
    rel_tol = float(cfg.settings.get("reproduce_tolerance", DEFAULT_REL_TOL))
    by_match: dict[str, tuple[str, dict[str, float], dict[str, str]]] = {}
    for candidate in candidates:  # newest first: keep the newest of each kind
        by_match.setdefault(_match(candidate[2], params), candidate)
    chosen = by_match.get("same") or by_match.get("unknown")
    if chosen is None:
        last = candidates[0][2]
        report: dict[str, Any] = {
            "rel_tol": rel_tol,
            "abs_tol": ABS_TOL,
            "metrics": {},
            "reproduced": False,
            "matched": "none",
            "parameters_shown": _shown(params),
            "last_interactive": _shown(
                {k: last.get(k, "(not recorded)") for k in params}, recorded=True
            ),
        }
    else:
        report = compare(chosen[1], metrics, rel_tol)
        report.update(
            interactive_run_id=chosen[0],
            matched="same" if chosen is by_match.get("same") else "unknown",
            parameters_shown=_shown(params),
        )
    run.rec.log(run.run_id, tags={REPORT_TAG: json.dumps(summary(report), sort_keys=True)[:7000]})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reproduction.json"
        path.write_text(json.dumps(report, indent=1, sort_keys=True))
        run.rec.log_artifact(run.run_id, run.exp_id, path)
    return bool(report["reproduced"])
