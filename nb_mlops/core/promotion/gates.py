"""Promotion gates: parse `[tool.nb_mlops.gates]` and judge a candidate run against it.

Gates are pure functions of what the store recorded (metrics, tags, data versions) for the candidate
and the current champion; each gives PASS, FAIL or SKIP with the values it compared.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from nb_mlops.core.config_schema import GATE_TABLE, THRESHOLD
from nb_mlops.core.errors import ConfigError

__all__ = [
    "BeatChampion",
    "GateResult",
    "GateSpec",
    "MetricGate",
    "RunFacts",
    "evaluate_gates",
    "format_value",
    "parse_gates",
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
    """The parsed gates table."""

    metrics: tuple[MetricGate, ...] = ()
    beat_champion: BeatChampion | None = None
    require_reproduced: bool = False
    require_data_verified: bool = False

    @property
    def empty(self) -> bool:
        return not (
            self.metrics
            or self.beat_champion
            or self.require_reproduced
            or self.require_data_verified
        )


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
        ConfigError: an unknown key, a bad operator or threshold, a wrong type (names the gate).

    Example:
        >>> parse_gates({"metrics": {"accuracy": ">= 0.9"}}).metrics[0].expected
        '>= 0.9'
    """
    table = {} if table is None else table
    problems = GATE_TABLE.check("gates", table)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    metrics = []
    for name, spec in table.get("metrics", {}).items():
        match = THRESHOLD.match(spec)
        assert match is not None  # checked above
        metrics.append(MetricGate(str(name), match.group(1), float(match.group(2))))
    beat = table.get("beat_champion")
    return GateSpec(
        metrics=tuple(metrics),
        beat_champion=_parse_beat(beat) if beat not in (None, False) else None,
        require_reproduced=bool(table.get("require_reproduced", False)),
        require_data_verified=bool(table.get("require_data_verified", False)),
    )


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

DataVerifier = Callable[[str, str], str | None]
"""`verify(name, "vN:<digest>")` → None when the stored version is intact, else what is wrong."""


def evaluate_gates(
    spec: GateSpec,
    candidate: RunFacts,
    champion: tuple[str, RunFacts | None] | None = None,
    verify: DataVerifier | None = None,
) -> list[GateResult]:
    """Judge `candidate` against every configured gate, in table order.

    Args:
        spec: the parsed gates.
        candidate: facts of the candidate pipeline run.
        champion: (version, facts of its run or None) of the current champion, or None.
        verify: checks one stored data version; None when data snapshots cannot be verified here.

    Returns:
        One result per gate (metrics first, then beat_champion, reproduced, data).
    """
    results = [_metric_gate(gate, candidate) for gate in spec.metrics]
    if spec.beat_champion is not None:
        results.append(_beat_champion(spec.beat_champion, candidate, champion))
    if spec.require_reproduced:
        results.append(_reproduced(candidate))
    if spec.require_data_verified:
        results.append(_data_verified(candidate, verify))
    return results


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
    params = report.get("parameters") or "no parameters"
    tolerance = f"rel {report.get('rel_tol', 0):g} + abs {report.get('abs_tol', 0):g}"
    if report.get("matched") == "none":
        last = report.get("last_interactive") or "-"
        return GateResult(
            name,
            FAIL,
            value,
            "true",
            f"no interactive run of the notebook used these parameter values ({params}); the "
            f"newest one used {last}: track the notebook with these values (or run the "
            "pipeline with the interactive ones), then promote",
        )
    against = f"interactive run {report.get('interactive_run_id')}"
    against += (
        f" (same parameters: {params})"
        if report.get("matched") == "same"
        else " (it recorded no parameters)"
    )
    if ok:
        detail = f"{report.get('compared', 0)} metric(s) agree with {against} within {tolerance}"
        return GateResult(name, PASS, value, "true", detail)
    metric = report.get("metric")
    got = report.get("pipeline")
    shown = "missing" if got is None else f"{got:g}"
    more = report.get("differing", 1) - 1
    detail = (
        f"{metric}: pipeline {shown} vs interactive {report.get('interactive', 0):g} "
        f"({against}), beyond the tolerance {tolerance}"
        + (f"; {more} more metric(s) differ" if more > 0 else "")
        + " (reproduction.json lists every metric)"
    )
    return GateResult(name, FAIL, value, "true", detail)


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
