"""The typed parameter contract: a schema read from the `parameters` cell, and validation.

The parameters cell runs as written in every step (as papermill runs it); the schema says what
may be passed in. Types come from annotations (`C: float = 1.0`, `x: int | None = None`), type
comments, or the literal default (`name = "x"` → str); a default that is not a JSON-like literal
(`n = 10**6`, `p: Path = Path("d")`) is computed by the cell in the kernel. Values passed in are
checked first: unknown names and wrong types are refused with the declared parameters listed.
"""

from __future__ import annotations

import ast
import io
import json
import keyword
import math
import tokenize
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nb_mlops.core.errors import BuildError, ParameterError

__all__ = [
    "RESERVED_PREFIX",
    "ParametersCell",
    "check_json_like",
    "coerce",
    "describe",
    "parse_cli_values",
    "parse_type",
    "read_parameters",
    "resolve_text",
    "schema_from_source",
    "validate",
]

RESERVED_PREFIX = "nb_mlops_"
_SCALARS = {"int", "float", "str", "bool", "any", "None"}
_ALIASES = {"List": "list", "Dict": "dict", "Any": "any", "NoneType": "None", "Mapping": "dict"}
# a path arrives as text from outside (papermill injects a str too)
_PATHS = {"Path", "PurePath", "PosixPath", "WindowsPath", "PathLike"}
_EXACT_FLOAT_INT = 2**53


# --- types: strings like "int", "list[str]", "dict[str, float]", "int | None" ------------------


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def parse_type(text: str) -> Any:
    """A type string → a small tree: "int" | ("list", T) | ("dict", T) | ("union", [T, ...])."""
    members = _split_top(text, "|")
    if len(members) > 1:
        return ("union", [parse_type(m) for m in members])
    text = members[0]
    if text in _SCALARS:
        return text
    if text == "list":
        return ("list", "any")
    if text == "dict":
        return ("dict", "any")
    if text.startswith("list[") and text.endswith("]"):
        return ("list", parse_type(text[5:-1]))
    if text.startswith("dict[") and text.endswith("]"):
        key, _, value = text[5:-1].partition(",")
        if key.strip() != "str":
            raise ValueError(f"dict keys must be str, not {key.strip()!r}")
        return ("dict", parse_type(value.strip()))
    raise ValueError(f"unsupported type {text!r}")


def _annotation(node: ast.expr) -> str:
    """An annotation AST → our type string (raises ValueError for types we cannot check)."""
    if isinstance(node, ast.Constant) and node.value is None:
        return "None"
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return _annotation(ast.parse(node.value, mode="eval").body)
    if isinstance(node, ast.Name | ast.Attribute):
        name = node.id if isinstance(node, ast.Name) else node.attr
        name = _ALIASES.get(name, name)
        if name in _PATHS:
            return "str"
        if name in _SCALARS or name in ("list", "dict"):
            return name
        raise ValueError(ast.unparse(node))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return f"{_annotation(node.left)} | {_annotation(node.right)}"
    if isinstance(node, ast.Subscript):
        base = (
            node.value.id if isinstance(node.value, ast.Name) else getattr(node.value, "attr", "")
        )
        base = _ALIASES.get(base, base)
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        inner = [_annotation(a) for a in args]
        if base == "list" and len(inner) == 1:
            return f"list[{inner[0]}]"
        if base == "dict" and len(inner) == 2 and inner[0] == "str":
            return f"dict[str, {inner[1]}]"
        if base == "Optional" and len(inner) == 1:
            return f"{inner[0]} | None"
        if base == "Union":
            return " | ".join(inner)
    raise ValueError(ast.unparse(node))


def _type_of(node: ast.expr | None, comment_type: str) -> str | None:
    """The declared type of an annotation (or a `# type:` comment): ours, `any`, or None if none."""
    try:
        if node is not None:
            typ = _annotation(node)
        elif comment_type:
            typ = _annotation(ast.parse(comment_type, mode="eval").body)
        else:
            return None
        parse_type(typ)
        return typ
    except (ValueError, SyntaxError):
        return "any"  # a type we cannot check from outside (DataFrame, tuple[int, int], ...)


def _infer(value: Any) -> str:
    if value is None:
        return "any"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        kinds = {_infer(v) for v in value}
        return f"list[{kinds.pop()}]" if len(kinds) == 1 else "list"
    return "dict"


def describe(schema: Mapping[str, Mapping[str, Any]]) -> str:
    """`C: float = 1.0, n: int = 3`: how messages list the declared parameters."""
    if not schema:
        return "(none: the notebook has no `parameters` cell)"
    parts = []
    for name, entry in schema.items():
        if "default" in entry:
            parts.append(f"{name}: {entry['type']} = {json.dumps(entry['default'])}")
        elif entry.get("computed"):
            code = " ".join(str(entry["computed"]).split())
            parts.append(f"{name}: {entry['type']} = {code} (computed)")
        else:
            parts.append(f"{name}: {entry['type']} (unset)")
    return ", ".join(parts)


# --- reading the parameters cell ---------------------------------------------------------------


@dataclass
class ParametersCell:
    """What a parameters cell declares.

    Attributes:
        schema: name → {"type", and "default" (a JSON-like literal the runner may pass again),
            or "computed" (the default's code, run by the cell in the kernel), and "help"}.
        problems: lines that are not valid (I)Python: the cell fails there when it runs, as it
            does under papermill; the schema is read from the other lines.
        needs: names the cell reads before it binds them (from cells above it, or builtins).
    """

    schema: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)


def _python(source: str, ref: str) -> tuple[str, list[str]]:
    """The cell as Python (IPython syntax translated); lines that do not parse blanked and named."""
    try:
        ast.parse(source)
        return source, []
    except SyntaxError:
        pass
    from IPython.core.inputtransformer2 import TransformerManager

    code = str(TransformerManager().transform_cell(source))  # type: ignore[no-untyped-call]
    problems: list[str] = []
    lines = code.split("\n")
    for _ in range(len(lines) + 1):
        try:
            ast.parse("\n".join(lines))
            break
        except SyntaxError as exc:
            number = max(1, min(exc.lineno or 1, len(lines)))
            problems.append(
                f"{ref}: line {number} of the parameters cell is not valid Python ({exc.msg})"
            )
            lines[number - 1] = ""
    return "\n".join(lines), problems


def _comments(code: str) -> dict[int, str]:
    """Line number → the comment that ends that line, after code."""
    found: dict[int, str] = {}
    code_lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.COMMENT and tok.start[0] in code_lines:
                found.setdefault(tok.start[0], tok.string)
            elif tok.type not in skip:
                code_lines.update(range(tok.start[0], tok.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        pass
    return found


def _code_of(code: str, node: ast.expr) -> str:
    """The source of a default as written, its comments left out (they are help, not code)."""
    segment = ast.get_source_segment(code, node) or ast.unparse(node)
    cuts: dict[int, int] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(segment).readline):
            if tok.type == tokenize.COMMENT:
                cuts[tok.start[0]] = tok.start[1]
    except (tokenize.TokenError, SyntaxError):
        return segment
    lines = [
        line[: cuts.get(i, len(line))].rstrip() for i, line in enumerate(segment.split("\n"), 1)
    ]
    return "\n".join(line for line in lines if line.strip())


def _help(comment: str) -> tuple[str, str]:
    """papermill's reading of a trailing comment: `# type: T help text` → ("T", "help text")."""
    text = comment.lstrip("#").strip()
    if text.startswith("type:"):
        words = text[5:].strip().split(None, 1)
        return (words[0] if words else ""), (words[1].strip() if len(words) > 1 else "")
    return "", text


def _names(target: ast.expr) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Tuple | ast.List):
        return [n for elt in target.elts for n in _names(elt)]
    if isinstance(target, ast.Starred):
        return _names(target.value)
    return []  # x.attr = ..., x[0] = ...: a change, not a parameter


def _literal(node: ast.expr) -> tuple[bool, Any]:
    """(True, value) for a JSON-like literal; (False, None) for anything computed."""
    try:
        value = ast.literal_eval(node)
        check_json_like(value, "_", finite=True)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, ParameterError):
        return False, None
    return True, value


@dataclass
class _Binding:
    name: str
    stmt: int
    literal: bool = False
    value: Any = None
    code: str = ""
    annotation: ast.expr | None = None
    comment_type: str = ""
    help: str = ""
    binds: bool = True


def _bindings(tree: ast.Module, code: str, comments: dict[int, str]) -> list[_Binding]:
    """Every name the cell assigns (top level, or inside if/for/try/with blocks), in order."""
    found: list[_Binding] = []

    def note(node: ast.stmt, index: int, nested: bool) -> None:
        comment_type, help_text = _help(comments.get(node.end_lineno or node.lineno, ""))
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            annotation = node.annotation if isinstance(node, ast.AnnAssign) else None
            value = node.value
            for target in targets:
                names = _names(target)
                parts: list[ast.expr | None] = [value] * len(names)
                split = isinstance(target, ast.Name)
                if (
                    isinstance(target, ast.Tuple | ast.List)
                    and isinstance(value, ast.Tuple | ast.List)
                    and len(value.elts) == len(target.elts)
                    and all(isinstance(e, ast.Name) for e in target.elts)
                ):
                    parts, split = list(value.elts), True  # a, b = 1, 2: one literal each
                for name, part in zip(names, parts, strict=True):
                    binding = _Binding(name, index, annotation=annotation)
                    binding.comment_type, binding.help = comment_type, help_text
                    if part is None:
                        binding.binds = False  # `x: int` alone declares, binds nothing
                    else:
                        binding.code = _code_of(code, part)
                        if split and not nested:
                            binding.literal, binding.value = _literal(part)
                    found.append(binding)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                note(child, index, True)
            else:  # except handlers, match cases
                for stmt in getattr(child, "body", None) or []:
                    if isinstance(stmt, ast.stmt):
                        note(stmt, index, True)

    for index, node in enumerate(tree.body):
        note(node, index, False)
    return found


def _touched(
    code: str, ref: str, bindings: list[_Binding]
) -> tuple[dict[str, set[int]], list[str]]:
    """Which statements bind or change each name, and the names the cell reads before binding
    them (from cells above it, or builtins)."""
    from nb_mlops.pipeline.analysis import analyze_source

    touched: dict[str, set[int]] = {}
    needs: list[str] = []
    for index, stmt in enumerate(analyze_source(code, ref)):
        needs += [n for n in sorted(stmt.needs) if n not in touched and n not in needs]
        # a name bound, deleted, changed in place, or given to a call (which may change it)
        called = set().union(*(c.receiver | c.all_args() for c in stmt.calls))
        for name in stmt.writes | stmt.changes | called:
            touched.setdefault(name, set()).add(index)
    for binding in bindings:
        if not binding.binds:  # an annotation alone is not a change of the value
            touched.get(binding.name, set()).discard(binding.stmt)
    return touched, needs


def _entry(name: str, mine: list[_Binding], touched: set[int], ref: str) -> dict[str, Any]:
    """The schema entry of one parameter: a literal default bound once and never changed gives
    its type and default; anything else is computed (the code that computes it)."""
    assigned = [b for b in mine if b.binds]
    declared = next(
        (t for b in reversed(mine) if (t := _type_of(b.annotation, b.comment_type))), None
    )
    entry: dict[str, Any] = {}
    last = assigned[-1] if assigned else None
    pure = len(assigned) == 1 and last is not None and last.literal and touched == {last.stmt}
    if pure and last is not None:
        default = last.value
        typ = declared or _infer(default)
        try:
            coerce(parse_type(typ), default, name=name)
        except ParameterError as exc:
            if default is not None:
                raise BuildError(
                    f"{ref}: the default of `{name}` does not fit its type: {exc}"
                ) from exc
            typ = f"{typ} | None"  # `x: int = None`: optional, as PEP 484 first read it
        entry = {"type": typ, "default": default}
    else:
        entry = {"type": declared or "any"}
        if last is not None:
            entry["computed"] = last.code
    text = next((b.help for b in reversed(mine) if b.help), "")
    if text:
        entry["help"] = text
    return entry


def read_parameters(source: str, ref: str) -> ParametersCell:
    """Read the parameters a `parameters` cell declares, as papermill's inspection reads them
    (and more: annotations, `a = b = 1`, `a, b = 1, 2`, assignments inside `if` blocks).

    Raises:
        BuildError: a reserved name, or a literal default that does not fit its annotation.
    """
    code, problems = _python(source, ref)
    tree = ast.parse(code)
    bindings = _bindings(tree, code, _comments(code))
    touched, needs = _touched(code, ref, bindings)
    schema: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(b.name for b in bindings):
        mine = [b for b in bindings if b.name == name]
        if name.startswith(RESERVED_PREFIX):
            raise BuildError(
                f"{ref}: parameter names starting with {RESERVED_PREFIX!r} are reserved ({name})"
            )
        schema[name] = _entry(name, mine, touched.get(name, set()), ref)
    return ParametersCell(schema, problems, needs)


def schema_from_source(source: str, ref: str) -> dict[str, dict[str, Any]]:
    """The schema of one parameters cell (see `read_parameters`)."""
    return read_parameters(source, ref).schema


# --- values ----------------------------------------------------------------------------------


def check_json_like(value: Any, name: str, *, finite: bool = False) -> None:
    """Refuse anything but str, int, float, bool, None, and lists / str-keyed dicts of them.

    NaN and infinities pass (papermill passes them too) unless `finite`.
    """
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if finite and not math.isfinite(value):
            raise ParameterError(f"parameter `{name}`: {value!r} is not a finite number")
        return
    if isinstance(value, list):
        for item in value:
            check_json_like(item, name, finite=finite)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ParameterError(f"parameter `{name}`: dict key {key!r} is not a string")
            check_json_like(item, name, finite=finite)
        return
    raise ParameterError(
        f"parameter `{name}`: a {type(value).__name__} is not JSON-like; "
        "use str, int, float, bool, None, or lists / dicts of them"
    )


def _type_str(typ: Any) -> str:
    if isinstance(typ, str):
        return typ
    if typ[0] == "union":
        return " | ".join(_type_str(t) for t in typ[1])
    return f"{typ[0]}[{'str, ' if typ[0] == 'dict' else ''}{_type_str(typ[1])}]"


def resolve_text(text: str) -> Any:
    """Command-line text for an untyped parameter, read as papermill's `-p` reads it:
    `True`/`False`/`None`, then an int, then a float (`NaN` and `inf` included), else the text.

    Example:
        >>> [resolve_text(t) for t in ("True", "10", "1e3", '"Hello"')]
        [True, 10, 1000.0, '"Hello"']
    """
    if text == "True":
        return True
    if text == "False":
        return False
    if text == "None":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _from_string(typ: Any, text: str) -> Any:
    """CLI text → a value of `typ`, only where the reading is unambiguous and lossless."""
    if typ == "str":
        return text
    if typ == "int":
        stripped = text.strip()
        if stripped.lstrip("+-").isdigit() and stripped.isascii():
            return int(stripped)
        raise ValueError
    if typ == "float":
        value = float(text)
        if math.isnan(value):
            raise ValueError
        return value
    if typ == "bool":
        lowered = text.strip().lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise ValueError
    if typ == "None":
        if text.strip().lower() in ("null", "none"):
            return None
        raise ValueError
    if typ == "any":
        return resolve_text(text)
    return json.loads(text)  # list / dict: JSON text


_NO = object()  # a scalar value that does not fit its type


def _to_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_FLOAT_INT:
        return int(value)
    return _NO


def _to_float(value: Any) -> Any:
    # NaN is refused: every comparison with it is False, so it breaks a run silently
    if isinstance(value, float) and not math.isnan(value):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _EXACT_FLOAT_INT:
        return float(value)
    return _NO


# scalar type → the value converted where lossless, or _NO
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "None": lambda value: None if value is None else _NO,
    "bool": lambda value: value if isinstance(value, bool) else _NO,
    "int": _to_int,
    "float": _to_float,
    "str": lambda value: value if isinstance(value, str) else _NO,
}


def _mismatch(typ: Any, value: Any, name: str) -> ParameterError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return ParameterError(
        f"parameter `{name}` expects {_type_str(typ)}, got {shown} ({type(value).__name__})"
    )


def _coerce_union(typ: Any, value: Any, name: str, from_string: bool) -> Any:
    members = sorted(typ[1], key=lambda t: t == "str")  # a string fits str last
    for member in members:
        try:
            return coerce(member, value, name=name, from_string=from_string)
        except ParameterError:
            continue
    raise _mismatch(typ, value, name)


def _coerce_container(typ: Any, value: Any, name: str) -> Any:
    kind, inner = typ
    if kind == "list":
        if not isinstance(value, list):
            raise _mismatch(typ, value, name)
        return [coerce(inner, item, name=f"{name}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _mismatch(typ, value, name)
    return {k: coerce(inner, v, name=f"{name}[{k!r}]") for k, v in value.items()}


def coerce(typ: Any, value: Any, *, name: str, from_string: bool = False) -> Any:
    """Check `value` against the parsed type `typ`, converting only where lossless.

    Raises:
        ParameterError: the value does not fit; the message names the parameter and the type.
    """
    if isinstance(typ, tuple) and typ[0] == "union":
        return _coerce_union(typ, value, name, from_string)
    if from_string and isinstance(value, str) and typ != "str":
        try:
            parsed = _from_string(typ, value)
        except (ValueError, TypeError):
            raise _mismatch(typ, value, name) from None
        return coerce(typ, parsed, name=name)
    if typ == "any":
        check_json_like(value, name)
        return value
    if isinstance(typ, str) and typ in _CONVERT:
        result = _CONVERT[typ](value)
        if result is _NO:
            raise _mismatch(typ, value, name)
        return result
    return _coerce_container(typ, value, name)


def validate(
    schema: Mapping[str, Mapping[str, Any]],
    values: Mapping[Any, Any] | None,
    *,
    from_strings: bool = False,
) -> dict[str, Any]:
    """Validate `values` against `schema` and fill in literal defaults.

    Args:
        schema: name → {"type", "default" | "computed", "help"} (from pipeline.yaml).
        values: the caller's values; with `from_strings`, str values are CLI text to convert.
        from_strings: coerce strings losslessly to the declared type (`"3"` → 3 for an int);
            text for an untyped (`any`) parameter is read as papermill's `-p` reads it.

    Returns:
        In declaration order, every parameter given a value or declaring a literal default;
        a parameter whose default the cell computes is left to the cell unless given.

    Raises:
        ParameterError: an unknown, non-identifier or keyword name, or a value of the wrong type.

    Example:
        >>> validate({"n": {"type": "int", "default": 3}}, {"n": "4"}, from_strings=True)
        {'n': 4}
    """
    values = dict(values or {})
    declared = describe(schema)
    for key in values:
        if not isinstance(key, str) or not key.isidentifier():
            raise ParameterError(
                f"parameter name {key!r} is not a Python identifier; declared parameters: {declared}"
            )
        if keyword.iskeyword(key):
            raise ParameterError(
                f"parameter name {key!r} is a Python keyword; declared parameters: {declared}"
            )
        if key not in schema:
            raise ParameterError(f"unknown parameter {key!r}; declared parameters: {declared}")
    result: dict[str, Any] = {}
    for name, entry in schema.items():
        typ = parse_type(str(entry["type"]))
        if name in values:
            value = values[name]
            strings = from_strings and isinstance(value, str)
            result[name] = coerce(typ, value, name=name, from_string=strings)
        elif "default" in entry:
            result[name] = entry["default"]
    return result


def parse_cli_values(
    schema: Mapping[str, Mapping[str, Any]],
    *,
    typed: Mapping[str, Any] | None = None,
    text: Mapping[str, str] | None = None,
    raw: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Values given on a command line, checked against `schema` (every path that takes them).

    Args:
        schema: the pipeline's parameters (from pipeline.yaml).
        typed: values typed by YAML (papermill's -b, -f, -y), kept as typed.
        text: `-p NAME=VALUE` text, converted losslessly to the declared type (untyped: read as
            papermill's -p reads it).
        raw: `-r NAME=VALUE` text, kept as text for an untyped parameter (else as `text`).

    Returns:
        The given names only (defaults are the runner's), `text` and `raw` over `typed`.

    Raises:
        ParameterError: an unknown name, or a value that does not fit its declared type (the
            message names the parameter, the value and the type).

    Example:
        >>> parse_cli_values({"C": {"type": "float", "default": 1.0}}, text={"C": "0.5"})
        {'C': 0.5}
    """
    typed, text, raw = dict(typed or {}), dict(text or {}), dict(raw or {})
    values = validate(schema, typed) if typed else {}
    values = {k: values[k] for k in typed}
    untyped = {k for k, v in schema.items() if v.get("type") == "any"}
    raw_text = {k: v for k, v in raw.items() if k in untyped}
    from_text = validate(schema, {**text, **raw}, from_strings=True)
    from_raw = validate(schema, raw_text)
    for key in {**text, **raw}:
        values.pop(key, None)
        values[key] = from_raw[key] if key in raw_text else from_text[key]
    return values
