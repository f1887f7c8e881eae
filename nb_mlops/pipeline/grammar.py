"""The step grammar: which cell belongs to which block, read from Kale's cell tags or `%%step`.

Tags: `parameters` (alias `pipeline-parameters`), `imports`, `functions`, `step:NAME` (Kale's
`block:NAME` too), `prev:NAME`, `skip`, `pipeline-metrics`; or `%%step NAME [--after A B]` as a
cell's first line. As in Kale, an untagged cell (or an empty `step:`/`block:` tag) continues the
block above it, leading untagged cells are left out, and `limit:`/`annotation:`/`label:` tags are
read but only matter on Kubeflow. A notebook without any step tag is one step, `main`.
"""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from nb_mlops.core.errors import BuildError

__all__ = ["Cell", "Grammar", "StepDecl", "STEP_NAME", "cell_ref", "cell_span", "parse_cells"]

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
# Kale's pod settings: accepted, but a local or Dask run has no pod to apply them to
_KUBEFLOW_TAGS = ("limit:", "annotation:", "label:")
# tags of the cells `nb-mlops pipeline build` generates (a step notebook read back as a source)
_OWN_TAG = "nb_mlops-"


def cell_ref(index: int, cell_id: str | None = None) -> str:
    """How messages name a cell: its 1-based position in the notebook, and its id when it has one."""
    return f"cell #{index + 1}" + (f" (id {cell_id})" if cell_id else "")


def cell_span(indices: list[int]) -> str:
    """`cell #3`, or `cells #1, #2, #5` (1-based positions of 0-based indices)."""
    refs = [f"#{i + 1}" for i in indices]
    return f"cell {refs[0]}" if len(refs) == 1 else f"cells {', '.join(refs)}"


@dataclass
class Cell:
    """One code cell kept for the pipeline.

    Attributes:
        index: 0-based position among all cells of the source notebook.
        cell_id: the notebook's cell id, if any.
        source: the code to run (a leading `%%step` line removed).
        role: parameters | imports | functions | step | metrics | dropped (a leading untagged
            cell of a notebook with steps: analysed, never run).
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
    """The parsed notebook: cells by role, steps in order of first appearance, warnings (one line
    each, naming the cell)."""

    cells: list[Cell]
    steps: dict[str, StepDecl]
    warnings: list[str] = field(default_factory=list)

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


@dataclass
class _Tags:
    roles: list[str]
    named: list[str]
    continues: bool  # an empty `step:` / `block:` tag
    prevs: list[str]
    source: str


def _read_tags(raw: Any, index: int, warnings: list[str]) -> _Tags | None:
    """The tags of one code cell (None for a dropped cell); unknown tags become warnings."""
    ref = cell_ref(index, raw.get("id"))
    tags = [str(t) for t in raw.get("metadata", {}).get("tags", [])]
    if _DROP_TAGS & set(tags):
        return None
    source = _source(raw)
    roles = sorted({_ROLE_TAGS[t] for t in tags if t in _ROLE_TAGS})
    named: list[str] = []
    prevs: list[str] = []
    continues = False
    kubeflow: list[str] = []
    for tag in tags:
        if tag in _ROLE_TAGS or tag.startswith(_OWN_TAG):
            continue
        kind, sep, value = tag.partition(":")
        if sep and kind in ("step", "block"):
            if value:
                named.append(value)
            else:
                continues = True
        elif sep and kind == "prev":
            prevs.append(value)
        elif tag.startswith(_KUBEFLOW_TAGS):
            kubeflow.append(tag)
        else:
            close = difflib.get_close_matches(tag, [*_ROLE_TAGS, *_DROP_TAGS], n=1, cutoff=0.7)
            kinds = ["step", "block", "prev", "limit", "annotation", "label"]
            near = difflib.get_close_matches(kind, kinds, n=1, cutoff=0.6) if sep else []
            if near:
                close = [f"{near[0]}:{value}"]
            hint = f"; did you mean `{close[0]}`?" if close else ""
            warnings.append(f"{ref}: unknown tag `{tag}` is ignored{hint}")
    if kubeflow:
        warnings.append(
            f"{ref}: `{'`, `'.join(kubeflow)}` only appl{'ies' if len(kubeflow) == 1 else 'y'} "
            "to Kubeflow pods; local and Dask runs ignore "
            + ("it" if len(kubeflow) == 1 else "them")
        )
    magic = _step_magic(source, ref)
    if magic is not None:
        named.append(magic[0])
        prevs.extend(magic[1])
        source = magic[2]
    named = list(dict.fromkeys(named))
    if len(named) > 1:
        raise BuildError(f"{ref}: the cell is tagged with two steps ({', '.join(named)}); keep one")
    if len(roles) > 1 or (roles and named):
        found = roles + [f"step:{n}" for n in named]
        raise BuildError(f"{ref}: the cell has conflicting tags ({', '.join(found)}); keep one")
    if roles and prevs:
        raise BuildError(f"{ref}: `prev:` tags belong on step cells, not on a {roles[0]} cell")
    if prevs and not named:
        what = "an empty `step:` tag" if continues else "no step tag"
        raise BuildError(
            f"{ref}: `prev:` tags need a `step:NAME` tag on the same cell (this cell has {what} "
            "and continues the step above it)"
        )
    return _Tags(roles, named, continues, prevs, source)


class _Blocks:
    """Which block (a role or a step) each code cell belongs to, in notebook order: as in Kale,
    an untagged cell continues the block above it."""

    def __init__(self, stepped: bool) -> None:
        self.stepped = stepped  # some cell has a step tag
        self.cells: list[Cell] = []
        self.steps: dict[str, StepDecl] = {}
        self.block: str | None = None  # the role or step an untagged cell continues
        self.is_step = False
        self.metrics_at: str | None = None
        self.leading: list[int] = []  # untagged cells before the first tagged one

    def add(self, index: int, raw: Any, tags: _Tags) -> None:
        cell_id = raw.get("id")
        role = self.role_of(index, cell_ref(index, cell_id), tags)
        if role != "step":
            self.cells.append(Cell(index, cell_id, tags.source, role))
            return
        assert self.block is not None
        cell = Cell(index, cell_id, tags.source, "step", self.block)
        self.steps[self.block].cells.append(cell)
        self.cells.append(cell)

    def role_of(self, index: int, ref: str, tags: _Tags) -> str:
        """The cell's role; "step" for a cell of step `self.block`."""
        if tags.roles:
            self.block, self.is_step = tags.roles[0], False
            if self.block == "metrics":
                self.metrics_at = self.metrics_at or ref
            return self.block
        if tags.named:
            self.open_step(ref, tags)
        elif not self.stepped:
            # papermill style: no step tag at all, so every untagged cell is the one step
            self.block, self.is_step = DEFAULT_STEP, True
            self.steps.setdefault(self.block, StepDecl(self.block, first_ref=ref))
        elif self.block is None:
            self.leading.append(index)
            return "dropped"
        elif not self.is_step:
            return self.block
        return "step"

    def open_step(self, ref: str, tags: _Tags) -> None:
        if self.metrics_at is not None:
            raise BuildError(
                f"{ref}: the `pipeline-metrics` cell ({self.metrics_at}) must come after every "
                "step cell; move it to the end of the notebook"
            )
        self.block, self.is_step = _check_name(tags.named[0], ref), True
        decl = self.steps.setdefault(self.block, StepDecl(self.block, first_ref=ref))
        for prev in tags.prevs:
            _check_name(prev, ref)
            if prev not in decl.after:
                decl.after.append(prev)

    def leading_warning(self) -> str | None:
        if not self.leading:
            return None
        one = len(self.leading) == 1
        it = "it" if one else "them"
        return (
            f"{cell_span(self.leading)} {'comes' if one else 'come'} before the first tagged "
            f"cell and {'is' if one else 'are'} not part of the pipeline (as in Kale): tag {it} "
            f"`imports` to run {it} in every step, or `skip`"
        )

    def check_after(self) -> None:
        """Every `prev:` names another step of the notebook."""
        for decl in self.steps.values():
            for prev in decl.after:
                if prev not in self.steps:
                    raise BuildError(
                        f"{decl.first_ref}: step {decl.name!r} runs after unknown step {prev!r}; "
                        f"steps are: {', '.join(self.steps)}"
                    )
                if prev == decl.name:
                    raise BuildError(
                        f"{decl.first_ref}: step {decl.name!r} cannot run after itself"
                    )


def parse_cells(nb: Any) -> Grammar:
    """Read the step structure of a notebook (an nbformat NotebookNode or its dict).

    Raises:
        BuildError: a bad step name, contradictory tags, `prev:` without a step, an unknown
            `prev:` step, or a step cell after the `pipeline-metrics` cell (names the cell).
    """
    warnings: list[str] = []
    read: list[tuple[int, Any, _Tags]] = []
    for index, raw in enumerate(nb.get("cells", [])):
        if raw.get("cell_type") != "code":
            continue
        tags = _read_tags(raw, index, warnings)
        if tags is not None:
            read.append((index, raw, tags))
    blocks = _Blocks(stepped=any(tags.named for _, _, tags in read))
    for index, raw, tags in read:
        blocks.add(index, raw, tags)
    leading = blocks.leading_warning()
    if leading:
        warnings.append(leading)
    blocks.check_after()
    return Grammar(blocks.cells, blocks.steps, warnings)
