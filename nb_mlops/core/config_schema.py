"""The configuration schema: every key of `[tool.nb_mlops]` (or `nb_mlops.toml`), its type and rule.

`problems(settings)` checks a settings table and returns one line per problem — an unknown key (with
a did-you-mean), a wrong type, a bad threshold — never stopping at the first. `load_config` keeps them
on the `Config`; `nb-mlops config --check` prints them; promotion refuses while there is any, so a
misspelt or misshapen setting can never switch a gate off.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GATE_KEYS",
    "GATE_TABLE",
    "THRESHOLD",
    "TOP_KEYS",
    "Key",
    "problems",
    "threshold_problem",
    "unknown_key",
]

THRESHOLD = re.compile(r"^\s*(>=|<=|==|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*\Z")
"""A metric gate: `OP NUMBER` with OP one of >=, >, <=, <, ==."""

Check = Callable[[str, Any], list[str]]  # (dotted key as the user wrote it, value) → problems


@dataclass(frozen=True)
class Key:
    """One configuration key: what it holds (for messages and `config --check`) and its check."""

    name: str
    help: str
    check: Check


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        return "an array of tables ([[...]])"
    if isinstance(value, bool):
        return f"a boolean ({_show(value)})"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return f"an array ({_show(value)})"
    return f"{type(value).__name__} {_show(value)}"


def _text(where: str, value: Any) -> list[str]:
    if isinstance(value, str) and value.strip():
        return []
    return [f"{where} must be a non-empty string, got {_kind(value)}"]


def _url(where: str, value: Any) -> list[str]:
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return []
    return [f'{where} must be an http(s) URL such as "http://127.0.0.1:5000", got {_kind(value)}']


def _number(minimum: float, strict: bool, integer: bool = False) -> Check:
    rule = f"{'>' if strict else '>='} {minimum:g}"
    noun = "an integer" if integer else "a number"

    def check(where: str, value: Any) -> list[str]:
        ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type:
            return [f"{where} must be {noun} {rule}, got {_kind(value)}"]
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            return [f"{where} must be {noun} {rule}, got {_show(value)}"]
        return []

    return check


def _finite(where: str, value: Any) -> list[str]:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return []
    return [f"{where} must be a number, got {_kind(value)}"]


def _flag(where: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return []
    return [f"{where} must be true or false, got {_kind(value)}"]


def _names(where: str, value: Any) -> list[str]:
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return []
    return [
        f'{where} must be a non-empty list of module names like ["sklearn", "myproject"], '
        f"got {_kind(value)}"
    ]


def _monitor(where: str, value: Any) -> list[str]:
    # the monitoring table has its own reader, which names the key and the value
    from nb_mlops.core.errors import ConfigError
    from nb_mlops.core.monitoring.settings import parse_settings

    try:
        parse_settings(value if isinstance(value, Mapping) else {"": value})
    except ConfigError as exc:
        return [f"{where}: {exc}"]
    return []


def threshold_problem(where: str, value: Any) -> str | None:
    """The problem with one metric threshold such as `">= 0.9"`, or None when it is valid."""
    if isinstance(value, str) and THRESHOLD.match(value):
        return None
    return (
        f'{where} = {_show(value)} is not a threshold; write it as "OP NUMBER" with OP one of '
        '>=, >, <=, <, == (e.g. ">= 0.9")'
    )


def _table(
    keys: Mapping[str, Key], noun: str, example: str, required: tuple[str, ...] = ()
) -> Check:
    """A table whose keys are all known: each value checked, unknown keys named with a guess."""

    def check(where: str, value: Any) -> list[str]:
        if not isinstance(value, Mapping):
            return [f"{where} must be a table like {example}, got {_kind(value)}"]
        found = [
            f"{where} must be a table like {example} (`{key}` is missing)"
            for key in required
            if key not in value
        ]
        for key, item in value.items():
            spec = keys.get(str(key))
            if spec is None:
                found.append(unknown_key(where, str(key), item, list(keys), noun))
            else:
                found += spec.check(f"{where}.{key}", item)
        return found

    return check


def unknown_key(where: str, key: str, value: Any, keys: list[str], noun: str) -> str:
    """The problem line for `key` of table `where`: not a known `noun`, a guess or the known ones."""
    line = f"{where}.{key} is not a known {noun}"
    guess = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.6)
    if guess:
        return f"{line}; did you mean `{where}.{guess[0]}`?"
    if noun == "gate" and isinstance(value, str) and THRESHOLD.match(value):
        return f'{line}; a metric threshold goes under metrics: {where}.metrics = {{ {key} = "{value}" }}'
    return f"{line} (known: {', '.join(keys)})"


def _metrics(where: str, value: Any) -> list[str]:
    example = '{ accuracy = ">= 0.9" }'
    if not isinstance(value, Mapping):
        return [f"{where} must be a table like {example}, got {_kind(value)}"]
    found = []
    for name, spec in value.items():
        problem = threshold_problem(f"{where}.{name}", spec)
        if problem:
            found.append(problem)
    return found


BEAT_KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key("metric", "the metric the candidate must improve", _text),
        Key(
            "min_delta",
            "how much better than the champion (default 0: strictly better)",
            _finite,
        ),
        Key(
            "direction",
            '"max" (larger is better) or "min"; default from the metric name',
            lambda w, v: (
                [] if v in ("max", "min") else [f'{w} must be "max" or "min", got {_kind(v)}']
            ),
        ),
        Key("require_same_snapshot", "fail when the evaluation snapshots differ", _flag),
    )
}
_beat_table = _table(BEAT_KEYS, "key", '{ metric = "accuracy", min_delta = 0.0 }', ("metric",))


def _beat(where: str, value: Any) -> list[str]:
    return [] if value is False else _beat_table(where, value)


def _users(where: str, value: Any) -> list[str]:
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return []
    return [f'{where} must be a list of user names like ["alice", "bob"], got {_kind(value)}']


PROMOTION_KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key("promoters", "users who may promote and roll back (default: anyone)", _users),
        Key("approvers", "users who may approve another user's promotion request", _users),
        Key("require_approval", "a promotion waits for an approver instead of moving", _flag),
    )
}
_promotion_table = _table(
    PROMOTION_KEYS, "key", '{ promoters = ["alice"], approvers = ["bob"], require_approval = true }'
)


def _promotion(where: str, value: Any) -> list[str]:
    found = _promotion_table(where, value)
    if not found and value.get("require_approval") and not value.get("approvers"):
        # fail closed: an approval nobody may give would block every promotion silently
        found.append(
            f"{where}.require_approval = true needs {where}.approvers = [...] (who approves)"
        )
    return found


# the built-in gates' settings; plugins' gates bring their own validator (`promotion.gates.register`)
GATE_KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key("metrics", 'metric thresholds, e.g. { accuracy = ">= 0.9" }', _metrics),
        Key("beat_champion", "the candidate must beat the current champion on a metric", _beat),
        Key("require_reproduced", "the pipeline must reproduce the interactive metrics", _flag),
        Key("require_data_verified", "every data snapshot used must verify", _flag),
    )
}


def _gates(where: str, value: Any) -> list[str]:
    if isinstance(value, Mapping):
        # every gate, built in or a plugin's, is resolved and validated by the gate registry
        from nb_mlops.core.promotion.gates import table_problems

        return table_problems(where, value)
    shape = _kind(value)
    if shape.startswith("an array of tables"):
        shape = f"an array of tables ([[{where}]]); write one table [{where}]"
    return [
        f'{where} must be a table: [{where}] holding e.g. metrics = {{ accuracy = ">= 0.9" }}, '
        f"got {shape}"
    ]


TOP_KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key("experiment", "experiment name (default: the notebook's file stem)", _text),
        Key("tracking_uri", "a team MLflow server instead of the embedded store", _text),
        Key("registry_uri", "MLflow model registry URI (default: the tracking URI)", _text),
        Key("artifact_root", "where new experiments keep artifacts", _text),
        Key(
            "data_store",
            "folder or s3://bucket/prefix of the data snapshots (default .nb_mlops/data)",
            _text,
        ),
        Key("data_store_endpoint", "endpoint URL of an s3:// data store (default: AWS)", _url),
        Key("model", "registered model name promotions go to", _text),
        Key("ui_url", "base URL of run links (the MLflow UI)", _url),
        Key(
            "reproduce_tolerance",
            "relative tolerance, pipeline vs interactive metrics",
            _number(0, False),
        ),
        Key("step_timeout", "seconds a pipeline step may run", _number(0, True)),
        Key("cell_timeout", "seconds one cell of a pipeline step may run", _number(0, True)),
        Key(
            "step_memory_limit_mb",
            "memory limit of a step kernel, MiB",
            _number(0, True, integer=True),
        ),
        Key(
            "write_retry_seconds",
            "how long a write to a locked database is retried",
            _number(0, False),
        ),
        Key("gates", "promotion gates", _gates),
        Key(
            "trusted_model_modules",
            "modules whose types a stored model may ask its loader to trust",
            _names,
        ),
        Key("monitor", "drift and decay checks: thresholds, policy, alerts", _monitor),
        Key(
            "promotion", "who may promote and approve; whether promotions need approval", _promotion
        ),
    )
}


GATE_TABLE = TOP_KEYS["gates"]
"""The `gates` key: `parse_gates` checks a gates table with it."""


def problems(settings: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Check a configuration table; one line per problem, in file order ([] when valid).

    Args:
        settings: the `[tool.nb_mlops]` table (or the whole `nb_mlops.toml`).
        prefix: how the table is addressed in its file: `tool.nb_mlops.` in a pyproject, "" in
            `nb_mlops.toml`; messages name keys as the user wrote them.

    Example:
        >>> problems({"gate": {"metrics": {"accuracy": ">= 0.9"}}}, "tool.nb_mlops.")
        ['tool.nb_mlops.gate is not a known key; did you mean `tool.nb_mlops.gates`?']
    """
    found: list[str] = []
    for key, value in settings.items():
        spec = TOP_KEYS.get(str(key))
        if spec is None:
            guess = difflib.get_close_matches(str(key), list(TOP_KEYS), n=1, cutoff=0.6)
            hint = (
                f"; did you mean `{prefix}{guess[0]}`?"
                if guess
                else f" (known: {', '.join(TOP_KEYS)})"
            )
            found.append(f"{prefix}{key} is not a known key{hint}")
        else:
            found += spec.check(f"{prefix}{key}", value)
    return found
