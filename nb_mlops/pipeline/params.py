"""The typed parameter contract: a schema read from the `parameters` cell, and validation.

Types come from annotations (`C: float = 1.0`, `cols: list[str] = [...]`, `x: int | None = None`)
or from the literal default (`name = "x"` → str). Values are checked before anything runs:
unknown or non-identifier names, wrong types and non-JSON-like values are refused with the
declared parameters listed; CLI strings are coerced only where lossless.
"""

from __future__ import annotations

import ast
import json
import keyword
import math
from collections.abc import Mapping
from typing import Any

from nb_mlops.core.errors import BuildError, ParameterError

__all__ = [
    "RESERVED_PREFIX",
    "check_json_like",
    "coerce",
    "describe",
    "parse_type",
    "schema_from_source",
    "validate",
]

RESERVED_PREFIX = "nb_mlops_"
_SCALARS = {"int", "float", "str", "bool", "any", "None"}
_ALIASES = {"List": "list", "Dict": "dict", "Any": "any", "NoneType": "None", "Mapping": "dict"}
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
    """An annotation AST → our type string (raises ValueError for non-JSON-like types)."""
    if isinstance(node, ast.Constant) and node.value is None:
        return "None"
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return _annotation(ast.parse(node.value, mode="eval").body)
    if isinstance(node, ast.Name | ast.Attribute):
        name = node.id if isinstance(node, ast.Name) else node.attr
        name = _ALIASES.get(name, name)
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
    return ", ".join(f"{n}: {s['type']} = {json.dumps(s['default'])}" for n, s in schema.items())


def schema_from_source(source: str, ref: str) -> dict[str, dict[str, Any]]:
    """Read `name: type = literal` / `name = literal` lines of a parameters cell.

    Raises:
        BuildError: a statement that is not a literal assignment, a non-JSON-like type or default,
            or a default that does not fit its annotation (names the cell and the parameter).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise BuildError(f"{ref}: syntax error in the parameters cell: {exc.msg}") from exc
    schema: dict[str, dict[str, Any]] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            or isinstance(node, ast.Pass)
        ):
            continue
        target: ast.expr | None = None
        annotation: ast.expr | None = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, annotation = node.target, node.annotation
        value_node = getattr(node, "value", None)
        if not isinstance(target, ast.Name) or value_node is None:
            raise BuildError(
                f"{ref}: the parameters cell may only assign literal values "
                f'(`n: int = 3`, `name = "x"`); `{ast.unparse(node)[:60]}` is not one'
            )
        name = target.id
        if name.startswith(RESERVED_PREFIX):
            raise BuildError(
                f"{ref}: parameter names starting with {RESERVED_PREFIX!r} are reserved ({name})"
            )
        try:
            default = ast.literal_eval(value_node)
        except ValueError as exc:
            raise BuildError(
                f"{ref}: parameter `{name}` needs a literal default (number, string, bool, None, "
                f"list or dict), not `{ast.unparse(value_node)[:60]}`"
            ) from exc
        try:
            check_json_like(default, name)
        except ParameterError as exc:
            raise BuildError(f"{ref}: {exc}") from exc
        if annotation is None:
            typ = _infer(default)
        else:
            try:
                typ = _annotation(annotation)
                parse_type(typ)
            except (ValueError, SyntaxError) as exc:
                raise BuildError(
                    f"{ref}: parameter `{name}` has type `{ast.unparse(annotation)}`, which is not "
                    "JSON-like; use int, float, str, bool, list[...], dict[str, ...] or `X | None`"
                ) from exc
        try:
            default = coerce(parse_type(typ), default, name=name)
        except ParameterError as exc:
            raise BuildError(
                f"{ref}: the default of `{name}` does not fit its type: {exc}"
            ) from exc
        schema[name] = {"type": typ, "default": default}
    return schema


# --- values ----------------------------------------------------------------------------------


def check_json_like(value: Any, name: str) -> None:
    """Refuse anything but str, int, float (finite), bool, None, and lists / str-keyed dicts of them."""
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParameterError(f"parameter `{name}`: {value!r} is not a finite number")
        return
    if isinstance(value, list):
        for item in value:
            check_json_like(item, name)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ParameterError(f"parameter `{name}`: dict key {key!r} is not a string")
            check_json_like(item, name)
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
        if not math.isfinite(value):
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
        try:
            return json.loads(text)
        except ValueError:
            return text
    return json.loads(text)  # list / dict: JSON text


def coerce(typ: Any, value: Any, *, name: str, from_string: bool = False) -> Any:
    """Check `value` against the parsed type `typ`, converting only where lossless.

    Raises:
        ParameterError: the value does not fit; the message names the parameter and the type.
    """

    def fail() -> ParameterError:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        return ParameterError(
            f"parameter `{name}` expects {_type_str(typ)}, got {shown} ({type(value).__name__})"
        )

    if isinstance(typ, tuple) and typ[0] == "union":
        members = sorted(typ[1], key=lambda t: t == "str")  # a string fits str last
        for member in members:
            try:
                return coerce(member, value, name=name, from_string=from_string)
            except ParameterError:
                continue
        raise fail()
    if from_string and isinstance(value, str) and typ != "str":
        try:
            parsed = _from_string(typ, value)
        except (ValueError, TypeError):
            raise fail() from None
        return coerce(typ, parsed, name=name)
    if typ == "any":
        check_json_like(value, name)
        return value
    if typ == "None":
        if value is None:
            return None
        raise fail()
    if typ == "bool":
        if isinstance(value, bool):
            return value
        raise fail()
    if typ == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_FLOAT_INT:
            return int(value)
        raise fail()
    if typ == "float":
        if isinstance(value, float) and math.isfinite(value):
            return value
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and abs(value) <= _EXACT_FLOAT_INT
        ):
            return float(value)
        raise fail()
    if typ == "str":
        if isinstance(value, str):
            return value
        raise fail()
    kind, inner = typ
    if kind == "list":
        if not isinstance(value, list):
            raise fail()
        return [coerce(inner, item, name=f"{name}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise fail()
    return {k: coerce(inner, v, name=f"{name}[{k!r}]") for k, v in value.items()}


def validate(
    schema: Mapping[str, Mapping[str, Any]],
    values: Mapping[Any, Any] | None,
    *,
    from_strings: bool = False,
) -> dict[str, Any]:
    """Validate `values` against `schema` and fill in defaults.

    Args:
        schema: name → {"type", "default"} (from pipeline.yaml).
        values: the caller's values; with `from_strings`, str values are CLI text to convert.
        from_strings: coerce strings losslessly to the declared type (`"3"` → 3 for an int).

    Returns:
        Every declared parameter, in declaration order, with its validated value.

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
        else:
            result[name] = entry["default"]
    return result
