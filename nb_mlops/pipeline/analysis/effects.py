# mypy: disable-error-code="no-untyped-call,misc"
"""Facts about each top-level statement of a cell, read from its AST with Python's scoping rules:
the global names it reads, binds, deletes and changes in place (items, attributes, augmented
assignment, `with`), the calls it makes (callee and what each argument may refer to), the names
that may share objects afterwards, its imports, and summaries of the functions and classes it
defines (what their bodies read and change when called later).

Function bodies, lambdas, comprehensions and class bodies are scopes of their own: a name bound
there is not a global unless declared `global`. What a call does to its arguments is decided by
the planner (`plan.py`), which knows which names are imports and which are notebook functions.
"""

from __future__ import annotations

import ast
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from nb_mlops.core.errors import BuildError
from nb_mlops.pipeline.analysis import knowledge

__all__ = ["CallSite", "Effects", "Summary", "analyze_source", "imports_of", "python_of"]

# cell magics whose body is Python run in the user namespace (`%%timeit` runs its body in a
# function of its own: what it binds stays there; `%%capture NAME` binds NAME afterwards)
_PY_CELL_MAGICS = {"track", "step", "time", "capture", "prun", "timeit"}
# line magics whose argument is a statement run in the user namespace (`%time x = f()`)
_PY_LINE_MAGICS = {"time"}
_TIMEIT_BODY = "_nb_mlops_timeit_body"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# builtins whose result is a new immutable value: it shares nothing with the arguments
_FRESH = frozenset(
    {
        "len",
        "str",
        "repr",
        "int",
        "float",
        "bool",
        "complex",
        "hash",
        "id",
        "isinstance",
        "issubclass",
        "callable",
        "hasattr",
        "ord",
        "chr",
        "format",
        "round",
        "abs",
        "bin",
        "hex",
        "oct",
        "ascii",
        "type",
    }
)
Names = frozenset[str]
EMPTY: Names = frozenset()


@dataclass
class CallSite:
    """One call: who is called and what each argument may refer to.

    `callee` is ("name", n), ("attr", base, "a.b") for `base.a.b(...)`, ("method", m) for a
    method `m` of a computed object, ("magic", name, args) for an IPython line magic, or
    ("other",). Argument sets hold global names and, inside a
    function body, `@param` for what the function was given.
    """

    callee: tuple[str, ...]
    args: list[Names]
    kwargs: dict[str, Names]
    star: Names
    receiver: Names
    line: int

    def all_args(self) -> Names:
        found: set[str] = set(self.star)
        for names in self.args:
            found |= names
        for names in self.kwargs.values():
            found |= names
        return frozenset(found)


@dataclass
class Summary:
    """What a function, lambda or class defined in the notebook does when called: the globals
    its body reads, binds (`global x; x = ...`) or deletes, changes in place, the calls it makes,
    and which of its parameters it changes."""

    name: str
    line: int
    params: list[str] = field(default_factory=list)
    varargs: bool = False
    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)
    changes: set[str] = field(default_factory=set)
    param_changes: set[str] = field(default_factory=set)
    calls: list[CallSite] = field(default_factory=list)
    links: list[Names] = field(default_factory=list)
    generator: bool = False
    kind: str = "function"  # function | lambda | class
    nested: bool = False  # defines functions or lambdas: what it returns may be one of them
    # a method that changes its class's own state (`cls.n += 1`, `type(self).seen.append(x)`):
    # class attributes are shared by every instance, and travel with the class
    class_state: bool = False
    # a class's methods, and those of them that change its state (directly or through another)
    methods: set[str] = field(default_factory=set)
    state_methods: set[str] = field(default_factory=set)
    # parameters whose default is a mutable object kept by the function (`acc=[]`)
    shared_defaults: set[str] = field(default_factory=set)

    def merge(self, other: Summary) -> None:
        self.reads |= other.reads
        self.writes |= other.writes
        self.changes |= other.changes
        self.calls.extend(other.calls)
        self.links.extend(other.links)


@dataclass
class Effects:
    """One top-level statement.

    Attributes:
        needs: global names whose current value the statement reads.
        binds: names it certainly (re)binds; `maybe_binds`: names it binds on some paths only.
        deletes: names it `del`s; `changes`: names whose object it changes in place directly.
        calls: the calls it makes (what they do to their arguments is decided by the planner).
        links: sets of names that may share objects after the statement.
        imports: name → (import statement, qualified name of what it binds).
        defines: name → summary of the function/class/lambda bound to it.
        immutable: name bound → the names its value is computed from, when the value is an
            immutable (number, string, tuple of those) if those names are immutable too.
        unpicklable: name bound → the kind of value pickle refuses (or the callee to resolve).
    """

    line: int
    source: str
    needs: set[str] = field(default_factory=set)
    binds: set[str] = field(default_factory=set)
    maybe_binds: set[str] = field(default_factory=set)
    deletes: set[str] = field(default_factory=set)
    changes: set[str] = field(default_factory=set)
    calls: list[CallSite] = field(default_factory=list)
    links: list[Names] = field(default_factory=list)
    imports: dict[str, tuple[str, str]] = field(default_factory=dict)
    star_imports: list[str] = field(default_factory=list)
    defines: dict[str, list[Summary]] = field(default_factory=dict)
    lambdas: list[Summary] = field(default_factory=list)
    immutable: dict[str, Names] = field(default_factory=dict)
    unpicklable: dict[str, str] = field(default_factory=dict)
    unpicklable_calls: dict[str, tuple[str, ...]] = field(default_factory=dict)
    state_targets: list[str] = field(default_factory=list)
    class_changes: set[str] = field(default_factory=set)  # `type(x).n = 1`: x's class changes
    module_objects: dict[str, str] = field(default_factory=dict)  # name → `mod.attr` it is
    dynamic: str | None = None

    @property
    def writes(self) -> set[str]:
        return self.binds | self.maybe_binds | self.deletes


class _Scope:
    def __init__(self, kind: str, owner: bool = False) -> None:
        self.kind = kind  # module | function | class | comprehension
        self.locals: set[str] = set()
        self.globals: set[str] = set()
        self.nonlocals: set[str] = set()
        self.params: set[str] = set()
        self.owner = owner  # the function a summary is being made for
        self.alias: dict[str, set[str]] = {}


class _Bound:
    """The names a function body binds, declares global and declares nonlocal (see
    `_bound_names`)."""

    def __init__(self, params: set[str]) -> None:
        self.bound = set(params)
        self.declared_global: set[str] = set()
        self.declared_nonlocal: set[str] = set()

    def visit(self, node: ast.AST, in_comp: bool = False) -> None:
        if self.scope(node, in_comp):
            return
        self.note(node, in_comp)
        for inner in ast.iter_child_nodes(node):
            self.visit(inner, in_comp)

    def scope(self, node: ast.AST, in_comp: bool) -> bool:
        """Nodes whose children are not all in this scope: True when handled here."""
        if isinstance(node, ast.NamedExpr):
            self.bound.add(node.target.id)
            self.visit(node.value, in_comp)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            self.bound.add(node.name)
            for deco in node.decorator_list:
                self.visit(deco, in_comp)
        elif isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
            for inner in ast.iter_child_nodes(node):
                self.visit(inner, True)
        else:
            return isinstance(node, ast.Lambda)
        return True

    def note(self, node: ast.AST, in_comp: bool) -> None:
        """The names `node` itself binds or declares."""
        if isinstance(node, ast.Global):
            self.declared_global.update(node.names)
        elif isinstance(node, ast.Nonlocal):
            self.declared_nonlocal.update(node.names)
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            if not in_comp:
                self.bound.add(node.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name != "*":
                    self.bound.add(alias.asname or alias.name.split(".")[0])
        elif (
            isinstance(node, ast.ExceptHandler)
            and node.name
            or isinstance(node, ast.MatchAs | ast.MatchStar)
            and node.name
        ):
            self.bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            self.bound.add(node.rest)


def _bound_names(body: list[ast.stmt], params: set[str]) -> tuple[set[str], set[str], set[str]]:
    """Names a function body binds (its locals before `global`/`nonlocal` are applied), and the
    names it declares global and nonlocal. Nested scopes are not entered, except comprehensions
    for their walrus targets."""
    found = _Bound(params)
    for stmt in body:
        found.visit(stmt)
    return found.bound, found.declared_global, found.declared_nonlocal


def _params(args: ast.arguments) -> tuple[list[str], set[str], bool]:
    positional = [a.arg for a in [*args.posonlyargs, *args.args]]
    every = set(positional) | {a.arg for a in args.kwonlyargs}
    varargs = bool(args.vararg or args.kwarg)
    if args.vararg:
        every.add(args.vararg.arg)
    if args.kwarg:
        every.add(args.kwarg.arg)
    return positional, every, varargs


def _is_generator(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    stack: list[ast.AST] = list(node.body)
    while stack:
        child = stack.pop()
        if isinstance(child, ast.Yield | ast.YieldFrom):
            return True
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        stack.extend(ast.iter_child_nodes(child))
    return False


def _class_of(node: ast.expr) -> ast.expr | None:
    """`type(x)...`, `x.__class__...`: x, whose class's state the expression reaches."""
    while isinstance(node, ast.Attribute | ast.Subscript):
        if isinstance(node, ast.Attribute) and node.attr == "__class__":
            return node.value
        node = node.value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "type"
        and len(node.args) == 1
    ):
        return node.args[0]
    return None


def _shared_defaults(args: ast.arguments) -> set[str]:
    """Parameters whose default is evaluated once into a mutable object (`acc=[]`, `d=dict()`)."""
    positional = [*args.posonlyargs, *args.args]
    pairs = list(
        zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True)
    )
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d]
    immutable = ast.Constant | ast.Tuple | ast.Name | ast.Attribute | ast.UnaryOp | ast.BinOp
    return {a.arg for a, d in pairs if d is not None and not isinstance(d, immutable)}


def _state_methods(methods: dict[str, Summary]) -> set[str]:
    """The methods that change their class's state: directly, or by calling one that does on
    `self`/`cls` (to a fixed point)."""
    found = {name for name, m in methods.items() if m.class_state}
    grew = True
    while grew:
        grew = False
        for name, method in methods.items():
            if name in found:
                continue
            own = {f"@{method.params[0]}"} if method.params else set()
            for site in method.calls:
                if (
                    site.callee[0] == "method"
                    and site.callee[1] in found
                    and (not site.receiver or site.receiver <= own)
                ):
                    found.add(name)
                    grew = True
                    break
    return found


def _is_classmethod(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "classmethod" for d in node.decorator_list)


def _changes_param(summary: Summary, param: str) -> bool:
    """The body changes the object `param` in place: assigns to it, calls one of its methods,
    or `setattr`/`delattr` on it."""
    if param in summary.param_changes:
        return True
    ref = f"@{param}"
    for site in summary.calls:
        if site.callee[0] in ("method", "attr") and ref in site.receiver:
            return True
        setter = site.callee in (("name", "setattr"), ("name", "delattr"))
        if setter and site.args and ref in site.args[0]:
            return True
    return False


def _through_calls(node: ast.expr) -> tuple[str, str] | None:
    """`decimal.getcontext().prec` → ("decimal", "getcontext().prec"): a target reached through
    calls of a name's attributes (None when the chain does not start at a name)."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call) and not node.args and not node.keywords:
            parts.append("()")
            node = node.func
        else:
            break
    if isinstance(node, ast.Name) and "()" in parts:
        return node.id, ".".join(reversed(parts)).replace(".()", "()")
    return None


def _dotted(node: ast.expr) -> tuple[str, str] | None:
    """`a.b.c` → ("a", "b.c"); a bare name → (name, "")."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return node.id, ".".join(reversed(parts))
    return None


def _is_ipython(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "get_ipython"
    )


class _Walker:
    """Walks one top-level statement (a module-level sink) or one function body (a summary)."""

    def __init__(
        self,
        effects: Effects | None,
        summary: Summary | None,
        scopes: list[_Scope],
        imports: dict[str, str],
    ):
        self.effects = effects
        self.summary = summary
        self.scopes = scopes
        self.imports = imports
        self.bound: list[set[str]] = [set()]  # module level: names bound earlier on this path
        self.depth = 0  # conditional blocks entered (module level)

    # --- names ----------------------------------------------------------------------------

    def resolve(self, name: str) -> Names:
        """What a name refers to: {global}, {"@param"} of the function summarised, the alias
        set of a local variable, or nothing (a local the caller cannot see)."""
        innermost = True
        for scope in reversed(self.scopes):
            if scope.kind == "module":
                return frozenset({name})
            if scope.kind == "class":
                if innermost and name in scope.locals:
                    return EMPTY
                innermost = False
                continue
            innermost = False
            if name in scope.globals:
                return frozenset({name})
            if name in scope.nonlocals:
                continue
            if name in scope.locals:
                if scope.owner and name in scope.params:
                    return frozenset({f"@{name}"})
                return frozenset(scope.alias.get(name, ()))
        return frozenset({name})

    def _global(self, name: str) -> str | None:
        refs = self.resolve(name)
        if refs == frozenset({name}) and not name.startswith("@"):
            return name
        return None

    def read(self, name: str) -> None:
        target = self._global(name)
        if target is None:
            return
        if self.effects is not None:
            if not any(target in names for names in self.bound[-1:]):
                self.effects.needs.add(target)
        elif self.summary is not None:
            self.summary.reads.add(target)

    def bind(self, name: str, refs: Names = EMPTY) -> None:
        target = self._global(name)
        if target is None:
            scope = self._function_scope()
            if scope is not None and name in scope.locals:
                scope.alias.setdefault(name, set()).update(refs)
            return
        if self.effects is not None:
            (self.effects.maybe_binds if self.depth else self.effects.binds).add(target)
            self.bound[-1].add(target)
        elif self.summary is not None:
            self.summary.writes.add(target)

    def delete(self, name: str) -> None:
        target = self._global(name)
        if target is None:
            return
        if self.effects is not None:
            self.read(name)
            self.effects.deletes.add(target)
            self.bound[-1].discard(target)
        elif self.summary is not None:
            self.summary.writes.add(target)

    def change(self, refs: Names) -> None:
        if not refs:
            return
        if self.effects is not None:
            self.effects.changes |= refs
        elif self.summary is not None:
            self.summary.changes |= {r for r in refs if not r.startswith("@")}
            self.summary.param_changes |= {r[1:] for r in refs if r.startswith("@")}

    def class_change(self, base: ast.expr) -> None:
        """A change through `type(x)` or `x.__class__` changes a class: in a method, its own;
        in a statement, the classes x's objects may hold."""
        owner = _class_of(base)
        if owner is None:
            return
        if self.summary is not None:
            self.summary.class_state = True
        elif self.effects is not None:
            self.effects.class_changes |= self.refs(owner)

    def link(self, refs: Names) -> None:
        if len(refs) > 1:
            (self.effects or self.summary).links.append(refs)  # type: ignore[union-attr]

    def _function_scope(self) -> _Scope | None:
        for scope in reversed(self.scopes):
            if scope.kind == "function":
                return scope
            if scope.kind == "module":
                return None
        return None

    # --- what a value may refer to ---------------------------------------------------------

    def refs(self, node: ast.expr | None) -> Names:
        """The names whose objects the value of `node` may be, contain or be part of."""
        if node is None:
            return EMPTY
        handler = self._REFS.get(type(node))
        return EMPTY if handler is None else getattr(self, handler)(node)

    def _refs_name(self, node: ast.Name) -> Names:
        return self.resolve(node.id)

    def _refs_value(
        self, node: ast.Attribute | ast.Subscript | ast.Starred | ast.Await | ast.NamedExpr
    ) -> Names:
        return self.refs(node.value)

    def _refs_elts(self, node: ast.List | ast.Tuple | ast.Set) -> Names:
        return frozenset().union(*(self.refs(e) for e in node.elts))

    def _refs_dict(self, node: ast.Dict) -> Names:
        return frozenset().union(
            *(self.refs(e) for e in [*node.keys, *node.values] if e is not None)
        )

    def _refs_call(self, node: ast.Call) -> Names:
        if isinstance(node.func, ast.Name) and node.func.id in _FRESH:
            return EMPTY
        qual = self.qualify(node.func)
        if qual is not None and knowledge.fresh_result(qual):
            return EMPTY
        if qual is None and isinstance(node.func, ast.Attribute):
            if knowledge.returns_receiver(node.func.attr):
                return self.refs(node.func.value)  # `model.fit(X, y)` returns the model
            if knowledge.model_result_is_new(node.func.attr):
                return EMPTY  # `model.predict(X)`: a new array, `model.score(X, y)` a number
        found = frozenset().union(
            *(self.refs(a) for a in node.args), *(self.refs(k.value) for k in node.keywords)
        )
        if isinstance(node.func, ast.Attribute):
            found |= self.refs(node.func.value)
        elif isinstance(node.func, ast.Name) and self._global(node.func.id):
            found |= {f"!{node.func.id}"}  # called: a class's instances carry its methods
        return found

    def _refs_ifexp(self, node: ast.IfExp) -> Names:
        return self.refs(node.body) | self.refs(node.orelse)

    def _refs_boolop(self, node: ast.BoolOp) -> Names:
        return frozenset().union(*(self.refs(v) for v in node.values))

    def _refs_binop(self, node: ast.BinOp) -> Names:
        # `a + b`, `[x] * 3` build containers holding the operands' elements; other
        # operators make new values
        if isinstance(node.op, ast.Add | ast.Mult):
            return self.refs(node.left) | self.refs(node.right)
        return EMPTY

    def _refs_comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp
    ) -> Names:
        local = {
            t.id for gen in node.generators for t in ast.walk(gen.target) if isinstance(t, ast.Name)
        }
        inside: set[str] = set()
        for gen in node.generators:
            inside |= self.refs(gen.iter)  # the elements come from the iterables
        scope = _Scope("comprehension")
        scope.locals = local
        self.scopes.append(scope)
        try:
            elts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            for elt in elts:
                inside |= self.refs(elt)
        finally:
            self.scopes.pop()
        return frozenset(inside)

    # anything else (a constant, `-x`, `a < b`, an f-string) is a new value: it refers to nothing
    _REFS: ClassVar[dict[type[ast.expr], str]] = {
        ast.Name: "_refs_name",
        ast.Attribute: "_refs_value",
        ast.Subscript: "_refs_value",
        ast.Starred: "_refs_value",
        ast.Await: "_refs_value",
        ast.NamedExpr: "_refs_value",
        ast.List: "_refs_elts",
        ast.Tuple: "_refs_elts",
        ast.Set: "_refs_elts",
        ast.Dict: "_refs_dict",
        ast.Call: "_refs_call",
        ast.IfExp: "_refs_ifexp",
        ast.BoolOp: "_refs_boolop",
        ast.BinOp: "_refs_binop",
        ast.ListComp: "_refs_comprehension",
        ast.SetComp: "_refs_comprehension",
        ast.GeneratorExp: "_refs_comprehension",
        ast.DictComp: "_refs_comprehension",
    }

    def qualify(self, func: ast.expr) -> str | None:
        """The qualified name of a library function called (`numpy.mean`), from the notebook's
        imports."""
        dotted = _dotted(func)
        if dotted is None or self._global(dotted[0]) is None:
            return None
        module = self.imports.get(dotted[0])
        if module is None:
            return None
        return f"{module}.{dotted[1]}" if dotted[1] else module

    def immutable_deps(self, node: ast.expr) -> Names | None:
        """The names an immutable value is computed from (None: maybe not immutable)."""
        if isinstance(node, ast.Constant):
            return EMPTY
        if isinstance(node, ast.JoinedStr | ast.Compare):
            return EMPTY
        if isinstance(node, ast.Name):
            return frozenset({node.id}) if self._global(node.id) else None
        if isinstance(node, ast.Tuple):
            deps: set[str] = set()
            for elt in node.elts:
                inner = self.immutable_deps(elt)
                if inner is None:
                    return None
                deps |= inner
            return frozenset(deps)
        if isinstance(node, ast.BinOp):
            left, right = self.immutable_deps(node.left), self.immutable_deps(node.right)
            return None if left is None or right is None else left | right
        if isinstance(node, ast.UnaryOp):
            return self.immutable_deps(node.operand)
        if isinstance(node, ast.BoolOp):
            found: set[str] = set()
            for value in node.values:
                inner = self.immutable_deps(value)
                if inner is None:
                    return None
                found |= inner
            return frozenset(found)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FRESH
        ):
            return EMPTY if node.func.id != "type" else None
        if isinstance(node, ast.Call):
            qual = self.qualify(node.func)
            if qual is not None and knowledge.immutable_result(qual):
                return EMPTY
        return None

    # --- statements ------------------------------------------------------------------------

    def block(self, stmts: list[ast.stmt], keep: bool = False) -> None:
        """Statements that may not run (a branch, a loop body): what they bind is only known to
        be bound inside them."""
        if keep:
            for stmt in stmts:
                self.stmt(stmt)
            return
        self.bound.append(set(self.bound[-1]))
        self.depth += 1
        for stmt in stmts:
            self.stmt(stmt)
        self.depth -= 1
        self.bound.pop()

    def store(self, target: ast.expr, refs: Names, stored: set[str]) -> None:
        if isinstance(target, ast.Name):
            self.bind(target.id, refs)
            if self._global(target.id):
                stored.add(target.id)
        elif isinstance(target, ast.Tuple | ast.List):
            for elt in target.elts:
                self.store(elt, refs, stored)
        elif isinstance(target, ast.Starred):
            self.store(target.value, refs, stored)
        elif isinstance(target, ast.Attribute | ast.Subscript):
            self.expr(target.value)
            if isinstance(target, ast.Subscript):
                self.expr(target.slice)
            base = self.refs(target.value)
            self.change(base)
            self.class_change(target.value)
            stored.update(base)
            self.state_target(target)

    def state_target(self, target: ast.expr) -> None:
        # `os.environ[k] = v`, `pd.options.x = y`, `decimal.getcontext().prec = 4`: the planner
        # decides whether the base is a module
        if self.effects is not None:
            dotted = _dotted(target.value if isinstance(target, ast.Subscript) else target)
            if dotted is None:
                dotted = _through_calls(target)
            if dotted is not None:
                self.effects.state_targets.append(".".join(p for p in dotted if p))

    def assign(self, targets: list[ast.expr], value: ast.expr | None) -> None:
        if value is None:
            return
        self.expr(value)
        refs = self.refs(value)
        stored: set[str] = set()
        for target in targets:
            self.store(target, refs, stored)
        fresh = isinstance(value, ast.Call) and not refs
        if not fresh or len(targets) > 1:
            # the parts of one value may share objects; a library's new values do not
            self.link(frozenset(stored) | refs)
        if self.effects is not None:
            deps = self.immutable_deps(value)
            lambdas = [n for n in ast.walk(value) if isinstance(n, ast.Lambda)]
            for target in targets:
                if isinstance(target, ast.Name) and self._global(target.id):
                    if deps is not None:
                        self.effects.immutable[target.id] = deps
                    if lambdas:
                        self.effects.defines.setdefault(target.id, []).extend(
                            self.lambda_summary(lam, target.id) for lam in lambdas
                        )
                    self.note_unpicklable(target.id, value)
                    if isinstance(value, ast.Attribute):
                        dotted = _dotted(value)
                        if dotted is not None and dotted[0] in self.imports:
                            self.effects.module_objects[target.id] = ".".join(dotted)

    def note_unpicklable(self, name: str, value: ast.expr | None) -> None:
        assert self.effects is not None
        if isinstance(value, ast.GeneratorExp):
            self.effects.unpicklable[name] = "a generator"
        elif isinstance(value, ast.Call):
            dotted = _dotted(value.func)
            if dotted is not None:
                self.effects.unpicklable_calls[name] = dotted

    @contextlib.contextmanager
    def branch(self) -> Iterator[None]:
        """Code that may not run (a loop body, a handler, a case): what it binds is only known
        to be bound inside it."""
        self.bound.append(set(self.bound[-1]))
        self.depth += 1
        yield
        self.depth -= 1
        self.bound.pop()

    def stmt(self, node: ast.stmt) -> None:
        handler = self._STMTS.get(type(node), "other_stmt")
        getattr(self, handler)(node)

    def assign_stmt(self, node: ast.Assign) -> None:
        self.assign(node.targets, node.value)

    def ann_assign_stmt(self, node: ast.AnnAssign) -> None:
        if self.effects is not None and self.depth == 0:
            self.expr(node.annotation)
        self.assign([node.target], node.value)

    def aug_assign_stmt(self, node: ast.AugAssign) -> None:
        self.expr(node.value)
        refs = self.refs(node.value)
        target: ast.expr = node.target
        if isinstance(target, ast.Name):
            self.read(target.id)
            own = self.resolve(target.id)
            self.bind(target.id, refs)
            self.change(own)  # in place for a list, an array, a frame
            self.link(own | refs)
        else:
            stored: set[str] = set()
            self.store(target, refs, stored)
            self.link(frozenset(stored) | refs)

    def delete_stmt(self, node: ast.Delete) -> None:
        for target in node.targets:
            if isinstance(target, ast.Name):
                self.delete(target.id)
            elif isinstance(target, ast.Attribute | ast.Subscript):
                self.expr(target.value)
                if isinstance(target, ast.Subscript):
                    self.expr(target.slice)
                self.change(self.refs(target.value))
                self.class_change(target.value)
                self.state_target(target)
            else:
                self.stmt(ast.Delete(targets=list(getattr(target, "elts", []))))

    def for_stmt(self, node: ast.For | ast.AsyncFor) -> None:
        self.expr(node.iter)
        refs = self.refs(node.iter)
        with self.branch():
            targets: set[str] = set()
            self.store(node.target, refs, targets)
            self.link(frozenset(targets) | refs)
            for stmt in node.body:
                self.stmt(stmt)
        self.block(node.orelse)

    def if_stmt(self, node: ast.While | ast.If) -> None:
        self.expr(node.test)
        self.block(node.body)
        self.block(node.orelse)

    def with_stmt(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.expr(item.context_expr)
            refs = self.refs(item.context_expr)
            if not isinstance(item.context_expr, ast.Call):
                self.change(refs)  # __enter__/__exit__ of an existing object
            if item.optional_vars is not None:
                bound: set[str] = set()
                self.store(item.optional_vars, refs, bound)
                self.link(frozenset(bound) | refs)
                if (
                    self.effects is not None
                    and isinstance(item.optional_vars, ast.Name)
                    and isinstance(item.context_expr, ast.Call)
                ):
                    self.note_unpicklable(item.optional_vars.id, item.context_expr)
        self.block(node.body, keep=True)

    def try_stmt(self, node: ast.Try | ast.TryStar) -> None:
        self.block(node.body)
        for handler in node.handlers:
            if handler.type is not None:
                self.expr(handler.type)
            with self.branch():
                if handler.name:
                    self.bind(handler.name)
                for stmt in handler.body:
                    self.stmt(stmt)
        self.block(node.orelse)
        self.block(node.finalbody)

    def match_stmt(self, node: ast.Match) -> None:
        self.expr(node.subject)
        for case in node.cases:
            with self.branch():
                for child in ast.walk(case.pattern):
                    self.pattern(child)
                if case.guard is not None:
                    self.expr(case.guard)
                for stmt in case.body:
                    self.stmt(stmt)

    def pattern(self, child: ast.AST) -> None:
        """One node of a `case` pattern: the names it binds, the values it reads."""
        if isinstance(child, ast.MatchAs | ast.MatchStar) and child.name:
            self.bind(child.name)
        elif isinstance(child, ast.MatchMapping) and child.rest:
            self.bind(child.rest)
        elif isinstance(child, ast.MatchValue | ast.MatchClass):
            self.expr(child.value if isinstance(child, ast.MatchValue) else child.cls)

    def function_stmt(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.function_def(node)

    def class_stmt(self, node: ast.ClassDef) -> None:
        self.class_def(node)

    def import_stmt(self, node: ast.Import | ast.ImportFrom) -> None:
        self.import_(node)

    def scope_stmt(self, node: ast.Global | ast.Nonlocal) -> None:
        pass

    def return_stmt(self, node: ast.Return) -> None:
        self.expr(node.value)

    def other_stmt(self, node: ast.stmt) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.expr(child)
            elif isinstance(child, ast.stmt):
                self.stmt(child)

    _STMTS: ClassVar[dict[type[ast.stmt], str]] = {
        ast.Assign: "assign_stmt",
        ast.AnnAssign: "ann_assign_stmt",
        ast.AugAssign: "aug_assign_stmt",
        ast.Delete: "delete_stmt",
        ast.For: "for_stmt",
        ast.AsyncFor: "for_stmt",
        ast.While: "if_stmt",
        ast.If: "if_stmt",
        ast.With: "with_stmt",
        ast.AsyncWith: "with_stmt",
        ast.Try: "try_stmt",
        ast.TryStar: "try_stmt",
        ast.Match: "match_stmt",
        ast.FunctionDef: "function_stmt",
        ast.AsyncFunctionDef: "function_stmt",
        ast.ClassDef: "class_stmt",
        ast.Import: "import_stmt",
        ast.ImportFrom: "import_stmt",
        ast.Global: "scope_stmt",
        ast.Nonlocal: "scope_stmt",
        ast.Return: "return_stmt",
    }

    def import_(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                if self.effects is not None:
                    self.effects.star_imports.append(ast.unparse(node))
                continue
            if isinstance(node, ast.Import):
                name = alias.asname or alias.name.split(".")[0]
                qual = alias.name if alias.asname else name
                source = ast.unparse(ast.Import([alias]))
            else:
                name = alias.asname or alias.name
                module = "." * node.level + (node.module or "")
                qual = f"{module}.{alias.name}" if module else alias.name
                source = ast.unparse(ast.ImportFrom(node.module, [alias], node.level))
            self.bind(name)
            if self.effects is not None and self._global(name):
                self.effects.imports[name] = (source, qual)

    def function_def(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for deco in node.decorator_list:
            self.expr(deco)
        self.arguments(node.args)
        if node.returns is not None:
            self.expr(node.returns)
        summary = self.summarize(node, node.name, node.args, node.body)
        summary.generator = _is_generator(node)
        for deco in reversed(node.decorator_list):
            callee = self.callee(deco)
            self.record_call(callee, [self.resolve(node.name)], {}, EMPTY, EMPTY, deco)
        self.bind(node.name)
        if self.effects is not None and self._global(node.name):
            self.effects.defines.setdefault(node.name, []).append(summary)
        elif self.summary is not None:
            self.summary.merge(summary)

    def arguments(self, args: ast.arguments) -> None:
        for default in [*args.defaults, *args.kw_defaults]:
            if default is not None:
                self.expr(default)
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None and arg.annotation is not None:
                self.expr(arg.annotation)

    def class_def(self, node: ast.ClassDef) -> None:
        for deco in node.decorator_list:
            self.expr(deco)
        for base in node.bases:
            self.expr(base)
        for keyword in node.keywords:
            self.expr(keyword.value)
        scope = _Scope("class")
        scope.locals = _bound_names(node.body, set())[0]
        summary = Summary(node.name, node.lineno, varargs=True, kind="class")
        methods: dict[str, Summary] = {}
        self.scopes.append(scope)
        for stmt in node.body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                for deco in stmt.decorator_list:
                    self.expr(deco)
                self.arguments(stmt.args)
                method = self.summarize(stmt, f"{node.name}.{stmt.name}", stmt.args, stmt.body)
                if _is_classmethod(stmt) and method.params:
                    method.class_state |= _changes_param(method, method.params[0])
                if node.name in method.changes:  # `Counter.n += 1` in its own method
                    method.class_state = True
                    method.changes.discard(node.name)
                methods[stmt.name] = method
                summary.merge(method)
            else:
                self.stmt(stmt)  # the class body runs now
        summary.methods = set(methods)
        summary.state_methods = _state_methods(methods)
        self.scopes.pop()
        self.bind(node.name)
        if self.effects is not None and self._global(node.name):
            self.effects.defines.setdefault(node.name, []).append(summary)
        elif self.summary is not None:
            self.summary.merge(summary)

    def summarize(
        self, node: ast.AST, name: str, args: ast.arguments, body: list[ast.stmt] | ast.expr
    ) -> Summary:
        positional, params, varargs = _params(args)
        stmts: list[ast.stmt] = body if isinstance(body, list) else [ast.Expr(body)]
        scope = _Scope("function", owner=self.summary is None)
        bound, scope.globals, scope.nonlocals = _bound_names(stmts, params)
        scope.locals = bound - scope.globals - scope.nonlocals
        scope.params = params
        if self.summary is not None:
            # a function inside a function: it runs within the outer one's summary
            self.summary.nested = True
            walker = _Walker(None, self.summary, [*self.scopes, scope], self.imports)
            for stmt in stmts:
                walker.stmt(stmt)
            return Summary(name, getattr(node, "lineno", 0))
        summary = Summary(name, getattr(node, "lineno", 0), positional, varargs)
        summary.shared_defaults = _shared_defaults(args)
        walker = _Walker(None, summary, [*self.scopes, scope], self.imports)
        for _ in range(2):  # twice: a local may alias a parameter bound later in the body
            summary.calls.clear()
            summary.links.clear()
            for stmt in stmts:
                walker.stmt(stmt)
        return summary

    def lambda_summary(self, node: ast.Lambda, name: str) -> Summary:
        summary = self.summarize(node, name, node.args, node.body)
        summary.kind = "lambda"
        return summary

    # --- expressions -----------------------------------------------------------------------

    def callee(self, func: ast.expr) -> tuple[str, ...]:
        if isinstance(func, ast.Name):
            return ("name", func.id) if self._global(func.id) else ("local",)
        dotted = _dotted(func)
        if dotted is not None:
            base, path = dotted
            if self._global(base) is not None:
                return ("attr", base, path)
            return ("local",)
        return ("other",)

    def record_call(
        self,
        callee: tuple[str, ...],
        args: list[Names],
        kwargs: dict[str, Names],
        star: Names,
        receiver: Names,
        node: ast.AST,
    ) -> None:
        site = CallSite(callee, args, kwargs, star, receiver, getattr(node, "lineno", 0))
        (self.effects or self.summary).calls.append(site)  # type: ignore[union-attr]

    def call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and _is_ipython(func.value)
            and func.attr in ("run_line_magic", "run_cell_magic", "system", "getoutput")
        ):
            self.magic(node, func.attr)
            return
        if isinstance(func, ast.Name) and func.id in knowledge.DYNAMIC_BUILTINS:
            self.dynamic(node, func.id)
        self.expr(func)
        for arg in node.args:
            self.expr(arg)
        for keyword in node.keywords:
            self.expr(keyword.value)
        args: list[Names] = []
        star: set[str] = set()
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                star |= self.refs(arg)
            else:
                args.append(self.refs(arg))
        kwargs: dict[str, Names] = {}
        for keyword in node.keywords:
            if keyword.arg is None:
                star |= self.refs(keyword.value)
            else:
                kwargs[keyword.arg] = self.refs(keyword.value)
        receiver = EMPTY
        callee = self.callee(func)
        if isinstance(func, ast.Attribute):
            receiver = self.refs(func.value)
            self.class_change(func.value)
            if callee[0] != "attr":
                callee = ("method", func.attr)
        elif callee in (("local",), ("other",)):
            # a parameter, a local or a computed value called (`f(x)`, `callbacks["log"](x)`):
            # it may be a bound method of what it refers to
            receiver = self.refs(func)
        self.record_call(callee, args, kwargs, frozenset(star), receiver, node)

    def dynamic(self, node: ast.Call, name: str) -> None:
        if self.effects is None:
            return
        if name in ("globals", "locals", "vars") and not node.args:
            return  # reading the namespace; writes through it are caught by the subscript rule
        if name == "eval" and node.args and isinstance(node.args[0], ast.Constant):
            try:
                self.expr(ast.parse(str(node.args[0].value), mode="eval").body)
                return
            except SyntaxError:
                pass
        self.effects.dynamic = f"`{name}(...)`"

    def magic(self, node: ast.Call, how: str) -> None:
        words = [a.value for a in node.args if isinstance(a, ast.Constant)]
        texts = words[1:] if how.startswith("run_") else words
        for text in texts:
            if isinstance(text, str):
                for name in _IDENT.findall(text):
                    self.read(name)
        if self.effects is not None and how == "run_line_magic" and words:
            name = str(words[0])
            args = str(words[1]) if len(words) > 1 else ""
            if name == "run" or (name == "store" and "-r" in args.split()):
                self.effects.dynamic = f"`%{name} {args}`".replace(" `", "`")
            self.record_call(("magic", name, args), [], {}, EMPTY, EMPTY, node)

    def expr(self, node: ast.expr | None) -> None:
        if node is None:
            return
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                self.read(node.id)
        elif isinstance(node, ast.Call):
            self.call(node)
        elif isinstance(node, ast.Lambda):
            self.lambda_(node)
        elif isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            self.comprehension(node)
        elif isinstance(node, ast.NamedExpr):
            self.named_expr(node)
        elif not self.namespace_key(node):
            self.children(node)

    def lambda_(self, node: ast.Lambda) -> None:
        self.arguments(node.args)
        summary = self.summarize(node, "<lambda>", node.args, node.body)
        if self.effects is not None:
            # it may run now (passed to a call): its reads and changes count here too
            self.effects.lambdas.append(summary)

    def named_expr(self, node: ast.NamedExpr) -> None:
        self.expr(node.value)
        refs = self.refs(node.value)
        scopes, self.scopes = self.scopes, [s for s in self.scopes if s.kind != "comprehension"]
        depth, self.depth = self.depth, self.depth + 1
        self.bind(node.target.id, refs)
        self.depth = depth
        self.scopes = scopes

    def namespace_key(self, node: ast.expr) -> bool:
        """`globals()["x"]`: a read of x (True: nothing else to walk)."""
        if not (isinstance(node, ast.Subscript) and _is_namespace_call(node.value)):
            return False
        key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            if isinstance(node.ctx, ast.Load):
                self.read(key.value)
            return True
        return False

    def children(self, node: ast.expr) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.expr(child)
            elif isinstance(child, ast.comprehension | ast.keyword | ast.arguments):
                for grandchild in ast.iter_child_nodes(child):
                    if isinstance(grandchild, ast.expr):
                        self.expr(grandchild)

    def comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp
    ) -> None:
        generators = node.generators
        self.expr(generators[0].iter)  # evaluated in the enclosing scope
        scope = _Scope("comprehension")
        for gen in generators:
            for target in ast.walk(gen.target):
                if isinstance(target, ast.Name):
                    scope.locals.add(target.id)
        self.scopes.append(scope)
        for index, gen in enumerate(generators):
            if index:
                self.expr(gen.iter)
            for cond in gen.ifs:
                self.expr(cond)
        if isinstance(node, ast.DictComp):
            self.expr(node.key)
            self.expr(node.value)
        else:
            self.expr(node.elt)
        self.scopes.pop()


def _is_namespace_call(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("globals", "vars", "locals")
        and not node.args
    )


def _namespace_writes(node: ast.stmt, effects: Effects) -> None:
    """`globals()["x"] = 1` binds x; any other write through globals()/vars() is unknown."""
    for child in ast.walk(node):
        if isinstance(child, ast.Subscript) and _is_namespace_call(child.value):
            if not isinstance(child.ctx, ast.Load):
                key = child.slice
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    effects.binds.add(key.value)
                    effects.changes.discard("globals")
                else:
                    effects.dynamic = "a write through `globals()`"
        elif (
            isinstance(child, ast.Call)
            and isinstance(child.func, ast.Attribute)
            and _is_namespace_call(child.func.value)
            and child.func.attr in ("update", "setdefault", "pop", "clear", "__setitem__")
        ):
            effects.dynamic = f"`globals().{child.func.attr}(...)`"


def python_of(source: str) -> str:
    """The Python a cell runs, for the analysis: cell magics with a Python body unwrapped (as
    the body runs: `%%timeit`'s in a function, `%%capture NAME`'s followed by the binding of
    NAME), IPython syntax translated (`%x` → `get_ipython().run_line_magic(...)`, except that
    `%time STATEMENT` is the statement); "" for a non-Python cell magic."""
    lines = source.lstrip("\n").split("\n", 1)
    if lines[0].startswith("%%"):
        words = lines[0][2:].split()
        magic = words[0] if words else ""
        if magic not in _PY_CELL_MAGICS:
            return ""  # e.g. %%bash: not Python, nothing to analyse
        body = lines[1] if len(lines) > 1 else ""
        if magic == "timeit":
            inner = "\n".join("    " + line for line in python_of(body).split("\n"))
            return f"def {_TIMEIT_BODY}():\n{inner}\n    pass\n{_TIMEIT_BODY}()\ndel {_TIMEIT_BODY}"
        source = body
        named = [w for w in words[1:] if not w.startswith("-")]
        if magic == "capture" and named and named[-1].isidentifier():
            source = f"{body}\n{named[-1]} = None"
    try:
        ast.parse(source)
        return source
    except SyntaxError:
        pass
    from IPython.core.inputtransformer2 import TransformerManager

    return _line_magic_statements(str(TransformerManager().transform_cell(source)))


def _line_magic_statements(code: str) -> str:
    """`get_ipython().run_line_magic('time', 'x = f()')` on a line of its own → `x = f()`."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    lines = code.split("\n")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Expr) or node.lineno != node.end_lineno:
            continue
        argument = _python_line_magic(node.value)
        if argument is None:
            continue
        line = lines[node.lineno - 1]
        lines[node.lineno - 1] = line[: node.col_offset] + argument + line[node.end_col_offset :]
    return "\n".join(lines)


def _python_line_magic(call: ast.expr) -> str | None:
    """The statement a `%time`-like line magic runs in the user namespace, if `call` is one."""
    if not (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "run_line_magic"
        and _is_ipython(call.func.value)
        and len(call.args) == 2
    ):
        return None
    name, argument = (a.value if isinstance(a, ast.Constant) else None for a in call.args)
    if name not in _PY_LINE_MAGICS or not isinstance(argument, str) or "\n" in argument:
        return None
    try:
        ast.parse(argument)
    except SyntaxError:
        return None
    return argument


def imports_of(source: str) -> dict[str, str]:
    """name → qualified module or object for every import statement of a cell (any level)."""
    try:
        tree = ast.parse(python_of(source))
    except SyntaxError:
        return {}
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                found[name] = alias.name if alias.asname else name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if alias.name != "*":
                    found[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return found


def analyze_source(
    source: str, ref: str = "cell", imports: dict[str, str] | None = None
) -> list[Effects]:
    """The effects of each top-level statement of one cell (`imports`: the notebook's import
    names, to know which library calls return values that share nothing with their arguments).

    Raises:
        BuildError: the cell is not valid Python (or IPython) syntax.
    """
    code = python_of(source)
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise BuildError(f"{ref}: syntax error on line {exc.lineno}: {exc.msg}") from exc
    found: list[Effects] = []
    for node in tree.body:
        effects = Effects(node.lineno, ast.get_source_segment(code, node) or ast.unparse(node))
        walker = _Walker(effects, None, [_Scope("module")], imports or {})
        walker.stmt(node)
        _namespace_writes(node, effects)
        found.append(effects)
    return found
