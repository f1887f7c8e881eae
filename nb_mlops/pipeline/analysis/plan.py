# mypy: disable-error-code="no-untyped-call,misc"
"""Which values each step takes from which earlier step, found by replaying the notebook top to
bottom over versions of names.

Every statement may change names: it binds them, changes their object in place (a method call,
an item or attribute assignment, passing it to a call that may change it, `+=`, `del`), or calls
a notebook function that does. The version of a name at a point is the last statement that may
have changed it. A step takes each name it needs from the step holding the version the notebook
would see; names that may share an object (`b = a`, `lst.append(x)`, `fitted = clf.fit(X)`)
change together, so they always come from the same step, saved together. The global random
generators, once seeded, are names too. Process-wide settings (`os.environ[...] = ...`,
`pd.set_option(...)`, `%matplotlib inline`) are repeated in the steps after them, like imports.

Where no step order can give the notebook's values (two cells of a step with another step's
change in between, a value pickle cannot carry, names the analysis cannot see), the build stops
with one line naming the cell, the variable and what to do.
"""

from __future__ import annotations

import ast
import graphlib
import re
from dataclasses import dataclass, field

from nb_mlops.core.errors import BuildError
from nb_mlops.pipeline.analysis import knowledge
from nb_mlops.pipeline.analysis.effects import (
    CallSite,
    Effects,
    Summary,
    _dotted,
    analyze_source,
    imports_of,
    python_of,
)
from nb_mlops.pipeline.grammar import Cell, Grammar

__all__ = ["Plan", "StepPlan", "literal_paths", "plan_steps", "rng_name"]

_RNG = "rng:"


def rng_name(generator: str) -> str:
    """The pseudo-variable that carries a global generator's state (`rng:numpy.random`)."""
    return _RNG + generator


@dataclass(frozen=True)
class Version:
    """A value of a name: the statement that produced it (its index in notebook order)."""

    index: int
    kind: str  # param | prelude | import | step | dropped | deleted
    cell: Cell
    step: str | None = None
    source: str = ""  # the import statement, for kind "import"


@dataclass
class StepPlan:
    """What one step needs and gives.

    Attributes:
        inputs: name → producing step (values and generator states loaded before its cells).
        imports: name → import statement repeated in this step (modules are never passed).
        outputs: names a later step or the metrics cell reads, saved together at its end.
        metrics: names whose numeric values this step records as metrics.
        replay: statements changing process-wide settings, repeated before the step's cells.
        reasons: input name → why (e.g. "cell #7 passes it to a call"), for `pipeline build`;
            `file:PATH` → why the step runs after the one in `file_after` (both name the file);
            `shell:STEP` → why it runs after STEP (one of them runs a shell command).
    """

    name: str
    cells: list[Cell]
    after: list[str] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)
    imports: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    replay: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)  # literal file paths of its cells
    file_after: dict[str, str] = field(default_factory=dict)  # "file:PATH"/"shell:S" → step
    # inputs a model's method (`fit`, `predict`, ...) is given: assumed unchanged by it, so
    # later steps may take them from upstream; the step checks that at its end (name → why)
    unchanged: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    """The DAG: steps in a deterministic topological order, the metric names of the notebook,
    and warnings (one line each, naming the cell)."""

    steps: dict[str, StepPlan]
    metrics: list[str]
    uses_magics: bool
    warnings: list[str] = field(default_factory=list)
    prelude_defines: bool = False  # the imports/functions cells define functions or classes
    problems: list[str] = field(default_factory=list)  # cells that are not valid (I)Python


class _Groups:
    """Names that may share objects (union-find; a link is never undone: over-approximate), and
    the notebook functions and classes each group may hold (callable through its objects)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.members: dict[str, set[str]] = {}
        self.holds: dict[str, set[str]] = {}

    def find(self, name: str) -> str:
        parent = self.parent.setdefault(name, name)
        if parent == name:
            self.members.setdefault(name, {name})
            return name
        root = self.find(parent)
        self.parent[name] = root
        return root

    def union(self, names: set[str], holds: set[str]) -> str | None:
        roots = {self.find(n) for n in names}
        if not roots:
            return None
        keep = max(roots, key=lambda r: len(self.members[r]))
        for root in roots - {keep}:
            self.parent[root] = keep
            self.members[keep] |= self.members.pop(root)
            self.holds.setdefault(keep, set()).update(self.holds.pop(root, set()))
        if holds:
            self.holds.setdefault(keep, set()).update(holds)
        return keep

    def of(self, name: str) -> set[str]:
        return self.members[self.find(name)]

    def held(self, name: str) -> set[str]:
        """The notebook functions and classes the objects of `name` may hold."""
        if name not in self.parent:
            return set()
        return self.holds.get(self.find(name), set())

    def holders(self, callable_name: str) -> set[str]:
        """The names whose objects may hold the notebook function or class `callable_name`."""
        found: set[str] = set()
        for root, held in self.holds.items():
            if callable_name in held and root in self.members:
                found |= self.members[root]
        return found


@dataclass
class _Stmt:
    index: int
    cell: Cell
    effects: Effects
    pos: int  # its place among the statements of its cell


@dataclass
class _Events:
    needs: set[str] = field(default_factory=set)  # read now
    writes: set[str] = field(default_factory=set)
    # written from their previous value only if at all (a loop variable, a name sharing an
    # object with one changed): the previous value is needed only if someone uses the new one
    carries: set[str] = field(default_factory=set)
    deletes: set[str] = field(default_factory=set)
    produced: set[str] = field(default_factory=set)  # bound by the statement before any use
    why: dict[str, str] = field(default_factory=dict)  # why a name's new value comes from here
    setter: bool = False
    replay: str | None = None  # what later steps repeat, when not the whole statement
    assumed: dict[str, str] = field(default_factory=dict)  # given to a model's method: why
    # notebook functions and classes whose own state (attributes, defaults) changes: why
    state_changes: dict[str, str] = field(default_factory=dict)


def _mapped(
    refs: frozenset[str] | set[str], binding: dict[str, frozenset[str]] | None, drop_called: bool
) -> set[str]:
    """Names of a function body in the caller's terms: `@param` is what the caller gave (nothing
    without a binding); with `drop_called`, `!name` (a class called) is left out."""
    mapped: set[str] = set()
    for ref in refs:
        if ref.startswith("@"):
            if binding is not None:
                mapped |= binding.get(ref[1:], frozenset())
        elif not (drop_called and ref.startswith("!")):
            mapped.add(ref)
    return mapped


class _Planner:
    def __init__(self, grammar: Grammar, start: dict[str, Version] | None = None) -> None:
        self.grammar = grammar
        self.warnings: list[str] = list(grammar.warnings)
        self.stmts: list[_Stmt] = []
        self.problems: list[str] = []
        names: dict[str, str] = {}
        for cell in grammar.cells:
            names.update(imports_of(cell.source))
        for cell in grammar.cells:
            try:
                found = analyze_source(cell.source, cell.ref, names)
            except BuildError as exc:
                # a cell that does not parse binds and reads nothing: it fails when it runs,
                # with the error papermill reports, and only if the run gets that far
                self.problems.append(str(exc))
                continue
            for pos, effects in enumerate(found):
                self.stmts.append(_Stmt(len(self.stmts), cell, effects, pos))
        self.all_imports = {
            k: q for stmt in self.stmts for k, (_, q) in stmt.effects.imports.items()
        }
        self.version: dict[str, Version] = {}
        self.groups = _Groups()
        self.callables: dict[str, list[Summary]] = {}
        self.immutable: dict[str, bool] = {}
        self.unpicklable: dict[tuple[int, str], str] = {}
        self.change_why: dict[tuple[int, str], str] = {}
        self.module_alias: dict[str, tuple[str, Cell]] = {}
        self.seeded = self._seeded()
        self.data_names = self._data_names()
        self.start = start if start is not None else self._start_state()
        self.plans = {
            name: StepPlan(name, list(decl.cells), list(decl.after))
            for name, decl in grammar.steps.items()
        }
        self.held: dict[str, dict[str, Version | None]] = {name: {} for name in self.plans}
        # name → (value before, cell) for values a step carried without reading them
        self.lazy: dict[str, dict[str, tuple[Version | None, Cell]]] = {n: {} for n in self.plans}
        self.conflict: dict[str, dict[str, str]] = {name: {} for name in self.plans}
        # (producer, name, version needed, consumer, cell that reads it)
        self.wanted: list[tuple[str, str, Version, str, Cell]] = []
        self.last_write: dict[tuple[str, str], Version] = {}
        # step → name → why, for values a model's method was given (see StepPlan.unchanged)
        self.assumed: dict[str, dict[str, str]] = {name: {} for name in self.plans}
        self.metric_names: list[str] = []
        self.replays: list[tuple[int, Cell, str]] = []

    # --- before the replay ------------------------------------------------------------------

    def _seeded(self) -> set[str]:
        """The generators some pipeline cell seeds: only those are carried between steps."""
        found: set[str] = set()
        for stmt in self.stmts:
            if stmt.cell.role not in ("step", "imports", "functions"):
                continue
            for site in self._sites(stmt.effects):
                qual = _qualify(site.callee, self.all_imports)
                generator = knowledge.seeds(qual) if qual else None
                if generator:
                    found.add(generator)
        return found

    @staticmethod
    def _sites(effects: Effects) -> list[CallSite]:
        sites = list(effects.calls)
        for summaries in effects.defines.values():
            for summary in summaries:
                sites.extend(summary.calls)
        return sites

    def _data_names(self) -> set[str]:
        """Names the notebook gives to a model's methods (`X`, `y_train`): data a model's method
        is assumed to leave alone, even when the model may hold it (see `_receiver`)."""
        found: set[str] = set()
        for stmt in self.stmts:
            for site in self._sites(stmt.effects):
                if _model_method(site, _qualify(site.callee, self.all_imports)):
                    found |= {r for r in site.all_args() if not r.startswith(("@", "!"))}
        return found

    def _start_state(self) -> dict[str, Version]:
        """What every step holds before loading: its parameters cell, then the `imports` and
        `functions` cells, run in that order in each step kernel."""
        prelude = Grammar(
            [c for c in self.grammar.cells if c.role == "parameters"]
            + [c for c in self.grammar.cells if c.role in ("imports", "functions")],
            {},
        )
        scratch = _Planner(prelude, start={})
        index = {(s.cell.index, s.pos): s.index for s in self.stmts}
        for stmt in scratch.stmts:
            scratch._advance(stmt, scratch._events(stmt))
        return {
            name: Version(
                index[(v.cell.index, scratch.stmts[v.index].pos)],
                v.kind,
                v.cell,
                None,
                v.source,
            )
            for name, v in scratch.version.items()
        }

    # --- resolving names at the current point ------------------------------------------------

    def _import_qual(self, name: str) -> str | None:
        version = self.version.get(name)
        if version is not None and version.kind == "import":
            return version.source.rsplit("\0", 1)[-1]
        return None

    def _qual(self, callee: tuple[str, ...]) -> str | None:
        """The qualified name of a library function called (`numpy.mean`), if it is one."""
        if callee[0] == "name":
            qual = self._import_qual(callee[1])
            if qual is None and callee[1] not in self.version and callee[1] in knowledge.BUILTINS:
                return f"builtins.{callee[1]}"
            return qual
        if callee[0] == "attr":
            base = self._import_qual(callee[1])
            return f"{base}.{callee[2]}" if base else None
        return None

    def _live(self, name: str) -> bool:
        version = self.version.get(name)
        return (
            version is not None
            and version.kind not in ("import", "deleted")
            and not self.immutable.get(name, False)
        )

    def _group_change(
        self,
        refs: set[str] | frozenset[str],
        ev: _Events,
        why: str,
        spare: set[str] | frozenset[str] = frozenset(),
        state: bool = False,
    ) -> None:
        """The objects of `refs` may change: so may every name that may share one of them
        (names in `spare` excepted: assumed unchanged). A function or class of the notebook
        changes only with `state` (an attribute set on it, a method called on the class, a
        default changed): its code does not change, but its attributes travel with it."""
        for ref in refs:
            if ref.startswith(("@", "!")) or not (self._live(ref) or ref in ev.produced):
                continue
            if state and self.callables.get(ref):
                self._state_change(ref, ev, why)
                continue
            if not self.callables.get(ref):
                if ref not in ev.produced:  # a value made earlier in the statement: not needed
                    ev.needs.add(ref)
                ev.writes.add(ref)
                ev.why.setdefault(ref, why.format("it"))
            for member in self.groups.of(ref):
                if (
                    self._live(member)
                    and member not in spare
                    and member not in ev.writes
                    and not self.callables.get(member)
                ):
                    ev.carries.add(member)
                    ev.writes.add(member)
                    ev.why.setdefault(
                        member, why.format(f"`{ref}`, which may share an object with it,")
                    )

    def _state_change(self, name: str, ev: _Events, why: str) -> None:
        """The notebook function or class `name` changes its own state: it is a value from here
        on, and so is every name whose objects may hold it (an instance carries its class)."""
        ev.state_changes.setdefault(name, why.format(f"`{name}`"))
        if name not in ev.produced:
            ev.needs.add(name)
        ev.writes.add(name)
        ev.why.setdefault(name, why.format("it"))
        for member in self.groups.holders(name):
            if self._live(member) and member not in ev.writes and not self.callables.get(member):
                ev.carries.add(member)
                ev.writes.add(member)
                ev.why.setdefault(member, why.format(f"the state of `{name}`, which it holds,"))

    def _classes(self, name: str) -> list[Summary]:
        return [s for s in self.callables.get(name, []) if s.kind == "class"]

    def _class_method_call(self, site: CallSite, ev: _Events, why: str) -> set[str]:
        """A method called on a notebook class itself (`Counter.bump()`) or on an object holding
        one (`c.bump()`): the classes whose state it changes, now changed (a class's own
        attribute's object changed, `Counter.seen.append(x)`, counts too). Returns the receivers
        that are classes (judged here, not as ordinary values)."""
        if site.callee[0] == "attr":
            path = site.callee[2]
            method = path.rsplit(".", 1)[-1]
        elif site.callee[0] == "method":
            path = method = site.callee[1]
        else:
            return set()
        judged: set[str] = set()
        for ref in site.receiver:
            if ref.startswith(("@", "!")):
                continue
            direct = bool(self._classes(ref))
            if direct:
                judged.add(ref)
            for name in ({ref} if direct else set()) | self.groups.held(ref):
                for summary in self._classes(name):
                    deeper = direct and "." in path  # `Counter.seen.append(x)`
                    unknown = direct and method not in summary.methods
                    if deeper or unknown or method in summary.state_methods:
                        self._state_change(name, ev, why)
        return judged

    def _param_changes(self, summary: Summary, seen: set[int]) -> set[str]:
        """The parameters a notebook function may change, through the calls it makes too."""
        if id(summary) in seen:
            return set()
        seen.add(id(summary))
        changed = set(summary.param_changes)
        for site in summary.calls:
            for _key, refs in self._changed_args(site, seen):
                changed |= {r[1:] for r in refs if r.startswith("@")}
            if site.callee[0] in ("method", "local", "other") or (
                site.callee[0] == "attr" and self._qual(site.callee) is None
            ):
                # a method of a parameter, or a parameter called (`f(x)` may be `xs.append`)
                changed |= {r[1:] for r in site.receiver if r.startswith("@")}
        return changed

    def _changed_args(self, site: CallSite, seen: set[int]) -> list[tuple[object, frozenset[str]]]:
        """(argument position or name, what it refers to) for each argument the call may change."""
        every: list[tuple[object, frozenset[str]]] = [(i, a) for i, a in enumerate(site.args)]
        every += list(site.kwargs.items())
        if site.star:
            every.append(("*", site.star))
        callee = site.callee
        qual = self._qual(callee)
        if callee[0] == "magic" or self._model_method(site):
            return []
        if qual is not None:
            if qual.startswith("builtins."):
                positions = knowledge.builtin_mutates(qual.split(".", 1)[1])
                return [(i, a) for i, a in every if i in positions]
            if knowledge.keeps_args(qual, set(site.kwargs)) or knowledge.is_state_setter(qual):
                return []
            return every
        if callee[0] == "name" and self.callables.get(callee[1]):
            found: list[tuple[object, frozenset[str]]] = []
            for summary in self.callables[callee[1]]:
                if summary.varargs:
                    return every
                changed = self._param_changes(summary, seen)
                for key, refs in every:
                    if isinstance(key, int):
                        param = summary.params[key] if key < len(summary.params) else "*"
                    else:
                        param = str(key)
                    if param == "*" or param in changed:
                        found.append((key, refs))
            return found
        return every

    def _draws(self, site: CallSite) -> tuple[str, ...]:
        if site.callee[0] == "magic":
            return ()
        qual = self._qual(site.callee)
        if qual is not None:
            if qual.startswith("builtins.") or knowledge.is_state_setter(qual):
                return ()
            if knowledge.seeds(qual):
                return ()
            return knowledge.draws_random(qual)
        if site.callee[0] == "name" and self.callables.get(site.callee[1]):
            return ()  # its body's calls are counted when it is applied
        return knowledge.draws_random(None)

    # --- one statement ------------------------------------------------------------------------

    def _apply_summary(
        self,
        summary: Summary,
        ev: _Events,
        why: str,
        binding: dict[str, frozenset[str]] | None,
        seen: set[int],
    ) -> None:
        """What calling a notebook function does at this point: its globals are read and
        changed here, in this step's namespace (the function runs against it)."""
        if id(summary) in seen:
            return
        seen.add(id(summary))
        for name in summary.reads:
            if name in self.version:
                ev.needs.add(name)
            for inner in self.callables.get(name, []):
                self._apply_summary(inner, ev, why, None, seen)
        for name in summary.writes:
            ev.carries.add(name)
            ev.writes.add(name)
            ev.why.setdefault(name, f"{why} changes it")
        self._group_change(summary.changes, ev, f"{why} changes {{}}", state=True)
        for link in summary.links:
            self._link({r for r in link if not r.startswith("@")}, ev, f"{why} shares {{}}", set())
        for site in summary.calls:
            self._summary_call(site, ev, why, binding, seen)

    def _summary_call(
        self,
        site: CallSite,
        ev: _Events,
        why: str,
        binding: dict[str, frozenset[str]] | None,
        seen: set[int],
    ) -> None:
        """A call in a notebook function's body, its `@param` names mapped to the caller's."""
        for _key, refs in self._changed_args(site, set()):
            mapped = _mapped(refs, binding, drop_called=True)
            self._group_change(mapped, ev, f"{why} passes {{}} to a call")
        if self._model_method(site):
            given = _mapped(site.all_args(), binding, drop_called=False)
            self._assume(given, ev, f"{why} gives it to `.{site.callee[1]}(...)`")
        self._receiver(site, ev, f"{why} calls a method on {{}}")
        self._rng(site, ev, why)
        if site.callee[0] == "name":
            for inner in self.callables.get(site.callee[1], []):
                self._apply_summary(inner, ev, why, None, seen)

    def _model_method(self, site: CallSite) -> str | None:
        """A model method called on an object that holds no class of the notebook (whose own
        methods the analysis reads instead)."""
        if site.callee[0] not in ("method", "attr"):
            return None  # a function, a local, the result of a call: not a model's method
        receiver = site.receiver if site.callee[0] == "method" else frozenset({site.callee[1]})
        if any(
            self.groups.held(r.lstrip("!")) or self.callables.get(r.lstrip("!")) for r in receiver
        ):
            return None
        return _model_method(site, self._qual(site.callee))

    def _assume(self, refs: frozenset[str] | set[str], ev: _Events, why: str) -> None:
        """`refs` are given to a model's method: assumed unchanged, with what may share their
        objects (checked at run time where the step received them)."""
        for ref in refs:
            if ref.startswith(("@", "!")):
                continue
            for member in {ref} | set(self.groups.of(ref)):
                if self._live(member):
                    ev.assumed.setdefault(member, why)

    def _receiver(self, site: CallSite, ev: _Events, why: str) -> None:
        receiver = {r for r in site.receiver if not r.startswith("@")}
        method = self._model_method(site)
        if method:
            # a model's method changes the model (and the models it holds: a Pipeline's steps),
            # not the data it may hold (a fitted kNN keeps `X`): that is assumed, and checked
            spare = {
                m
                for r in receiver
                if not r.startswith("!")
                for m in self.groups.of(r)
                if m in self.data_names and m not in receiver
            }
            self._assume(spare, ev, why.format("a model holding it").replace("calls a", "calls"))
            self._group_change(receiver, ev, why, spare)
        elif site.callee[0] == "method" or (
            site.callee[0] == "attr" and self._qual(site.callee) is None
        ):
            classes = self._class_method_call(site, ev, why)
            self._group_change(receiver - classes, ev, why, state=True)
        elif site.callee[0] in ("local", "other"):
            # a local or a computed value called: it may be a bound method of a global's object
            self._group_change(receiver, ev, why)
        elif (
            site.callee[0] == "name"
            and not self.callables.get(site.callee[1])
            and self._qual(site.callee) is None
        ):
            # calling an object of the notebook (`model(x)`) may change it
            self._group_change({site.callee[1]}, ev, why)

    def _rng(self, site: CallSite, ev: _Events, why: str) -> None:
        qual = self._qual(site.callee)
        generator = knowledge.seeds(qual) if qual else None
        if generator in self.seeded:
            name = rng_name(generator)
            ev.writes.add(name)
            ev.why.setdefault(name, f"{why} seeds it")
            return
        for generator in self._draws(site):
            if generator in self.seeded:
                name = rng_name(generator)
                ev.needs.add(name)
                ev.writes.add(name)
                ev.why.setdefault(name, f"{why} may draw from it")

    def _link(self, names: set[str], ev: _Events, why: str, fresh: set[str]) -> None:
        """The objects of `names` may be shared from now on. A notebook function or class among
        them is held, not shared (its code does not change); one only called (`!f`) is held
        when it is a class (its instances carry its methods) or may return a closure."""
        holds: set[str] = set()
        shared: set[str] = set()
        for name in names:
            called = name.startswith("!")
            name = name.lstrip("!")
            summaries = self.callables.get(name)
            if summaries:
                if not called or any(s.kind == "class" or s.nested for s in summaries):
                    holds.add(name)
            elif (
                not called
                and (self._live(name) or name in fresh)
                and not self.immutable.get(name, False)
            ):
                shared.add(name)
        if not shared or (len(shared) < 2 and not holds):
            return
        self.groups.union(shared, holds)
        # a new sharing: every member's value now comes from here
        for member in self.groups.of(next(iter(shared))):
            if self._live(member) and member not in ev.writes:
                ev.carries.add(member)
                ev.writes.add(member)
                ev.why.setdefault(member, why)

    def _events(self, stmt: _Stmt) -> _Events:
        effects = stmt.effects
        ref = stmt.cell.ref
        ev = _Events()
        ev.produced = (effects.binds | effects.maybe_binds) - effects.needs
        ev.needs |= effects.needs | effects.deletes
        ev.carries |= effects.maybe_binds
        for name in effects.binds:
            ev.why[name] = f"{ref} sets it"
        for name in effects.maybe_binds:
            ev.why.setdefault(name, f"{ref} may set it")
        for name in effects.deletes:
            ev.why.setdefault(name, f"{ref} deletes it")
        ev.writes |= effects.binds | effects.maybe_binds | effects.deletes
        ev.deletes |= effects.deletes - effects.binds - effects.maybe_binds
        # process-wide settings reached through a module: `os.environ[k] = v`, `pd.options.x = y`
        state = [t for t in effects.state_targets if self._import_qual(t.split(".")[0])]
        direct_changes = set(effects.changes) - {t.split(".")[0] for t in state}
        self._group_change(direct_changes, ev, f"{ref} changes {{}} in place", state=True)
        for name in sorted(effects.class_changes):
            for held in sorted(self.groups.held(name)):
                if self._classes(held):
                    self._state_change(held, ev, f"{ref} changes the class of `{name}`, {{}}")
        setters = bool(state) and not (effects.binds or effects.maybe_binds)
        for site in effects.calls:
            if self._call_events(site, ev, ref):
                setters = True
        if qual_only_setters(effects) and setters:
            ev.setter = True
        elif setters:
            ev.replay = self._setter_call(effects)
            ev.setter = ev.replay is not None
        for summary in effects.lambdas:
            self._apply_summary(summary, ev, f"{ref} (a lambda)", None, set())
        self._held_callables(ev, ref)
        fresh = set(effects.binds)
        for link in effects.links:
            self._link(set(link), ev, f"{ref} makes it share an object", fresh)
        return ev

    def _call_events(self, site: CallSite, ev: _Events, ref: str) -> bool:
        """What a call of a statement does; True when it sets process-wide state (an
        environment magic, a state setter), which it does instead of anything else."""
        qual = self._qual(site.callee)
        if site.callee[0] == "magic":
            return site.callee[1] in knowledge.ENV_MAGICS
        if qual and knowledge.is_state_setter(qual):
            return True
        # `setattr(C, ...)` changes a notebook class or function itself (`map(f, xs)` only calls f)
        state = qual in ("builtins.setattr", "builtins.delattr")
        for _key, refs in self._changed_args(site, set()):
            self._group_change(set(refs), ev, f"{ref} passes {{}} to a call", state=state)
        if self._model_method(site):
            self._assume(site.all_args(), ev, f"{ref} gives it to `.{site.callee[1]}(...)`")
        self._receiver(site, ev, f"{ref} calls a method on {{}}")
        self._rng(site, ev, ref)
        if site.callee[0] == "name":
            summaries = self.callables.get(site.callee[1], [])
            for summary in summaries:
                if summary.kind == "class" and summary.state_methods & _CONSTRUCTION:
                    self._state_change(
                        site.callee[1], ev, f"{ref} makes a `{site.callee[1]}`, which changes {{}}"
                    )
                binding = _bind_args(summary, site)
                kept = summary.shared_defaults - set(binding if binding is not None else ())
                if site.star or summary.varargs:
                    kept = set()
                if kept & self._param_changes(summary, set()):
                    self._state_change(
                        site.callee[1], ev, f"{ref} changes a default argument of {{}}"
                    )
                self._apply_summary(
                    summary, ev, f"{ref} calls `{site.callee[1]}`, which", binding, set()
                )
        return False

    def _held_callables(self, ev: _Events, ref: str) -> None:
        """A name that is or holds notebook functions (an instance holds its class) may call
        them."""
        for name in sorted(ev.needs):
            held = self.groups.held(name) | ({name} if name in self.callables else set())
            for member in sorted(held):
                for summary in self.callables.get(member, []):
                    self._apply_summary(summary, ev, f"{ref} uses `{member}`, which", None, set())

    # --- the replay ---------------------------------------------------------------------------

    def run(self) -> Plan:
        uses_magics = False
        step_stmts: dict[str, list[int]] = {name: [] for name in self.plans}
        for stmt in self.stmts:
            if stmt.cell.role == "step":
                step_stmts[stmt.cell.step or ""].append(stmt.index)
        for stmt in self.stmts:
            cell, effects = stmt.cell, stmt.effects
            if re.search(r"^\s*[%!]", cell.source, re.M) and cell.role != "dropped":
                uses_magics = True
            ev = self._events(stmt)
            if cell.role == "metrics":
                self._metrics(ev, cell)
                continue
            if cell.role in ("imports", "functions", "parameters"):
                self._prelude_statement(stmt, ev)
            if cell.role == "step":
                self._module_state(stmt, ev)
                self._prelude_state(stmt, ev)
                self._step_statement(stmt, ev)
                self._uncarried_seeds(stmt, step_stmts)
                if ev.setter:
                    self.replays.append((stmt.index, cell, ev.replay or effects.source))
                if effects.dynamic and len(self.plans) > 1:
                    raise BuildError(
                        f"{cell.ref}: {effects.dynamic} sets names the analysis cannot see, so "
                        "later steps cannot know they need them: move it into an `imports` "
                        "cell, or assign the names explicitly"
                    )
                for source in effects.star_imports:
                    self.warnings.append(
                        f"{cell.ref}: `{source}` in a step is repeated in the later steps; the "
                        "names it defines are not tracked (an `imports` cell is clearer)"
                    )
                    self.replays.append((stmt.index, cell, source))
            self._advance(stmt, ev)
        self._check_outputs()
        self._place_replays(step_stmts)
        self._file_order()
        return self._finish(uses_magics)

    def _file_order(self) -> None:
        """Steps that name the same file run in notebook order: one may write what the other
        reads (a file is not a variable the analysis can follow). A cell running a shell
        command (`!unzip data.zip`, `%%bash`, `os.system(...)`) may touch any file: its step runs
        after the steps begun before it, and the steps begun after it run after it."""
        seen: dict[str, tuple[str, Cell]] = {}
        modules = _written_modules(self.grammar.cells)
        begun: list[str] = []  # steps in the order of their first cell
        shell: tuple[str, Cell] | None = None  # the latest cell running a shell command
        for cell in self.grammar.cells:
            if cell.role != "step" or cell.step is None:
                continue
            plan = self.plans[cell.step]
            paths = literal_paths(cell.source)
            imported = {q.split(".")[0] for q in imports_of(cell.source).values()}
            paths += [f"{m}.py" for m in sorted(imported & modules)]
            plan.paths.extend(p for p in paths if p not in plan.paths)
            for path in paths:
                earlier = seen.get(path)
                if earlier is not None and earlier[0] != cell.step:
                    self._after(plan, earlier[0], f"file:{path}", f"{earlier[1].ref} uses it too")
                seen[path] = (cell.step, cell)
            if cell.step not in begun:
                begun.append(cell.step)
                if shell is not None and not self._depends(shell[0], cell.step):
                    why = f"{shell[1].ref} runs a shell command, which may write files"
                    self._after(plan, shell[0], f"shell:{shell[0]}", why)
            if self._runs_shell(cell):
                for step in begun:
                    if not self._depends(step, cell.step):
                        why = f"{cell.ref} runs a shell command, which may read its files"
                        self._after(plan, step, f"shell:{step}", why)
                shell = (cell.step, cell)

    def _depends(self, step: str, on: str) -> bool:
        """Whether `step` already runs after `on` (or is it): an edge from `on` to `step` would
        close a cycle."""
        todo, seen = [step], set()
        while todo:
            current = todo.pop()
            if current == on:
                return True
            if current not in seen:
                seen.add(current)
                plan = self.plans[current]
                todo += [*plan.after, *plan.inputs.values()]
        return False

    @staticmethod
    def _after(plan: StepPlan, step: str, key: str, why: str) -> None:
        if step not in plan.after:
            plan.after.append(step)
            plan.reasons[key] = why
            plan.file_after[key] = step

    def _runs_shell(self, cell: Cell) -> bool:
        first = cell.source.lstrip("\n").split("\n", 1)[0]
        if first.startswith("%%"):
            magic = (first[2:].split() or [""])[0]
            if magic in knowledge.SHELL_CELL_MAGICS:
                return True
        if re.search(r"^\s*(!|%(sx|system)\b)", cell.source, re.M):
            return True
        return any(
            (self._qual(site.callee) or "") in knowledge.SHELL_CALLS
            for stmt in self.stmts
            if stmt.cell is cell
            for site in stmt.effects.calls
        )

    def _prelude_statement(self, stmt: _Stmt, ev: _Events) -> None:
        """`imports`/`functions` cells run first in every step: they cannot read step values."""
        for name in sorted(ev.needs):
            current = self.version.get(name)
            if current is not None and current.kind == "step":
                raise BuildError(
                    f"{stmt.cell.ref}: the {stmt.cell.role} cell reads `{name}`, which step "
                    f"{current.step!r} sets ({current.cell.ref}), but the parameters, imports "
                    "and functions cells run in every step before any step value is loaded: "
                    f"define `{name}` in the {stmt.cell.role} cell, or move the statement into a step"
                )

    def _module_state(self, stmt: _Stmt, ev: _Events) -> None:
        """A name bound to a module's own object (`env = os.environ`) changed in place in
        another step: steps do not share modules, so the change would not reach later steps."""
        for name in sorted(ev.needs & ev.writes):
            origin = self.module_alias.get(name)
            if origin is None or origin[1].step == stmt.cell.step:
                continue
            raise BuildError(
                f"{stmt.cell.ref}: `{name}` is `{origin[0]}` (bound in {origin[1].ref}), an object "
                "of a module, which every step imports afresh: a change to it here does not reach "
                f"later steps; change `{origin[0]}` directly, or copy it where `{name}` is set"
            )

    def _setter_call(self, effects: Effects) -> str | None:
        """`old = np.seterr(all="ignore")`: the setting call alone, which later steps repeat (the
        name it binds travels as a value)."""
        try:
            (node,) = ast.parse(effects.source).body
        except (SyntaxError, ValueError):
            return None
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        if not isinstance(value, ast.Call):
            return None
        dotted = _dotted(value.func)
        if dotted is None:
            return None
        base, path = dotted
        qual = self._qual(("attr", base, path) if path else ("name", base))
        if qual is None or not knowledge.is_state_setter(qual):
            return None
        return ast.get_source_segment(effects.source, value)

    def _prelude_state(self, stmt: _Stmt, ev: _Events) -> None:
        """A function or class of an `imports`/`functions` cell whose state a step changes:
        every step defines it afresh, so the change would not reach later steps."""
        for name, why in sorted(ev.state_changes.items()):
            version = self.version.get(name)
            if version is not None and version.kind == "prelude" and len(self.plans) > 1:
                raise BuildError(
                    f"{stmt.cell.ref}: {why.removeprefix(stmt.cell.ref + ' ')}, but `{name}` "
                    f"is defined in {version.cell.ref} ({version.cell.role}), which every step "
                    "runs afresh: later steps would not see the change; define it in a step, "
                    "or keep the state in an object of its own"
                )

    def _uncarried_seeds(self, stmt: _Stmt, step_stmts: dict[str, list[int]]) -> None:
        later = [n for n, idx in step_stmts.items() if idx and idx[-1] > stmt.index]
        if len(later) < 2:
            return
        for site in stmt.effects.calls:
            qual = self._qual(site.callee)
            if qual and knowledge.seeds_uncarried(qual):
                raise BuildError(
                    f"{stmt.cell.ref}: `{qual}` seeds a global generator whose state a pipeline "
                    "cannot carry from step to step (it carries random, numpy.random and torch): "
                    "later steps would draw other numbers than the notebook; seed a generator "
                    "object and pass it instead, or keep the code that draws in this step"
                )

    def _advance(self, stmt: _Stmt, ev: _Events) -> None:
        """Move the versions of what the statement changed to it."""
        cell, effects = stmt.cell, stmt.effects
        kind = {"parameters": "param", "imports": "prelude", "functions": "prelude"}.get(
            cell.role, cell.role
        )
        for name in ev.writes:
            version_kind = kind
            source = ""
            if name in ev.deletes:
                version_kind = "deleted"
            elif name in effects.imports and kind in ("step", "prelude"):
                source = f"{effects.imports[name][0]}\0{effects.imports[name][1]}"
                version_kind = "import"
            version = Version(stmt.index, version_kind, cell, cell.step, source)
            self.version[name] = version
            self.change_why[(stmt.index, name)] = ev.why.get(name, f"{cell.ref} changes it")
            if cell.role == "step" and cell.step:
                self.last_write[(cell.step, name)] = version
            if name in effects.binds or name in effects.deletes:
                self.callables.pop(name, None)
            if name in effects.binds:
                deps = effects.immutable.get(name)
                self.immutable[name] = deps is not None and all(
                    self.immutable.get(d, False) for d in deps
                )
            elif name in effects.maybe_binds or name in effects.deletes:
                self.immutable[name] = self.immutable.get(name, False) and (
                    name not in effects.maybe_binds or name in effects.immutable
                )
        for name, summaries in effects.defines.items():
            self.callables.setdefault(name, []).extend(summaries)
        for name in effects.binds | effects.maybe_binds | effects.deletes:
            origin = effects.module_objects.get(name)
            module = self._import_qual(origin.split(".")[0]) if origin else None
            if origin and module:
                rest = origin.split(".", 1)[1] if "." in origin else ""
                self.module_alias[name] = (f"{module}.{rest}" if rest else module, cell)
            else:
                self.module_alias.pop(name, None)
        for name in effects.binds | effects.maybe_binds:
            kind_ = effects.unpicklable.get(name) or self._unpicklable_call(effects, name)
            if kind_:
                self.unpicklable[(stmt.index, name)] = kind_

    def _unpicklable_call(self, effects: Effects, name: str) -> str | None:
        dotted = effects.unpicklable_calls.get(name)
        if dotted is None:
            return None
        base, path = dotted
        if not path and any(s.generator for s in self.callables.get(base, [])):
            return "a generator"
        qual = self._qual(("attr", base, path) if path else ("name", base))
        if qual is None:
            return None
        return knowledge.unpicklable_kind(qual.removeprefix("builtins."))

    def _step_statement(self, stmt: _Stmt, ev: _Events) -> None:
        step = stmt.cell.step
        assert step is not None
        held = self.held[step]
        for name in sorted(ev.needs):
            self._use(step, name, stmt.cell)
        for name in sorted(ev.carries - ev.needs):
            current = self.version.get(name)
            if name in held:
                have = held[name]
                if (
                    current is not None
                    and current.kind != "import"
                    and (have is None or have.index != current.index)
                ):
                    # harmless unless this value is used: then the build stops
                    self.conflict[step][name] = self._interleaved(
                        step, name, have, current, stmt.cell
                    )
                continue
            self.lazy[step][name] = (current, stmt.cell)
        for name in ev.writes:
            held[name] = Version(stmt.index, "step", stmt.cell, step)
        for name, why in ev.assumed.items():
            self.assumed[step].setdefault(name, why)

    def _use(self, step: str, name: str, cell: Cell) -> None:
        """Step `step` reads `name` in `cell`: check that it holds the notebook's value there,
        or decide where it comes from (the first time)."""
        held = self.held[step]
        current = self.version.get(name)
        if name in self.conflict[step]:
            raise BuildError(self.conflict[step][name])
        if name in held:
            have = held[name]
            if (
                current is not None
                and current.kind != "import"
                and (have is None or have.index != current.index)
            ):
                raise BuildError(self._interleaved(step, name, have, current, cell))
            if name in self.lazy[step]:
                self._materialize(step, name)
            return
        self._receive(step, name, current, cell)
        held[name] = current

    def _materialize(self, step: str, name: str) -> None:
        """A value the step only carried is used after all: it needs what it carried."""
        previous, cell = self.lazy[step].pop(name)
        self._receive(step, name, previous, cell)

    def _receive(self, step: str, name: str, current: Version | None, cell: Cell) -> None:
        """Step `step` starts with the notebook's version `current` of `name`."""
        plan = self.plans[step]
        start = self.start.get(name)
        if current is None or current.kind == "deleted":
            return
        if current.kind in ("param", "prelude") or (
            current.kind == "import" and current.cell.role != "step"
        ):
            if start is None or start.index != current.index:
                raise BuildError(
                    f"{cell.ref}: step {step!r} reads `{name}` as {current.cell.ref} "
                    f"({current.cell.role}) sets it, but each step runs the "
                    f"`imports`/`functions` cells first, so it would see "
                    f"{start.cell.ref if start else 'no value'}: set `{name}` in one cell only"
                )
        elif current.kind == "import":
            if current.step != step:
                plan.imports.setdefault(name, current.source.split("\0")[0])
        elif current.kind == "dropped":
            raise BuildError(
                f"{cell.ref}: step {step!r} reads `{name}`, which only {current.cell.ref} "
                "sets, and that cell comes before the first tagged cell so it is not part of the "
                "pipeline (as in Kale): tag it `imports`, or give it a `step:` tag"
            )
        elif current.step != step:
            producer = current.step
            assert producer is not None
            plan.inputs[name] = producer
            plan.reasons[name] = self.change_why.get((current.index, name), "")
            self.wanted.append((producer, name, current, step, cell))

    def _interleaved(
        self, step: str, name: str, have: Version | None, current: Version, cell: Cell
    ) -> str:
        by = f"step {current.step!r}" if current.step else f"the {current.cell.role} cell"
        label = name.removeprefix(_RNG)
        what = f"the state of `{label}`" if name.startswith(_RNG) else f"`{name}`"
        before = f" after {have.cell.ref}" if have is not None else ""
        return (
            f"{current.cell.ref}: {by} changes {what}{before} and before {cell.ref} of step "
            f"{step!r} uses it, but a step's cells run together: move {current.cell.ref} into "
            f"step {step!r} (or out of the way), or use another name"
        )

    def _metrics(self, ev: _Events, cell: Cell) -> None:
        last = list(self.plans)[-1]
        text = cell.source

        def position(name: str) -> int:
            found = re.search(rf"\b{re.escape(name)}\b", text)
            return found.start() if found else len(text)

        for name in sorted(ev.needs, key=lambda n: (position(n), n)):
            current = self.version.get(name)
            if current is None or current.kind in ("deleted", "import", "dropped"):
                continue
            if name not in self.metric_names:
                self.metric_names.append(name)
            if current.kind == "step":
                producer = current.step
                assert producer is not None
                self.wanted.append((producer, name, current, "", cell))
                if name not in self.plans[producer].metrics:
                    self.plans[producer].metrics.append(name)
            elif name not in self.plans[last].metrics:
                self.plans[last].metrics.append(name)  # a parameter: every step has it

    def _check_outputs(self) -> None:
        done = 0
        while done < len(self.wanted):  # a carried value used downstream may want more
            producer, name, version, consumer, cell = self.wanted[done]
            done += 1
            final = self.last_write.get((producer, name))
            who = f"step {consumer!r}" if consumer else "the pipeline-metrics cell"
            if final is not None and final.index != version.index:
                raise BuildError(
                    f"{final.cell.ref}: step {producer!r} changes `{name}` again after "
                    f"{who} reads it in {cell.ref}; move the cell into one step or rename "
                    "the variable"
                )
            if name in self.conflict[producer]:
                raise BuildError(self.conflict[producer][name])
            kind = self.unpicklable.get((version.index, name))
            if kind and consumer:
                raise BuildError(
                    f"{version.cell.ref}: step {producer!r} passes `{name}` ({kind}) to step "
                    f"{consumer!r}, but values crossing steps are pickled and this one "
                    "cannot be: create it in the step that uses it, or put both cells in "
                    "one step"
                )
            if name in self.lazy[producer]:
                self._materialize(producer, name)
            if consumer and name not in self.plans[producer].outputs:
                self.plans[producer].outputs.append(name)

    def _place_replays(self, step_stmts: dict[str, list[int]]) -> None:
        for index, cell, source in self.replays:
            for name, indices in step_stmts.items():
                if not indices or name == cell.step or indices[-1] < index:
                    continue
                if indices[0] < index:
                    raise BuildError(
                        f"{cell.ref}: `{source.splitlines()[0]}` changes a process-wide setting "
                        f"between cells of step {name!r}, which run together in the pipeline: "
                        "move it into an `imports` cell"
                    )
                self._check_replayable(index, cell, source, name)
                self.plans[name].replay.append(source)

    def _check_replayable(self, index: int, cell: Cell, source: str, step: str) -> None:
        stmt = self.stmts[index]
        for name in stmt.effects.needs:
            start = self.start.get(name)
            defined = [
                s for s in self.stmts[:index] if name in s.effects.writes and s.cell.role == "step"
            ]
            if defined and not all(name in s.effects.imports for s in defined):
                raise BuildError(
                    f"{cell.ref}: `{source.splitlines()[0]}` changes a process-wide setting from "
                    f"`{name}`, a value of step {defined[-1].cell.step!r}; later steps repeat the "
                    "setting, so compute it from parameters in an `imports` cell instead"
                )
            if defined:
                self.plans[step].imports.setdefault(name, defined[-1].effects.imports[name][0])
            del start

    def _finish(self, uses_magics: bool) -> Plan:
        plans = self.plans
        graph: dict[str, set[str]] = {}
        for name, plan in plans.items():
            deps = set(plan.after) | set(plan.inputs.values())
            plan.after = sorted(deps, key=list(plans).index)
            graph[name] = deps
        sorter = graphlib.TopologicalSorter(graph)
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            cycle = exc.args[1]
            first = self.grammar.steps[cycle[0]].first_ref
            raise BuildError(
                f"{first}: steps depend on each other in a cycle ({' → '.join(cycle)}); "
                "check their `prev:` tags and the variables and files they share"
            ) from exc
        order: list[str] = []
        rank = list(plans).index
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=rank)
            order.extend(ready)
            sorter.done(*ready)
        for step, plan in plans.items():
            plan.unchanged = {
                name: why
                for name, why in sorted(self.assumed[step].items())
                if name in plan.inputs and (step, name) not in self.last_write
            }
        for plan in plans.values():
            plan.outputs = sorted(plan.outputs)
            # values load producer by producer in run order: a class travels with its objects
            # by value, and the state loaded last (the latest producer's) is the one kept
            plan.inputs = dict(
                sorted(plan.inputs.items(), key=lambda kv: (order.index(kv[1]), kv[0]))
            )
            plan.imports = dict(sorted(plan.imports.items()))
            plan.reasons = {k: plan.reasons[k] for k in [*plan.inputs, *sorted(plan.file_after)]}
        prelude_defines = any(
            stmt.effects.defines
            for stmt in self.stmts
            if stmt.cell.role in ("imports", "functions")
        )
        return Plan(
            {name: plans[name] for name in order},
            self.metric_names,
            uses_magics,
            list(dict.fromkeys(self.warnings)),
            prelude_defines,
            self.problems,
        )


_PATHLIKE = re.compile(
    r"^(?!\w+://)[\w.~/\\-]*[\w-]\.[A-Za-z0-9]{1,8}\Z|^(?!\w+://)[\w.~-]+(/[\w.~-]+)+/?\Z"
)


def _written_modules(cells: list[Cell]) -> set[str]:
    """Modules the notebook writes itself (`%%writefile helper.py`): importing one reads it."""
    found: set[str] = set()
    for cell in cells:
        target = _writefile_target(cell.source)
        if target and target.endswith(".py"):
            found.add(target.rsplit("/", 1)[-1][: -len(".py")])
    return found


def _writefile_target(source: str) -> str | None:
    first = source.lstrip("\n").split("\n", 1)[0]
    words = first[2:].split() if first.startswith("%%") else []
    if words and words[0] in ("writefile", "file"):
        named = [w for w in words[1:] if not w.startswith("-")]
        return named[-1].strip("'\"") if named else None
    return None


def literal_paths(source: str) -> list[str]:
    """String literals of a cell that look like file paths (`data/train.csv`, `out/`), and the
    file a `%%writefile PATH` cell writes."""
    target = _writefile_target(source)
    if target is not None:
        return [target]
    try:
        tree = ast.parse(python_of(source))
    except SyntaxError:
        return []
    found: list[str] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and len(node.value) < 256
            and _PATHLIKE.match(node.value)
            and node.value not in found
        ):
            found.append(node.value)
    return found


def qual_only_setters(effects: Effects) -> bool:
    """A statement that only changes settings: no name of the notebook is bound or changed."""
    return not (effects.binds or effects.maybe_binds or effects.deletes or effects.defines)


def _model_method(site: CallSite, qual: str | None) -> str | None:
    """The name of the model method (`fit`, `predict`, ...) a call makes on an object of the
    notebook, if it is one (`lr.fit(X)`, `make_pipeline(...).fit(X)`; not a library function,
    whose qualified name is `qual`)."""
    callee = site.callee
    if callee[0] == "method" and len(callee) > 1:
        method = callee[1]
    elif callee[0] == "attr" and qual is None:
        method = callee[2].rsplit(".", 1)[-1]
    else:
        return None
    return method if knowledge.model_method_keeps_args(method) else None


def _qualify(callee: tuple[str, ...], imports: dict[str, str]) -> str | None:
    if callee[0] == "name" and callee[1] in imports:
        return imports[callee[1]]
    if callee[0] == "attr" and callee[1] in imports:
        return f"{imports[callee[1]]}.{callee[2]}"
    return None


_CONSTRUCTION = frozenset({"__new__", "__init__", "__post_init__"})


def _bind_args(summary: Summary, site: CallSite) -> dict[str, frozenset[str]] | None:
    if summary.varargs:
        return None
    binding = {
        summary.params[i]: refs for i, refs in enumerate(site.args) if i < len(summary.params)
    }
    binding.update(site.kwargs)
    return binding


def plan_steps(grammar: Grammar) -> Plan:
    """Resolve every cross-step value and the order of the steps.

    Raises:
        BuildError: a value that cannot cross steps (names the variable, step and cell), a step
            whose cells would see another step's change in between, names set in ways the
            analysis cannot see, or a cycle between steps.
    """
    return _Planner(grammar).run()
