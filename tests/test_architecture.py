"""Layering, checked in fresh interpreters through `sys.modules`."""

from __future__ import annotations

import ast
import functools
import graphlib
import json
import re
import subprocess
import sys
from dataclasses import dataclass
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


def test_load_ext_declares_every_magic_and_imports_them_on_first_use() -> None:
    # the name table of nb_mlops.magics matches the classes, so lazy declarations are complete
    from nb_mlops.magics import _EAGER, MAGIC_CLASSES, MAGIC_NAMES, _magic_classes

    for spec, cls in zip(MAGIC_CLASSES, _magic_classes(), strict=True):
        declared = {(kind, name) for kind, names in cls.magics.items() for name in names}
        if spec != _EAGER:
            assert declared == set(MAGIC_NAMES[spec]), spec
    # in a real shell, %load_ext lists them all without importing the faces, which load on use
    code = (
        "import sys, json\nfrom IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\nip.run_line_magic('load_ext', 'nb_mlops')\n"
        "listed = ip.magics_manager.lsmagic()\n"
        "before = 'nb_mlops.magics.data' in sys.modules\n"
        "fn = ip.find_line_magic('snapshot')\n"
        "print(json.dumps([sorted(listed['line']), sorted(listed['cell']), before,"
        " 'nb_mlops.magics.data' in sys.modules, callable(fn)]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line, cell, before, after, found = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {name for names in MAGIC_NAMES.values() for _, name in names} | {"track"}
    assert expected <= set(line) | set(cell) and "track" in cell and "step" in cell
    assert (before, after, found) == (False, True, True)


def test_the_cli_process_defers_jsonschemas_iri_parser_without_changing_validation() -> None:
    # Given the `nb-mlops` process start-up, then papermill (nbformat, jsonschema) imported
    probe = (
        "from nb_mlops.cli.startup import defer_slow_imports\n"
        "defer_slow_imports()\n"
        "import sys, papermill\n"
        "from jsonschema import Draft202012Validator as V\n"
        "before = 'rfc3987_syntax.syntax_helpers' in sys.modules\n"
        "v = V({'format': 'iri'}, format_checker=V.FORMAT_CHECKER)\n"
        "print(before, v.is_valid('https://example.org/a?b#c'), v.is_valid('http://[bad'),"
        " v.is_valid('urn:x:y'))\n"
        "import rfc3987_syntax.syntax_helpers as helpers\n"  # a submodule still imports
        "print(helpers.is_valid_syntax('iri', 'https://example.org/'))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    # Then the Lark grammar was not built at import, and IRI checks still give the real answers
    assert done.stdout.split() == ["False", "True", "False", "True", "True"]


def test_ensure_store_alone_does_not_import_sqlalchemy(tmp_path: Path) -> None:
    # direct-SQL users of the store (pipeline records, the writer) never pay for SQLAlchemy
    from nb_mlops.core.config import load_config
    from nb_mlops.core.store import ensure_store

    (tmp_path / "pyproject.toml").write_text("[tool.nb_mlops]\n")
    ensure_store(load_config(tmp_path))  # the store exists, as after any first use
    loaded = _loaded_after(
        f"import os; os.chdir({str(tmp_path)!r})\n"
        "from nb_mlops.core.store import ensure_store\nensure_store()"
    )
    assert "sqlalchemy" not in loaded and "mlflow" not in loaded


def test_code_help_and_tests_cite_no_document_outside_the_repository() -> None:
    # Given every source, test, benchmark and help text of the repository
    top = PACKAGE.parent
    outside = re.compile(
        r"(DESIGN|RELIABILITY|BENCHMARKS|STYLE|BUILD-NOTES|USERS)\.md|\b(?!S3\b)[SDPRJ][1-7]\b|test_[sdprj][1-7]_"
    )
    found = []
    for folder in ("nb_mlops", "tests", "benchmarks", "labextension/src"):
        for path in sorted((top / folder).rglob("*")):
            if path.suffix not in (".py", ".ts") or "node_modules" in path.parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if outside.search(line) and "outside = re.compile" not in line:
                    found.append(f"{path.relative_to(top)}:{number}: {line.strip()}")
    # Then none names a design note or a requirement id the repository does not define (Amazon's
    # S3 is a product name, not an id)
    assert not found, "\n".join(found)


# --- the import graph among nb_mlops modules, read from the source with `ast` --------------------

FACES = ("cli", "magics", "widgets", "server")
# what each part of the package may import from nb_mlops (besides itself); a face imports no
# other face
MAY_IMPORT = {
    # the package itself: its public names (lazily from core and pipeline) and the `%load_ext`
    # hook, which hands over to the magics
    "nb_mlops": {"core", "pipeline", "magics"},
    "core": set(),
    "pipeline": {"core"},
    "present": {"core", "pipeline"},
    **{face: {"nb_mlops", "core", "pipeline", "present"} for face in FACES},
}
# The one face-to-face arrow allowed: a magic displays its view (`%runs` a RunsView, `%promote` a
# PromotePanel, …), and only from inside the magic, so `%load_ext` never imports ipywidgets. The
# widgets never import the magics.
FACE_EXCEPTIONS = {("magics", "widgets")}


@dataclass(frozen=True)
class _Import:
    source: str  # the importing module
    target: str  # the nb_mlops module imported
    line: int
    # runs when the source is imported (not inside a function, nor under TYPE_CHECKING)
    module_level: bool


@functools.cache
def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported_names(
    node: ast.Import | ast.ImportFrom, package: str, modules: set[str]
) -> list[str]:
    """The dotted names an import statement reads, relative ones resolved against `package`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = package.split(".")
        base = ".".join([*parts[: len(parts) - (node.level - 1)], *([base] if base else [])])
    # `from a import b`: b is the module a.b if there is one, else a name defined in a
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def _imports(modules: dict[str, Path]) -> list[_Import]:
    """Every import of an nb_mlops module by one: `import a.b`, `from a import b`, relative or
    absolute, at module level, in classes and in functions."""

    def known(name: str) -> str | None:  # the longest nb_mlops module a dotted name falls in
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    found: list[_Import] = []
    names = set(modules)

    def visit(node: ast.AST, source: str, package: str, module_level: bool) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            module_level = False
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                visit(stmt, source, package, False)
            for stmt in node.orelse:
                visit(stmt, source, package, module_level)
            return
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for name in _imported_names(node, package, names):
                target = known(name) if name.split(".")[0] == "nb_mlops" else None
                if target is not None and target != source:
                    found.append(_Import(source, target, node.lineno, module_level))
        for child in ast.iter_child_nodes(node):
            visit(child, source, package, module_level)

    for source, path in modules.items():
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        visit(ast.parse(path.read_text(), str(path)), source, package, True)
    return found


@functools.cache
def _package_imports() -> tuple[_Import, ...]:
    return tuple(_imports(_modules()))


def _part(module: str) -> str:
    """`nb_mlops.cli.runs` → `cli`; the package itself → `nb_mlops`."""
    return module.split(".")[1] if "." in module else module


def test_the_import_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    # Given a tiny package with each kind of import: module level, in a function, relative,
    # `import x`, `from x import module`, `from x import name`, and one under TYPE_CHECKING
    pkg = tmp_path / "nb_mlops"
    (pkg / "core").mkdir(parents=True)
    (pkg / "cli").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("from .store import open_store\n")
    (pkg / "core" / "store.py").write_text("def open_store() -> None: ...\n")
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "cli" / "runs.py").write_text(
        "from typing import TYPE_CHECKING\nimport nb_mlops.core\n"
        "if TYPE_CHECKING:\n    from ..core import store\n"
        "def main() -> None:\n    from . import data\n    from nb_mlops.core.store import open_store\n"
    )
    (pkg / "cli" / "data.py").write_text("from ..core import store\n")
    modules = {}
    for path in sorted(pkg.rglob("*.py")):
        parts = path.relative_to(tmp_path).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    # When the imports are read
    got = {(i.source, i.target, i.module_level) for i in _imports(modules)}
    # Then each is found with the module it names, and only the first runs on import
    assert got == {
        ("nb_mlops.core", "nb_mlops.core.store", True),
        ("nb_mlops.cli.runs", "nb_mlops.core", True),
        ("nb_mlops.cli.runs", "nb_mlops.core.store", False),
        ("nb_mlops.cli.runs", "nb_mlops.cli.data", False),
        ("nb_mlops.cli.data", "nb_mlops.core.store", True),
    }


def test_each_layer_imports_only_the_layers_below_and_no_face_imports_another() -> None:
    # Given every import of an nb_mlops module by an nb_mlops module, wherever it is written
    imports = _package_imports()
    assert any(i.target == "nb_mlops.present.runs" for i in imports)  # the reader sees imports
    wrong = set()
    for imp in imports:
        source, target = _part(imp.source), _part(imp.target)
        if source == target or target in MAY_IMPORT[source] or (source, target) in FACE_EXCEPTIONS:
            continue
        wrong.add(f"{imp.source}:{imp.line} imports {imp.target}")
    # Then core imports nothing above it, pipeline only core, the presentation helpers only core
    # and pipeline, and a face only core, pipeline and the presentation helpers
    assert not wrong, "\n".join(sorted(wrong))
    # And the magics import their views, and the package its magics, only on use, so
    # `import nb_mlops` and `%load_ext` stay cheap
    on_use = FACE_EXCEPTIONS | {("nb_mlops", "magics")}
    eager = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in imports
        if i.module_level and (_part(i.source), _part(i.target)) in on_use
    ]
    assert not eager, eager


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """A cycle of `graph` (module → the modules it imports) in import order, or []."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(reversed(exc.args[1]))  # graphlib lists it against the arrows
    return []


def test_the_cycle_finder_names_each_module_of_a_cycle_in_import_order() -> None:
    # Given a imports b, b imports c, c imports a (and d imports a, outside the cycle)
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    # Then the cycle found starts and ends on one module, and each module imports the next
    found = _cycle(graph)
    assert found[0] == found[-1] and set(found) == {"a", "b", "c"}
    assert all(after in graph[before] for before, after in zip(found[:-1], found[1:], strict=True))
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_the_module_level_import_graph_has_no_cycle() -> None:
    # Given the imports that run when a module is imported (not those inside functions)
    graph: dict[str, set[str]] = {name: set() for name in _modules()}
    for imp in _package_imports():
        if imp.module_level:
            graph[imp.source].add(imp.target)
    # Then no module imports itself back through others
    cycle = _cycle(graph)
    assert not cycle, "import cycle: " + " imports ".join(cycle)


MAX_FUNCTION_LINES = 59


def test_every_function_of_the_package_is_shorter_than_sixty_lines() -> None:
    """From `def` to its last line, docstring included (ruff's C901 keeps complexity at most 15)."""
    package = Path(nb_mlops.__file__).parent
    long = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(package)}:{node.lineno} {node.name} ({lines})")
    assert not long, "split these functions:\n" + "\n".join(long)
