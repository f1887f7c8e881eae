# mypy: disable-error-code="no-untyped-call,untyped-decorator,misc,attr-defined"
"""Static def-use analysis (`ast`): which values each step needs from which earlier step.

Each top-level statement is read for the names it uses (anywhere, nested scopes included: an
over-approximation costs a pickled value, never a wrong result) and the module-level names it binds
or mutates (`x[0] = …`, `x.attr = …`, `x.append(…)`). A use takes the definition that reaches it in
top-to-bottom order; when that lies in another step the value crosses steps (pickled), except
imports, which are repeated in the using step instead.
"""

from __future__ import annotations

import ast
import builtins
import graphlib
import re
from dataclasses import dataclass, field

from nb_mlops.core.errors import BuildError
from nb_mlops.pipeline.grammar import Cell, Grammar

__all__ = ["Plan", "StepPlan", "Stmt", "analyze_source", "plan_steps"]

_BUILTINS = frozenset(dir(builtins))
# cell magics whose body is Python run in the user namespace
_PY_CELL_MAGICS = {"track", "step", "time", "capture", "prun"}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# calls whose result pickle refuses: the reason names the kind of value for the error message
_UNPICKLABLE_CALLS = {
    "open": "an open file",
    "io.open": "an open file",
    "tempfile.TemporaryFile": "an open file",
    "tempfile.NamedTemporaryFile": "an open file",
    "Lock": "a lock",
    "RLock": "a lock",
    "threading.Lock": "a lock",
    "threading.RLock": "a lock",
    "threading.Condition": "a lock",
    "threading.Semaphore": "a lock",
    "multiprocessing.Lock": "a lock",
    "socket.socket": "a socket",
    "sqlite3.connect": "a database connection",
}


@dataclass
class Stmt:
    """One top-level statement: names read, names bound, names deleted, imports, unpicklables."""

    uses: list[str] = field(default_factory=list)
    defs: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    imports: dict[str, str] = field(default_factory=dict)
    unpicklable: dict[str, str] = field(default_factory=dict)
    gen_functions: set[str] = field(default_factory=set)


class _Visitor(ast.NodeVisitor):
    def __init__(self) -> None:
        self.depth = 0
        self.uses: list[str] = []
        self.defs: list[str] = []
        self.deletes: list[str] = []
        # names a `for` statement binds, while its body is visited: each run of the body reads
        # the value the loop has just bound, never one from before the statement
        self.bound: list[set[str]] = []

    def _use(self, name: str) -> None:
        if not any(name in names for names in self.bound):
            self.uses.append(name)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._use(node.id)
        elif self.depth == 0:
            (self.deletes if isinstance(node.ctx, ast.Del) else self.defs).append(node.id)

    def _base(self, node: ast.expr) -> str | None:
        while isinstance(node, ast.Attribute | ast.Subscript):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None

    def _mutation(self, node: ast.Attribute | ast.Subscript) -> None:
        if self.depth == 0 and not isinstance(node.ctx, ast.Load):
            base = self._base(node)
            if base:  # x[0] = …, x.a = …, del x[0]: x changes, and is needed first
                self._use(base)
                self.defs.append(base)
        self.generic_visit(node)

    visit_Attribute = _mutation
    visit_Subscript = _mutation

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        base = self._base(node.target)
        if base:  # x += 1 reads x first
            self._use(base)
        self.generic_visit(node)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        self.bound.append({n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)})
        for stmt in node.body:
            self.visit(stmt)
        self.bound.pop()
        for stmt in node.orelse:  # runs after an empty loop too: the name may be the old one
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_Expr(self, node: ast.Expr) -> None:
        call = node.value
        if self.depth == 0 and isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute):
            base = self._base(call.func.value)
            if base and base != "get_ipython":  # lst.append(1): lst may change
                self.defs.append(base)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr in ("run_line_magic", "run_cell_magic", "system", "getoutput")
            and isinstance(func.value, ast.Call)
            and isinstance(func.value.func, ast.Name)
            and func.value.func.id == "get_ipython"
        ):
            # `%snapshot df`, `!echo {x}`: names hide in the magic's argument string
            for arg in node.args[1:] if func.attr.startswith("run_") else node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    for name in _IDENT.findall(arg.value):
                        self._use(name)
        self.generic_visit(node)

    def _scope(self, node: ast.AST, name: str | None = None) -> None:
        if name and self.depth == 0:
            self.defs.append(name)
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for deco in node.decorator_list:
            self.visit(deco)
        node.decorator_list = []
        self._scope(node, node.name)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for deco in node.decorator_list:
            self.visit(deco)
        node.decorator_list = []
        self._scope(node, node.name)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._scope(node)

    def visit_ListComp(self, node: ast.AST) -> None:
        self._scope(node)

    visit_SetComp = visit_DictComp = visit_GeneratorExp = visit_ListComp

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        if self.depth == 0:
            self.defs.append(node.target.id)

    def _import(self, node: ast.Import | ast.ImportFrom) -> None:
        if self.depth == 0:
            for alias in node.names:
                if alias.name != "*":
                    self.defs.append(alias.asname or alias.name.split(".")[0])

    visit_Import = visit_ImportFrom = _import


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _imports(node: ast.stmt) -> dict[str, str]:
    found: dict[str, str] = {}
    if isinstance(node, ast.Import):
        for alias in node.names:
            found[alias.asname or alias.name.split(".")[0]] = ast.unparse(ast.Import([alias]))
    elif isinstance(node, ast.ImportFrom):
        for alias in node.names:
            if alias.name != "*":
                stmt = ast.ImportFrom(node.module, [alias], node.level)
                found[alias.asname or alias.name] = ast.unparse(stmt)
    return found


def _unpicklable(node: ast.stmt, gen_functions: set[str]) -> dict[str, str]:
    """Names this statement binds to values pickle cannot carry (where static analysis sees it)."""

    def kind(value: ast.expr | None) -> str | None:
        if isinstance(value, ast.GeneratorExp):
            return "a generator"
        if isinstance(value, ast.Call):
            name = _dotted(value.func)
            if name in gen_functions:
                return "a generator"
            return _UNPICKLABLE_CALLS.get(name)
        return None

    found: dict[str, str] = {}
    if isinstance(node, ast.Assign | ast.AnnAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        reason = kind(node.value)
        for target in targets:
            if isinstance(target, ast.Name):
                found[target.id] = reason or ""
    elif isinstance(node, ast.With):
        for item in node.items:
            if isinstance(item.optional_vars, ast.Name):
                found[item.optional_vars.id] = kind(item.context_expr) or ""
    return found


def _is_generator(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for child in ast.walk(node):
        if child is not node and isinstance(
            child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef
        ):
            continue
        if isinstance(child, ast.Yield | ast.YieldFrom):
            return True
    return False


def _python_of(source: str, ref: str) -> str:
    """The Python a cell runs: cell magics with a Python body unwrapped, IPython syntax translated."""
    lines = source.lstrip("\n").split("\n", 1)
    if lines[0].startswith("%%"):
        magic = lines[0][2:].split(None, 1)[0] if len(lines[0]) > 2 else ""
        if magic not in _PY_CELL_MAGICS:
            return ""  # e.g. %%bash: not Python, nothing to analyse
        source = lines[1] if len(lines) > 1 else ""
    try:
        ast.parse(source)
        return source
    except SyntaxError:
        pass
    from IPython.core.inputtransformer2 import TransformerManager

    return str(TransformerManager().transform_cell(source))


def analyze_source(source: str, ref: str = "cell") -> list[Stmt]:
    """The statements of one cell with their uses and definitions.

    Raises:
        BuildError: the cell is not valid Python (or IPython) syntax.
    """
    code = _python_of(source, ref)
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise BuildError(f"{ref}: syntax error on line {exc.lineno}: {exc.msg}") from exc
    stmts: list[Stmt] = []
    gen_functions: set[str] = set()
    for node in tree.body:
        visitor = _Visitor()
        visitor.visit(node)
        stmt = Stmt(
            uses=[u for u in dict.fromkeys(visitor.uses)],
            defs=list(dict.fromkeys(visitor.defs)),
            deletes=list(dict.fromkeys(visitor.deletes)),
            imports=_imports(node),
        )
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _is_generator(node):
            gen_functions.add(node.name)
        stmt.gen_functions = set(gen_functions)
        stmt.unpicklable = _unpicklable(node, gen_functions)
        stmts.append(stmt)
    return stmts


@dataclass
class StepPlan:
    """What one step needs and gives: inputs (name → producing step), imports to repeat, outputs
    (names a later step or the metrics cell reads), metrics, and the steps it runs after."""

    name: str
    cells: list[Cell]
    after: list[str] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)
    imports: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """The DAG: steps in a deterministic topological order, the metric names of the notebook."""

    steps: dict[str, StepPlan]
    metrics: list[str]
    uses_magics: bool
    problems: list[str] = field(default_factory=list)  # cells that are not valid (I)Python


def plan_steps(grammar: Grammar, generator_functions: set[str] | None = None) -> Plan:
    """Resolve every cross-step value and the order of the steps.

    Raises:
        BuildError: a value that cannot cross steps (names the variable, step and cell), a step
            using a value its producer changes again later, or a cycle between steps.
    """
    plans = {
        name: StepPlan(name, list(decl.cells), list(decl.after))
        for name, decl in grammar.steps.items()
    }
    # name → (kind, step, cell): kind "param", "prelude", "step" or "import"
    reaching: dict[str, tuple[str, str | None, Cell | None]] = {}
    last_def: dict[tuple[str, str], Cell] = {}
    first_use: dict[tuple[str, str], tuple[Cell, str]] = {}
    import_src: dict[tuple[str, str], str] = {}
    unpicklable: dict[tuple[str, str], tuple[str, Cell]] = {}
    metric_names: list[str] = []
    uses_magics = False
    problems: list[str] = []
    gen_functions = set(generator_functions or ())

    def use(step: str | None, name: str, cell: Cell) -> None:
        origin = reaching.get(name)
        if origin is None or origin[0] in ("param", "prelude") or origin[1] == step:
            return
        producer = origin[1]
        assert producer is not None
        if origin[0] == "import" and step is not None:
            plans[step].imports.setdefault(name, import_src[(producer, name)])
            return
        if step is None:
            if name not in metric_names:
                metric_names.append(name)
            if name not in plans[producer].metrics:
                plans[producer].metrics.append(name)
            return
        known = plans[step].inputs.get(name)
        if known is not None and known != producer:
            raise BuildError(
                f"{cell.ref}: step {step!r} reads `{name}` from step {producer!r} after reading it "
                f"from step {known!r}; a step gets one value per name: rename one of them"
            )
        plans[step].inputs[name] = producer
        if name not in plans[producer].outputs:
            plans[producer].outputs.append(name)
        first_use.setdefault((producer, name), (cell, step))

    for cell in grammar.cells:
        if re.search(r"^\s*[%!]", cell.source, re.M):
            uses_magics = True
        try:
            stmts = analyze_source(cell.source, cell.ref)
        except BuildError as exc:
            # a cell that does not parse binds and reads nothing: it fails when it runs, with
            # the error papermill reports, and only if the run gets that far
            problems.append(str(exc))
            stmts = []
        for stmt in stmts:
            gen_functions |= stmt.gen_functions
            if cell.role in ("step", "metrics"):
                for name in stmt.uses:
                    if name not in _BUILTINS or name in reaching:
                        use(cell.step if cell.role == "step" else None, name, cell)
            if cell.role == "metrics":
                continue
            for name in stmt.defs:
                if cell.role == "parameters":
                    reaching[name] = ("param", None, cell)
                elif cell.role in ("imports", "functions"):
                    reaching[name] = ("prelude", None, cell)
                else:
                    assert cell.step is not None
                    kind = "import" if name in stmt.imports else "step"
                    reaching[name] = (kind, cell.step, cell)
                    last_def[(cell.step, name)] = cell
                    if kind == "import":
                        import_src[(cell.step, name)] = stmt.imports[name]
                    if name in stmt.unpicklable:
                        unpicklable[(cell.step, name)] = (stmt.unpicklable[name], cell)
            for name in stmt.deletes:
                reaching.pop(name, None)

    for (producer, name), (cell, consumer) in first_use.items():
        defined = last_def[(producer, name)]
        if defined.index > cell.index:
            raise BuildError(
                f"{defined.ref}: step {producer!r} changes `{name}` again after step {consumer!r} "
                f"reads it in {cell.ref}; move the cell into one step or rename the variable"
            )
        reason, where = unpicklable.get((producer, name), ("", defined))
        if reason:
            raise BuildError(
                f"{where.ref}: step {producer!r} passes `{name}` ({reason}) to step {consumer!r}, "
                "but values crossing steps are pickled and this one cannot be: create it in the "
                f"step that uses it, or put both cells in one step"
            )
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
        first = grammar.steps[cycle[0]].first_ref
        raise BuildError(
            f"{first}: steps depend on each other in a cycle ({' → '.join(cycle)}); "
            "check their `prev:` tags and the variables they share"
        ) from exc
    # deterministic topological order: notebook order among the ready steps
    order: list[str] = []
    rank = list(plans).index
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=rank)
        order.extend(ready)
        sorter.done(*ready)
    for plan in plans.values():
        plan.inputs = dict(sorted(plan.inputs.items()))
        plan.imports = dict(sorted(plan.imports.items()))
    return Plan({name: plans[name] for name in order}, metric_names, uses_magics, problems)
