"""Promotion gates: a registry of gates, `[tool.nb_mlops.gates]` parsed against it, and the verdicts.

Gates are pure functions of what the store recorded (metrics, tags, data versions) for the candidate
and the current champion; each gives PASS, FAIL or SKIP with the values it compared. The built-in
gates and those a package adds (`register`, or the `nb_mlops.gates` entry-point group) are one
registry: each key of the table names a gate, whose own validator checks its settings.
"""

from __future__ import annotations

import json
import operator
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from nb_mlops.core import plugins
from nb_mlops.core.config_schema import GATE_KEYS, GATE_TABLE, THRESHOLD, unknown_key
from nb_mlops.core.errors import ConfigError, PluginError

__all__ = [
    "FAIL",
    "PASS",
    "SKIP",
    "BeatChampion",
    "Gate",
    "GateFacts",
    "GateResult",
    "GateSpec",
    "MetricGate",
    "RunFacts",
    "Verdict",
    "evaluate_gates",
    "format_value",
    "gate",
    "known_gates",
    "parse_gates",
    "register",
    "table_problems",
]

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}
# metrics where smaller is better, when `direction` is not given
_LOWER_IS_BETTER = re.compile(r"loss|error|mse|mae|rmse|mape|perplexity", re.IGNORECASE)


@dataclass(frozen=True)
class GateResult:
    """The verdict of one gate.

    Attributes:
        gate: e.g. `metric:accuracy`, `beat_champion`, `require_reproduced`, `require_data_verified`.
        verdict: PASS, FAIL or SKIP.
        measured: the candidate's value (a number, a tag value, a list of data versions).
        expected: what the gate asked for (`>= 0.9`, `> 0.91 (champion v3 + 0.0)`, `true`).
        detail: one sentence saying what was compared and why the verdict.
    """

    gate: str
    verdict: str
    measured: Any = None
    expected: Any = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MetricGate:
    metric: str
    op: str
    threshold: float

    @property
    def expected(self) -> str:
        return f"{self.op} {self.threshold:g}"


@dataclass(frozen=True)
class BeatChampion:
    metric: str
    min_delta: float = 0.0
    direction: str = "max"  # "max": larger is better; "min": smaller is better
    require_same_snapshot: bool = False


@dataclass(frozen=True)
class GateSpec:
    """The parsed gates table: (gate name, its settings) in evaluation order (registry order).

    A gate whose settings are `false` is off. The properties read the built-in gates' settings.
    """

    entries: tuple[tuple[str, Any], ...] = ()

    def settings(self, name: str) -> Any:
        """The settings of gate `name` (False when the table does not name it)."""
        return next((value for key, value in self.entries if key == name), False)

    @property
    def metrics(self) -> tuple[MetricGate, ...]:
        return _parse_metrics(self.settings("metrics") or {})

    @property
    def beat_champion(self) -> BeatChampion | None:
        beat = self.settings("beat_champion")
        return _parse_beat(beat) if beat not in (None, False) else None

    @property
    def require_reproduced(self) -> bool:
        return bool(self.settings("require_reproduced"))

    @property
    def require_data_verified(self) -> bool:
        return bool(self.settings("require_data_verified"))

    @property
    def empty(self) -> bool:
        return all(value is False or value == {} for _, value in self.entries)


DataVerifier = Callable[[str, str], str | None]
"""`verify(name, "vN:<digest>")` → None when the stored version is intact, else what is wrong."""


@dataclass
class RunFacts:
    """What a gate may look at for one run (the candidate, or the champion's run).

    Attributes:
        run_id: the pipeline parent run.
        metrics: last value of every metric (the runner copies step metrics onto the parent).
        tags: the run's tags.
        data: snapshot name → `vN:<digest>` (from `nb_mlops.data.*` tags).
        eval_data: names of the snapshots used with dataset context eval or test.
    """

    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)
    eval_data: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Verdict:
    """What a gate's check returns: PASS, FAIL or SKIP and a one-line reason.

    Attributes:
        verdict: PASS, FAIL or SKIP (anything else counts as FAIL).
        reason: one line saying what was compared and why the verdict (shown as the detail).
        measured: the candidate's value, shown in the gate table.
        expected: what the gate asked for, shown in the gate table.
    """

    verdict: str
    reason: str
    measured: Any = None
    expected: Any = None


@dataclass(frozen=True)
class GateFacts:
    """What a gate's check receives besides its settings.

    Attributes:
        candidate: the candidate pipeline run.
        champion: (version, its run's facts or None) of the current champion; None without one.
        verify: checks one stored data version (`verify(name, "vN:<digest>")` → None when it is
            intact, else what is wrong); None when data snapshots cannot be verified here.
    """

    candidate: RunFacts
    champion: tuple[str, RunFacts | None] | None = None
    verify: DataVerifier | None = None


class Gate(Protocol):
    """A promotion gate: configured as `[tool.nb_mlops.gates] NAME = SETTINGS`.

    `NAME = false` turns it off (its check is not called); any other settings are first checked by
    `validate` (at configuration load, so a bad setting blocks promotion), then passed to `check`.
    """

    def validate(self, where: str, settings: Any) -> list[str]:
        """The problems with `settings`, one line each starting with `where` (the dotted key as
        the user wrote it, e.g. `tool.nb_mlops.gates.max_size`); [] when they are valid."""
        ...

    def check(self, facts: GateFacts, settings: Any) -> Verdict | list[GateResult]:
        """Judge the candidate: one `Verdict` (shown under the gate's name), or a list of
        `GateResult` for a gate that gives several rows (the metrics gate: one per metric)."""
        ...


def format_value(value: Any) -> str:
    """A gate value as table text: numbers with %g, lists comma-joined, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def parse_gates(table: Mapping[str, Any] | None) -> GateSpec:
    """Validate the gates table of the configuration (against `config_schema`) and parse it.

    Args:
        table: `cfg.gates`, e.g. `{"metrics": {"accuracy": ">= 0.9"}, "require_reproduced": True}`.

    Returns:
        The parsed gates.

    Raises:
        ConfigError: an unknown gate (the known ones are listed), a bad operator or threshold, a
            wrong type (names the gate); a `PluginError` when a plugin's gate cannot be loaded.

    Example:
        >>> parse_gates({"metrics": {"accuracy": ">= 0.9"}}).metrics[0].expected
        '>= 0.9'
    """
    table = {} if table is None else table
    problems = GATE_TABLE.check("gates", table)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    order = list(_REGISTRY)  # every name of the table is registered now (plugins were loaded)
    entries = sorted(((str(k), v) for k, v in table.items()), key=lambda kv: order.index(kv[0]))
    return GateSpec(tuple(entries))


def _parse_metrics(table: Mapping[str, Any]) -> tuple[MetricGate, ...]:
    metrics = []
    for name, spec in table.items():
        match = THRESHOLD.match(spec)
        assert match is not None  # checked by the schema
        metrics.append(MetricGate(str(name), match.group(1), float(match.group(2))))
    return tuple(metrics)


def _parse_beat(beat: Mapping[str, Any]) -> BeatChampion:
    metric = str(beat["metric"])
    direction = beat.get("direction", "min" if _LOWER_IS_BETTER.search(metric) else "max")
    return BeatChampion(
        metric,
        float(beat.get("min_delta", 0.0)),
        str(direction),
        bool(beat.get("require_same_snapshot", False)),
    )


# --- evaluation ----------------------------------------------------------------------------------


def evaluate_gates(
    spec: GateSpec,
    candidate: RunFacts,
    champion: tuple[str, RunFacts | None] | None = None,
    verify: DataVerifier | None = None,
) -> list[GateResult]:
    """Judge `candidate` against every configured gate, in registry order (built-ins first).

    Args:
        spec: the parsed gates.
        candidate: facts of the candidate pipeline run.
        champion: (version, facts of its run or None) of the current champion, or None.
        verify: checks one stored data version; None when data snapshots cannot be verified here.

    Returns:
        One result per gate (the metrics gate gives one per metric); a gate that raises or
        returns something else than a verdict FAILs, saying so (fail closed).
    """
    facts = GateFacts(candidate, champion, verify)
    results: list[GateResult] = []
    for name, settings in spec.entries:
        if settings is False:
            continue  # `name = false` turns a gate off
        try:
            outcome = gate(name).check(facts, settings)
        except Exception as exc:
            outcome = Verdict(FAIL, f"the gate raised {type(exc).__name__}: {exc}")
        results += _results(name, outcome)
    return results


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _results(name: str, outcome: Any) -> list[GateResult]:
    if isinstance(outcome, Verdict):
        outcome = [
            GateResult(name, outcome.verdict, outcome.measured, outcome.expected, outcome.reason)
        ]
    if not isinstance(outcome, list) or not all(isinstance(r, GateResult) for r in outcome):
        what = type(outcome).__name__
        return [GateResult(name, FAIL, None, None, f"the gate returned a {what}, not a Verdict")]
    checked = []
    for result in outcome:
        if result.verdict not in (PASS, FAIL, SKIP):
            result = GateResult(
                result.gate,
                FAIL,
                result.measured,
                result.expected,
                f"the gate returned the verdict {result.verdict!r}, not PASS, FAIL or SKIP",
            )
        checked.append(
            GateResult(
                result.gate,
                result.verdict,
                result.measured,
                result.expected,
                _one_line(result.detail),
            )
        )
    return checked


def _metric_gate(gate: MetricGate, run: RunFacts) -> GateResult:
    name = f"metric:{gate.metric}"
    value = run.metrics.get(gate.metric)
    if value is None:
        logged = ", ".join(sorted(run.metrics)) or "none"
        return GateResult(
            name,
            FAIL,
            None,
            gate.expected,
            f"run {run.run_id} logged no metric {gate.metric!r} (logged: {logged})",
        )
    ok = _OPS[gate.op](value, gate.threshold)
    return GateResult(
        name,
        PASS if ok else FAIL,
        value,
        gate.expected,
        f"{gate.metric} = {value:g} {'meets' if ok else 'does not meet'} {gate.expected}",
    )


def _beat_champion(
    gate: BeatChampion, run: RunFacts, champion: tuple[str, RunFacts | None] | None
) -> GateResult:
    name = "beat_champion"
    value = run.metrics.get(gate.metric)
    if champion is None:
        return GateResult(name, SKIP, value, None, "no champion yet: nothing to beat")
    version, champ = champion
    if champ is None:
        return GateResult(
            name, SKIP, value, None, f"champion v{version} has no run to compare with"
        )
    theirs = champ.metrics.get(gate.metric)
    if theirs is None:
        return GateResult(
            name,
            SKIP,
            value,
            None,
            f"champion v{version} (run {champ.run_id}) logged no {gate.metric!r}",
        )
    sign = ">=" if gate.direction == "max" else "<="
    target = theirs + gate.min_delta if gate.direction == "max" else theirs - gate.min_delta
    expected = f"{sign} {target:g} (champion v{version} {gate.metric} = {theirs:g}, min_delta {gate.min_delta:g})"
    if value is None:
        return GateResult(
            name, FAIL, None, expected, f"run {run.run_id} logged no metric {gate.metric!r}"
        )
    # "beat" means strictly better when min_delta is 0, else at least min_delta better
    if gate.min_delta == 0:
        ok = value > theirs if gate.direction == "max" else value < theirs
        expected = f"{'>' if gate.direction == 'max' else '<'} {theirs:g} (champion v{version})"
    else:
        ok = value >= target if gate.direction == "max" else value <= target
    snapshot = _compare_snapshots(run, champ)
    if snapshot and gate.require_same_snapshot:
        return GateResult(
            name, FAIL, value, expected, snapshot + "; the gate requires the same snapshot"
        )
    detail = f"{gate.metric} = {value:g} {'beats' if ok else 'does not beat'} champion v{version} ({theirs:g})"
    detail += f"; {snapshot}" if snapshot else _same_note(run, champ)
    return GateResult(name, PASS if ok else FAIL, value, expected, detail)


def _eval_names(run: RunFacts, champ: RunFacts) -> set[str]:
    names = (run.eval_data | champ.eval_data) & (set(run.data) | set(champ.data))
    return names


def _compare_snapshots(run: RunFacts, champ: RunFacts) -> str:
    """A sentence naming the evaluation snapshots that differ, or "" when they are the same."""
    differ = [
        f"{name}: candidate {run.data.get(name, 'none')} vs champion {champ.data.get(name, 'none')}"
        for name in sorted(_eval_names(run, champ))
        if run.data.get(name) != champ.data.get(name)
    ]
    if differ:
        return (
            "evaluation snapshots differ ("
            + "; ".join(differ)
            + "), metrics are not on the same data"
        )
    return ""


def _same_note(run: RunFacts, champ: RunFacts) -> str:
    names = sorted(_eval_names(run, champ))
    if names:
        return "; same evaluation snapshot: " + ", ".join(f"{n} {run.data[n]}" for n in names)
    return "; no evaluation snapshot recorded for either run"


def _reproduced(run: RunFacts) -> GateResult:
    """The pipeline's reproduction check, as recorded on the run (`nb_mlops.reproduced`, and what
    was compared in `nb_mlops.reproduction`): which interactive run, at which parameters, the
    first metric that differs with both values, and the tolerance."""
    name = "require_reproduced"
    value = run.tags.get("nb_mlops.reproduced")
    if value is None:
        return GateResult(
            name,
            FAIL,
            None,
            "true",
            f"run {run.run_id} has no nb_mlops.reproduced tag: the notebook has no interactive "
            "tracked run to compare with; run its %%track cells, then the pipeline again",
        )
    ok = value.lower() == "true"
    try:
        report = json.loads(run.tags.get("nb_mlops.reproduction") or "{}")
    except ValueError:
        report = {}
    if not isinstance(report, dict) or not report:
        detail = (
            "the pipeline reproduced the interactive metrics"
            if ok
            else "the pipeline did not reproduce the interactive metrics"
        )
        return GateResult(name, PASS if ok else FAIL, value, "true", detail)
    ok = ok and report.get("matched") != "none"
    return GateResult(name, PASS if ok else FAIL, value, "true", _reproduction_detail(report, ok))


def _reproduction_detail(report: dict[str, Any], ok: bool) -> str:
    """What the reproduction report says: the parameters matched, the first differing metric."""
    params = report.get("parameters") or "no parameters"
    tolerance = f"rel {report.get('rel_tol', 0):g} + abs {report.get('abs_tol', 0):g}"
    if report.get("matched") == "none":
        last = report.get("last_interactive") or "-"
        return (
            f"no interactive run of the notebook used these parameter values ({params}); the "
            f"newest one used {last}: track the notebook with these values (or run the "
            "pipeline with the interactive ones), then promote"
        )
    against = f"interactive run {report.get('interactive_run_id')}"
    against += (
        f" (same parameters: {params})"
        if report.get("matched") == "same"
        else " (it recorded no parameters)"
    )
    if ok:
        return f"{report.get('compared', 0)} metric(s) agree with {against} within {tolerance}"
    got = report.get("pipeline")
    shown = "missing" if got is None else f"{got:g}"
    more = report.get("differing", 1) - 1
    return (
        f"{report.get('metric')}: pipeline {shown} vs interactive "
        f"{report.get('interactive', 0):g} ({against}), beyond the tolerance {tolerance}"
        + (f"; {more} more metric(s) differ" if more > 0 else "")
        + " (reproduction.json lists every metric)"
    )


def _data_verified(run: RunFacts, verify: DataVerifier | None) -> GateResult:
    name = "require_data_verified"
    versions = [f"{n}@{v.split(':', 1)[0]}" for n, v in sorted(run.data.items())]
    if not run.data:
        return GateResult(name, SKIP, [], "verified", "the run recorded no data snapshots")
    if verify is None:
        return GateResult(
            name,
            SKIP,
            versions,
            "verified",
            "data snapshots cannot be verified here (no verify available)",
        )
    problems = []
    for snapshot, tag in sorted(run.data.items()):
        problem = verify(snapshot, tag)
        if problem:
            problems.append(f"{snapshot}: {problem}")
    if problems:
        return GateResult(name, FAIL, versions, "verified", "; ".join(problems))
    return GateResult(
        name,
        PASS,
        versions,
        "verified",
        f"{len(versions)} snapshot(s) verified against their digests",
    )


# --- the registry ---------------------------------------------------------------------------------


class _BuiltIn:
    """A built-in gate: its settings checked by its `config_schema.GATE_KEYS` entry."""

    def __init__(self, name: str, check: Callable[[GateFacts, Any], list[GateResult]]) -> None:
        self._key = GATE_KEYS[name]
        self._check = check

    def validate(self, where: str, settings: Any) -> list[str]:
        return self._key.check(where, settings)

    def check(self, facts: GateFacts, settings: Any) -> Verdict | list[GateResult]:
        return self._check(facts, settings)


_BUILTINS: dict[str, Gate] = {
    "metrics": _BuiltIn(
        "metrics", lambda f, s: [_metric_gate(g, f.candidate) for g in _parse_metrics(s)]
    ),
    "beat_champion": _BuiltIn(
        "beat_champion", lambda f, s: [_beat_champion(_parse_beat(s), f.candidate, f.champion)]
    ),
    "require_reproduced": _BuiltIn("require_reproduced", lambda f, s: [_reproduced(f.candidate)]),
    "require_data_verified": _BuiltIn(
        "require_data_verified", lambda f, s: [_data_verified(f.candidate, f.verify)]
    ),
}
_REGISTRY: dict[str, Gate] = dict(_BUILTINS)
_LOCK = threading.Lock()
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


def register(name: str, gate: Gate) -> None:
    """Add a promotion gate, configured as `[tool.nb_mlops.gates] NAME = SETTINGS`.

    Packages may instead declare it in the `nb_mlops.gates` entry-point group (name = gate
    name, value = a `Gate` object or a class to instantiate); it is loaded when a gates table
    names it.

    Args:
        name: the gate's key in the gates table (lower case, digits and underscores).
        gate: an object with `validate(where, settings)` and `check(facts, settings)`.

    Raises:
        ValueError: a name that is not a key, or that of a built-in gate.

    Example:
        >>> class MaxSize:
        ...     def validate(self, where, settings):
        ...         return [] if isinstance(settings, int) else [f"{where} must be an integer"]
        ...     def check(self, facts, settings):
        ...         size = facts.candidate.metrics.get("model_mb")
        ...         ok = size is not None and size <= settings
        ...         return Verdict(PASS if ok else FAIL, f"model_mb = {size}", size, f"<= {settings}")
        >>> register("max_size", MaxSize())  # doctest: +SKIP
    """
    if not _NAME.match(name):
        raise ValueError(f"gate name {name!r} must be lower case letters, digits and underscores")
    if name in _BUILTINS:
        raise ValueError(f"{name!r} is a built-in gate; give the new gate another name")
    for method in ("validate", "check"):
        if not callable(getattr(gate, method, None)):
            raise ValueError(f"gate {name!r} has no {method}() method (see the Gate protocol)")
    with _LOCK:
        _REGISTRY[name] = gate


def gate(name: str) -> Gate:
    """The gate `name`: registered, or loaded from its `nb_mlops.gates` entry point (then
    registered). The one resolver every gate lookup goes through.

    Raises:
        KeyError: no gate of that name is registered or installed.
        PluginError: the plugin declaring it failed to load, or is not a gate.
    """
    found = _REGISTRY.get(name)
    if found is not None:
        return found
    loaded = plugins.load(plugins.GATES, name)  # KeyError when no plugin has that name
    try:
        made: Gate = loaded() if isinstance(loaded, type) else loaded
        register(name, made)
    except Exception as exc:
        raise PluginError(
            f"plugin {name!r} of entry-point group {plugins.GATES} is not a gate: {exc}"
        ) from exc
    return made


def known_gates() -> list[str]:
    """The gate names a gates table may use: built-in, registered, and installed plugins'."""
    with _LOCK:
        names = list(_REGISTRY)
    return names + sorted(set(plugins.entry_points(plugins.GATES)) - set(names))


def table_problems(where: str, table: Mapping[str, Any]) -> list[str]:
    """Check a gates table: each key must name a known gate, whose validator checks its settings.

    Args:
        where: how the table is addressed, e.g. `tool.nb_mlops.gates`.
        table: the gates table.

    Returns:
        One line per problem: an unknown gate (with the known ones or a guess), a plugin that
        cannot be loaded, or a problem its validator found.
    """
    found: list[str] = []
    for key, settings in table.items():
        name = str(key)
        try:
            checker = gate(name)
        except KeyError:
            found.append(unknown_key(where, name, settings, known_gates(), "gate"))
            continue
        except PluginError as exc:
            found.append(f"{where}.{name}: {exc}")
            continue
        try:
            found += list(checker.validate(f"{where}.{name}", settings))
        except Exception as exc:  # a validator that breaks must not let its settings through
            found.append(f"{where}.{name}: the gate's validator raised {type(exc).__name__}: {exc}")
    return found
