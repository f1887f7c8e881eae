"""The notebook file behind a tracked cell: its bytes and hash, its parameters cell, per-cell source
hashes, and the hidden-state report (what the kernel ran versus what the saved notebook shows).

Files are parsed as JSON (no nbformat: it is slow to import) and cached by (size, mtime), so a steady
tracked cell costs a `stat`.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "NotebookFile",
    "PARAMETER_TAGS",
    "cell_table",
    "hidden_state",
    "parameter_values",
    "read_notebook",
]

PARAMETER_TAGS = ("parameters", "pipeline-parameters")
INJECTED_TAG = "injected-parameters"


@dataclass(frozen=True)
class Cell:
    index: int
    id: str
    source: str
    tags: tuple[str, ...]
    execution_count: int | None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()


@dataclass(frozen=True)
class NotebookFile:
    """A parsed notebook: `raw` bytes, their `sha256`, and its code cells in order."""

    path: Path
    raw: bytes
    sha256: str
    cells: tuple[Cell, ...] = field(default_factory=tuple)


_cache: dict[Path, tuple[tuple[int, int], NotebookFile]] = {}
_cache_lock = threading.Lock()


def read_notebook(path: Path) -> NotebookFile | None:
    """The notebook at `path`, or None when it is missing or not a notebook."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (st.st_size, st.st_mtime_ns)
    with _cache_lock:
        hit = _cache.get(path)
    if hit and hit[0] == key:
        return hit[1]
    try:
        raw = path.read_bytes()
        doc = json.loads(raw)
    except (OSError, ValueError):
        return None
    cells = []
    for index, node in enumerate(doc.get("cells", []) if isinstance(doc, dict) else []):
        if not isinstance(node, dict) or node.get("cell_type") != "code":
            continue
        source = node.get("source", "")
        if isinstance(source, list):
            source = "".join(source)
        tags = node.get("metadata", {}).get("tags", [])
        count = node.get("execution_count")
        cells.append(
            Cell(
                index=index,
                id=str(node.get("id", index)),
                source=str(source),
                tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
                execution_count=count if isinstance(count, int) else None,
            )
        )
    nb = NotebookFile(
        path=path, raw=raw, sha256=hashlib.sha256(raw).hexdigest(), cells=tuple(cells)
    )
    with _cache_lock:
        _cache[path] = (key, nb)
    return nb


def _assigned(source: str) -> dict[str, Any]:
    """Top-level `name = literal` assignments of a cell: name → literal value (or its source text)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    found: dict[str, Any] = {}
    for node in tree.body:
        targets: list[ast.expr]
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    found[target.id] = ast.literal_eval(value)
                except (ValueError, SyntaxError, TypeError):
                    found[target.id] = ast.get_source_segment(source, value) or ""
    return found


def parameter_values(nb: NotebookFile, namespace: dict[str, Any] | None) -> dict[str, Any]:
    """The notebook's parameters: names assigned in the `parameters` cell(s), papermill's
    `injected-parameters` cell winning (as papermill does), valued from `namespace` when it holds
    them (what the run actually used), else from the cell's literal."""
    values: dict[str, Any] = {}
    for tag in (*PARAMETER_TAGS, INJECTED_TAG):
        for cell in nb.cells:
            if tag in cell.tags:
                values.update(_assigned(cell.source))
    values = {k: v for k, v in values.items() if not k.startswith("PAPERMILL_")}
    if namespace is not None:
        for name in values:
            if name in namespace:
                values[name] = namespace[name]
    return values


def format_param(value: Any) -> str:
    """MLflow params are strings: scalars as `str`, containers as JSON when they can be."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict, tuple)):
        try:
            return json.dumps(value, sort_keys=True, default=str)
        except (TypeError, ValueError):
            return repr(value)
    return str(value)


def cell_table(nb: NotebookFile, history: list[str]) -> list[dict[str, Any]]:
    """Per code cell: index, id, tags, source sha256, saved execution count, and the `In[n]`
    numbers at which this session ran exactly that source."""
    runs = _runs_by_source(history)
    return [
        {
            "index": c.index,
            "id": c.id,
            "tags": list(c.tags),
            "sha256": c.sha256,
            "execution_count": c.execution_count,
            "ran_as": runs.get(_norm(c.source), []),
        }
        for c in nb.cells
    ]


def _norm(source: str) -> str:
    return source.strip()


def _runs_by_source(history: list[str]) -> dict[str, list[int]]:
    runs: dict[str, list[int]] = {}
    for n, source in enumerate(history):
        if n and source.strip():
            runs.setdefault(_norm(source), []).append(n)
    return runs


def hidden_state(nb: NotebookFile, history: list[str], current: str) -> dict[str, Any]:
    """Compare what this kernel ran (`history`: In[0] = '', In[n] = the n-th input, the last one
    being the tracked cell `current`) with the saved notebook.

    Returns:
        `{"warnings": [...], "tracked_cell": index or None, "unsaved": bool, "not_in_notebook": n}`.
        Warnings name cells by their position (`cell 3`) and `In[n]` numbers.
    """
    past = history[:-1] if history and _norm(history[-1]) == _norm(current) else list(history)
    runs = _runs_by_source(past)
    position = next((i for i, c in enumerate(nb.cells) if _norm(c.source) == _norm(current)), None)
    above = nb.cells if position is None else nb.cells[:position]
    warnings: list[str] = []
    if position is None:
        warnings.append(
            "the tracked cell is not in the saved notebook (unsaved edits?): save the notebook "
            "so the recorded copy matches what ran"
        )
    warnings.extend(_order_warnings(above, runs, len(past)))
    stray = _stray_inputs(nb, past)
    if stray:
        shown = ", ".join(f"In[{n}]" for n in stray[:5]) + (" …" if len(stray) > 5 else "")
        warnings.append(
            f"{len(stray)} input(s) ran that are not in the saved notebook ({shown}): "
            "their effects are hidden state"
        )
    return {
        "warnings": warnings,
        "tracked_cell": None if position is None else nb.cells[position].index,
        "unsaved": position is None,
        "not_in_notebook": len(stray),
    }


def _order_warnings(above: Sequence[Cell], runs: dict[str, list[int]], n_past: int) -> list[str]:
    """Cells above the tracked one that never ran, were edited since, or ran out of order."""
    warnings: list[str] = []
    latest_above: tuple[int, int] | None = None  # (In number, cell index) of the latest run so far
    for cell in above:
        if not cell.source.strip():
            continue
        ran = runs.get(_norm(cell.source))
        label = f"cell {cell.index}"
        if not ran:
            n = cell.execution_count
            if n is not None and 0 < n < n_past:
                warnings.append(
                    f"{label} was edited after it ran: In[{n}] differs from the saved source"
                )
            else:
                warnings.append(f"{label} (above the tracked cell) never ran in this session")
            continue
        last = ran[-1]
        if latest_above is not None and last < latest_above[0]:
            warnings.append(
                f"{label} last ran as In[{last}], before cell {latest_above[1]} above it "
                f"(In[{latest_above[0]}]): cells ran out of order"
            )
        if latest_above is None or last > latest_above[0]:
            latest_above = (last, cell.index)
    return warnings


def _stray_inputs(nb: NotebookFile, past: list[str]) -> list[int]:
    """In numbers of inputs (magics aside) whose source is no cell of the saved notebook."""
    known = {_norm(c.source) for c in nb.cells}
    return [
        n
        for n, source in enumerate(past)
        if n
        and source.strip()
        and _norm(source) not in known
        and not source.lstrip().startswith("%")
    ]
