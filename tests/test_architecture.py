"""Layering, checked in fresh interpreters through `sys.modules`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
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
