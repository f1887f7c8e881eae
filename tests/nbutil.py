"""Write small notebooks and execute them for real (papermill, a real kernel)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nbformat

Cell = str | tuple[str, Sequence[str]]


def new_notebook(path: Path, cells: Sequence[Cell]) -> Path:
    """Write a notebook of code cells; a cell is its source, or (source, tags)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for index, cell in enumerate(cells):
        source, tags = (cell, ()) if isinstance(cell, str) else cell
        node = nbformat.v4.new_code_cell(source)
        node.id = f"cell-{index}"
        if tags:
            node.metadata["tags"] = list(tags)
        nb.cells.append(node)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def chain_notebook(path: Path, cells: int = 200, per_step: int = 20) -> Path:
    """A parameters cell, then a chain of cells each using the previous one's value, a step tag
    every `per_step` cells: the 200-cell build case of the test and the benchmark."""
    sources: list[Cell] = [("p: int = 1", ["parameters"])]
    for i in range(cells - 1):
        tags = [f"step:s{i // per_step}"] if i % per_step == 0 else []
        previous = f"v{i - 1}" if i else "p"
        sources.append((f"v{i} = {previous} + 1\nimport math\nw{i} = math.sqrt(v{i})", tags))
    return new_notebook(path, sources)


IOPUB_TIMEOUT = 60
"""Seconds nbclient waits for a cell's output after its reply (papermill passes it through)."""


def papermill_execute(source: str, output: str, **kwargs: Any) -> Any:
    """`papermill.execute_notebook`, run again when its kernel dies before answering.

    No cell has run then: jupyter_client picks the kernel's ports before the kernel binds them,
    and another process's connection may take one meanwhile (the pipeline's own kernels are
    started again likewise).
    """
    import papermill

    for _ in range(2):
        try:
            return papermill.execute_notebook(source, output, **kwargs)
        except RuntimeError as exc:
            if "died before replying to kernel_info" not in str(exc):
                raise
    return papermill.execute_notebook(source, output, **kwargs)


def execute(
    path: Path,
    *,
    output: Path | None = None,
    parameters: dict[str, Any] | None = None,
    cwd: Path | None = None,
    timeout: int = 300,
    raise_on_error: bool = True,
) -> Any:
    """Run the notebook in a fresh python3 kernel with papermill; return the output notebook."""
    import papermill

    output = output or path.with_name(path.stem + ".out.ipynb")
    try:
        return papermill_execute(
            str(path),
            str(output),
            parameters=parameters or {},
            cwd=str(cwd or path.parent),
            kernel_name="python3",
            progress_bar=False,
            execution_timeout=timeout,
            # nbclient stops collecting a cell's output 4 s after the kernel's reply by default; on
            # a loaded machine that drops the output (even the traceback) of a cell that did run
            iopub_timeout=IOPUB_TIMEOUT,
        )
    except papermill.PapermillExecutionError:
        if raise_on_error:
            raise
        return nbformat.read(str(output), as_version=4)
