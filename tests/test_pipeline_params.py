"""The typed parameter contract (no kernel): names, types, lossless coercion,
JSON-like values only; and the context encoding that carries hostile strings into the kernel."""

from __future__ import annotations

import pytest

from nb_mlops.core.errors import ParameterError
from nb_mlops.pipeline.kernel import decode_context, encode_context
from nb_mlops.pipeline.params import validate

SCHEMA = {
    "C": {"type": "float", "default": 1.0},
    "n": {"type": "int", "default": 3},
    "name": {"type": "str", "default": "x"},
    "flag": {"type": "bool", "default": False},
    "cols": {"type": "list[str]", "default": ["a"]},
    "weights": {"type": "dict[str, float]", "default": {}},
    "seed": {"type": "int | None", "default": None},
    "extra": {"type": "any", "default": None},
}

HOSTILE = [
    '"',
    "'",
    '"""',
    "'''",
    "\\",
    "end\\",
    "a\nb",
    "\r\n",
    "nul\x00byte",
    "\u2028",
    "\u2029",
    "'); import os; os._exit(1) #",
    '"""; raise SystemExit #',
    "$(id) `id` ${HOME}",
    "{n}",
    "%%bash",
]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"n": "4"}, {"n": 4}),
        ({"n": "+4"}, {"n": 4}),
        ({"C": "3"}, {"C": 3.0}),
        ({"C": "1e-3"}, {"C": 0.001}),
        ({"flag": "true"}, {"flag": True}),
        ({"flag": "0"}, {"flag": False}),
        ({"cols": '["a", "b"]'}, {"cols": ["a", "b"]}),
        ({"weights": '{"a": 1}'}, {"weights": {"a": 1.0}}),
        ({"seed": "null"}, {"seed": None}),
        ({"seed": "7"}, {"seed": 7}),
        ({"name": "3"}, {"name": "3"}),
        # untyped: text is read as papermill's -p reads it (JSON is for typed lists and dicts)
        ({"extra": "[1, 2]"}, {"extra": "[1, 2]"}),
        ({"extra": "plain text"}, {"extra": "plain text"}),
        ({"extra": '"Hello"'}, {"extra": '"Hello"'}),
        ({"extra": "True"}, {"extra": True}),
        ({"extra": "true"}, {"extra": "true"}),
        ({"extra": "None"}, {"extra": None}),
        ({"extra": "10"}, {"extra": 10}),
        ({"extra": "12.51"}, {"extra": 12.51}),
        ({"extra": "inf"}, {"extra": float("inf")}),
        ({"C": "inf"}, {"C": float("inf")}),
        ({"flag": "True"}, {"flag": True}),
    ],
)
def test_cli_strings_are_coerced_losslessly(given: dict, expected: dict) -> None:
    result = validate(SCHEMA, given, from_strings=True)
    assert {k: result[k] for k in expected} == expected
    assert [type(result[k]) for k in expected] == [type(v) for v in expected.values()]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"n": "3.5"}, "parameter `n` expects int, got '3.5' (str)"),
        ({"n": "three"}, "parameter `n` expects int"),
        ({"C": "nan"}, "parameter `C` expects float"),
        ({"flag": "maybe"}, "parameter `flag` expects bool"),
        ({"cols": "a,b"}, "parameter `cols` expects list[str]"),
        ({"seed": "1.5"}, "parameter `seed` expects int | None"),
    ],
)
def test_cli_strings_that_do_not_fit_are_refused(given: dict, message: str) -> None:
    with pytest.raises(ParameterError, match=None) as info:
        validate(SCHEMA, given, from_strings=True)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"n": 3.5}, "parameter `n` expects int, got 3.5 (float)"),
        ({"n": True}, "parameter `n` expects int, got True (bool)"),
        ({"n": "4"}, "parameter `n` expects int, got '4' (str)"),  # Python callers are not coerced
        ({"C": "1.0"}, "parameter `C` expects float"),
        ({"flag": 1}, "parameter `flag` expects bool"),
        ({"cols": ("a", "b")}, "parameter `cols` expects list[str], got ('a', 'b') (tuple)"),
        ({"cols": ["a", 1]}, "parameter `cols[1]` expects str"),
        ({"weights": {"a": "x"}}, "parameter `weights['a']` expects float"),
        ({"extra": {1, 2}}, "parameter `extra`: a set is not JSON-like"),
        ({"extra": b"bytes"}, "parameter `extra`: a bytes is not JSON-like"),
        ({"C": float("nan")}, "parameter `C` expects float, got nan (float)"),
        ({"extra": {1: "a"}}, "parameter `extra`: dict key 1 is not a string"),
        ({"extra": object()}, "is not JSON-like"),
    ],
)
def test_wrong_types_are_refused_with_the_expected_type(given: dict, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        validate(SCHEMA, given)
    assert message in str(info.value)


def test_lossless_python_conversions() -> None:
    assert validate(SCHEMA, {"C": 2, "n": 4.0}) | {} == {**validate(SCHEMA, {}), "C": 2.0, "n": 4}
    assert validate(SCHEMA, {})["cols"] == ["a"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nn", "unknown parameter 'nn'"),
        ("a b", "parameter name 'a b' is not a Python identifier"),
        ("x; import os", "is not a Python identifier"),
        ("__import__('os')", "is not a Python identifier"),
        ("class", "parameter name 'class' is a Python keyword"),
        ("", "parameter name '' is not a Python identifier"),
        (3, "parameter name 3 is not a Python identifier"),
    ],
)
def test_bad_names_are_refused_with_the_declared_parameters(name: object, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        validate(SCHEMA, {name: "1"}, from_strings=True)
    text = str(info.value)
    assert message in text
    assert "declared parameters: C: float = 1.0, n: int = 3" in text
    assert "\n" not in text


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_survive_the_context_byte_for_byte(text: str) -> None:
    params = validate(SCHEMA, {"name": text, "cols": [text]})
    encoded = encode_context({"params": params})
    assert set(encoded) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
    assert decode_context(encoded)["params"]["name"] == text
