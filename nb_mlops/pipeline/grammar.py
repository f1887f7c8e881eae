"""The step grammar: which cell belongs to which step, read from Kale's cell tags or `%%step`.

Tags: `parameters` (alias `pipeline-parameters`), `imports`, `functions`, `step:NAME` (Kale's
`block:NAME` too), `prev:NAME`, `skip`, `pipeline-metrics`; or `%%step NAME [--after A B]` as a
cell's first line. An untagged code cell continues the step above it; a notebook without any step
is one step, `main`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from nb_mlops.core.errors import BuildError

__all__ = ["Cell", "Grammar", "StepDecl", "STEP_NAME", "cell_ref", "parse_cells"]

STEP_NAME = re.compile(r"^[a-z_][a-z0-9_]*\Z")
DEFAULT_STEP = "main"
_ROLE_TAGS = {
    "parameters": "parameters",
    "pipeline-parameters": "parameters",
    "imports": "imports",
    "functions": "functions",
    "pipeline-metrics": "metrics",
}
# cells papermill wrote into an executed notebook: their values must not become code of the pipeline
_DROP_TAGS = {"skip", "injected-parameters"}


def cell_ref(index: int, cell_id: str | None = None) -> str:
    """How messages name a cell: its 1-based position in the notebook, and its id when it has one."""
    return f"cell #{index + 1}" + (f" (id {cell_id})" if cell_id else "")


@dataclass
class Cell:
    """One code cell kept for the pipeline.

    Attributes:
        index: 0-based position among all cells of the source notebook.
        cell_id: the notebook's cell id, if any.
        source: the code to run (a leading `%%step` line removed).
        role: parameters | imports | functions | step | metrics.
        step: the step it belongs to (role "step" only).
    """

    index: int
    cell_id: str | None
    source: str
    role: str
    step: str | None = None

    @property
    def ref(self) -> str:
        return cell_ref(self.index, self.cell_id)


@dataclass
class StepDecl:
    """A step as declared: its cells in notebook order and the steps it must run after."""

    name: str
    after: list[str] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    first_ref: str = ""


@dataclass
class Grammar:
    """The parsed notebook: cells by role, steps in order of first appearance."""

    cells: list[Cell]
    steps: dict[str, StepDecl]

    def role(self, role: str) -> list[Cell]:
        return [cell for cell in self.cells if cell.role == role]


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _step_magic(source: str, ref: str) -> tuple[str, list[str], str] | None:
    """Parse a `%%step NAME [--after A B]` first line → (name, after, body), else None."""
    first, _, body = source.partition("\n")
    if not re.match(r"^\s*%%step(\s|$)", first):
        return None
    try:
        words = shlex.split(first.strip()[len("%%step") :])
    except ValueError as exc:
        raise BuildError(f"{ref}: cannot read `{first.strip()}` ({exc})") from exc
    if not words or words[0].startswith("-"):
        raise BuildError(f"{ref}: `%%step` needs a step name, e.g. `%%step train --after load`")
    name, after, rest = words[0], [], words[1:]
    if rest:
        if rest[0] != "--after" or len(rest) < 2:
            raise BuildError(
                f"{ref}: unexpected `{' '.join(rest)}` after `%%step {name}`; "
                "the only option is `--after STEP [STEP ...]`"
            )
        after = rest[1:]
    return name, after, body


def _check_name(name: str, ref: str) -> str:
    if not STEP_NAME.match(name):
        raise BuildError(
            f"{ref}: step name {name!r} is not valid; use lower-case letters, digits and '_' "
            "(pattern ^[a-z_][a-z0-9_]*$)"
        )
    return name


def parse_cells(nb: Any) -> Grammar:
    """Read the step structure of a notebook (an nbformat NotebookNode or its dict).

    Raises:
        BuildError: a bad step name, contradictory tags, or an unknown `prev:` step (names the cell).
    """
    cells: list[Cell] = []
    steps: dict[str, StepDecl] = {}
    current: str | None = None
    pending: list[Cell] = []  # untagged cells before the first step
    for index, raw in enumerate(nb.get("cells", [])):
        if raw.get("cell_type") != "code":
            continue
        cell_id = raw.get("id")
        ref = cell_ref(index, cell_id)
        tags = [str(t) for t in raw.get("metadata", {}).get("tags", [])]
        source = _source(raw)
        if _DROP_TAGS & set(tags):
            continue
        roles = sorted({_ROLE_TAGS[t] for t in tags if t in _ROLE_TAGS})
        named = [t.split(":", 1)[1] for t in tags if t.startswith(("step:", "block:"))]
        prevs = [t.split(":", 1)[1] for t in tags if t.startswith("prev:")]
        magic = _step_magic(source, ref)
        if magic is not None:
            named.append(magic[0])
            prevs.extend(magic[1])
            source = magic[2]
        named = list(dict.fromkeys(named))
        if len(named) > 1:
            raise BuildError(
                f"{ref}: the cell is tagged with two steps ({', '.join(named)}); keep one"
            )
        if len(roles) > 1 or (roles and named):
            found = roles + [f"step:{n}" for n in named]
            raise BuildError(f"{ref}: the cell has conflicting tags ({', '.join(found)}); keep one")
        if roles:
            if prevs:
                raise BuildError(
                    f"{ref}: `prev:` tags belong on step cells, not on a {roles[0]} cell"
                )
            cells.append(Cell(index, cell_id, source, roles[0]))
            continue
        if named:
            current = _check_name(named[0], ref)
            decl = steps.setdefault(current, StepDecl(current, first_ref=ref))
        elif current is None:
            if prevs:
                raise BuildError(f"{ref}: `prev:` tags need a `step:NAME` tag on the same cell")
            cell = Cell(index, cell_id, source, "step")
            pending.append(cell)
            cells.append(cell)
            continue
        else:
            decl = steps[current]
        for prev in prevs:
            _check_name(prev, ref)
            if prev not in decl.after:
                decl.after.append(prev)
        cell = Cell(index, cell_id, source, "step", current)
        decl.cells.append(cell)
        cells.append(cell)
    if pending:
        # Untagged cells above the first step belong to it (or form the only step).
        first = next(iter(steps), DEFAULT_STEP)
        decl = steps.setdefault(first, StepDecl(first, first_ref=pending[0].ref))
        for cell in pending:
            cell.step = first
        decl.cells[:0] = pending
    for decl in steps.values():
        for prev in decl.after:
            if prev not in steps:
                raise BuildError(
                    f"{decl.first_ref}: step {decl.name!r} runs after unknown step {prev!r}; "
                    f"steps are: {', '.join(steps)}"
                )
            if prev == decl.name:
                raise BuildError(f"{decl.first_ref}: step {decl.name!r} cannot run after itself")
    return Grammar(cells, steps)
