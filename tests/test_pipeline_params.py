"""The typed parameter contract (no kernel): names, types, lossless coercion,
JSON-like values only; and the context encoding that carries hostile strings into the kernel."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from papermill.cli import _resolve_type

from nb_mlops.core.errors import ParameterError
from nb_mlops.pipeline.kernel import decode_context, encode_context
from nb_mlops.pipeline.params import resolve_text, validate

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


# --- papermill's habits: untyped command-line text, dict order, its option spellings ----------


@given(st.text(max_size=12) | st.from_regex(r"[-+]?\d{1,4}(\.\d*)?([eE][-+]?\d)?", fullmatch=True))
def test_untyped_text_is_read_exactly_as_papermills_cli_reads_it(text: str) -> None:
    ours, theirs = resolve_text(text), _resolve_type(text)
    assert type(ours) is type(theirs)
    assert ours == theirs or (ours != ours and theirs != theirs)  # NaN


@pytest.mark.parametrize(
    ("text", "expected"),
    [("NaN", "nan"), ("inf", "inf"), ("-Infinity", "-inf"), ("1_000", 1000), (" 7 ", 7)],
)
def test_untyped_text_takes_papermills_special_numbers(text: str, expected: object) -> None:
    value = validate(SCHEMA, {"extra": text}, from_strings=True)["extra"]
    assert repr(value) == expected if isinstance(expected, str) else value == expected


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=5),
        st.integers() | st.text(max_size=5) | st.floats(allow_nan=False),
        max_size=6,
    )
)
def test_dict_values_keep_their_key_order_through_the_context(value: dict) -> None:
    schema = {"cfg": {"type": "dict", "default": {}}, "extra": {"type": "any", "default": None}}
    params = validate(schema, {"cfg": value, "extra": value})
    back = decode_context(encode_context({"params": params}))["params"]
    assert back == {"cfg": value, "extra": value}
    assert list(back["cfg"]) == list(value) and list(back["extra"]) == list(value)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-p", "msg", "Hello"], ["-p", "msg=Hello"]),
        (["-p", "msg=Hello"], ["-p", "msg=Hello"]),
        (["--parameters", "url", "https://x/?a=b"], ["--parameters", "url=https://x/?a=b"]),
        (["-p", "expr", "a=b"], ["-p", "expr=a=b"]),
        (["--param=n", "3"], ["--param", "n=3"]),
        (["--param=n=3"], ["--param", "n=3"]),
        (["-pn=3", "-r", "s", "007"], ["-p", "n=3", "-r", "s=007"]),
        (
            ["train", "-p", "a", "1", "-p", "b=2", "--json"],
            ["train", "-p", "a=1", "-p", "b=2", "--json"],
        ),
        (["-p", "empty", ""], ["-p", "empty="]),
        (["-p"], ["-p"]),
        (["--", "-p", "a", "1"], ["--", "-p", "a", "1"]),
    ],
)
def test_papermills_two_word_parameter_options_are_read(args: list, expected: list) -> None:
    from nb_mlops.cli.pipeline import _join_pairs

    assert _join_pairs(args) == expected


def test_values_come_from_papermills_sources_in_papermills_order(tmp_path) -> None:
    import base64

    from nb_mlops.cli.pipeline import _Given

    # Given every source papermill reads, each overriding the one before it
    schema = {
        "a": {"type": "any", "default": None},
        "b": {"type": "int", "default": 0},
        "d": {"type": "str", "default": ""},
        "cfg": {"type": "dict", "default": {}},
        "raw": {"type": "any", "default": None},
    }
    (tmp_path / "p.yaml").write_text("a: from-file\nb: 1\nd: 2019-01-01\ncfg: {z: 1, y: 2}\n")
    b64 = base64.b64encode(b"a: from-b64\nb: 0").decode()
    given = _Given(
        pairs=("b=3",),
        raw=("raw=True",),
        files=(tmp_path / "p.yaml",),
        yamls=("a: from-yaml",),
        b64=(b64,),
    )
    # When they are read against the schema
    values = given.values(schema)
    # Then later sources win, YAML values keep their types (dates stay text, keys their order),
    # -p text is converted, -r text stays text
    assert values == {
        "a": "from-yaml",
        "b": 3,
        "d": "2019-01-01",
        "cfg": {"z": 1, "y": 2},
        "raw": "True",
    }
    assert list(values["cfg"]) == ["z", "y"]
