"""A monitoring check: drift of new data against the champion's training data, decay of the
champion on labelled data, an MLflow run with the findings, and the policy's actions.

The reference is the training snapshot of the champion's pipeline run (found through lineage);
the features compared are the model's signature inputs when it has one, else every column but the
label and `ignore`. Each check is an MLflow run (`nb_mlops.mode=monitor`) with per-feature metrics, the verdict tag
`nb_mlops.monitor.verdict` (ok | drift | decay) and an HTML report artifact; it is journaled in the
model's monitoring journal with the actions its policy decided, then with their outcomes.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nb_mlops.core.config import Config, load_config
from nb_mlops.core.data.names import format_ref, parse_ref
from nb_mlops.core.errors import DataError, MonitorError
from nb_mlops.core.monitoring import decay as decay_stats
from nb_mlops.core.monitoring import history, models, policy, report
from nb_mlops.core.monitoring.drift import DriftReport, drift, resolve_manifest
from nb_mlops.core.monitoring.policy import Action, PreviousChampion
from nb_mlops.core.monitoring.settings import MonitorSettings, parse_settings

__all__ = ["EXIT_CODES", "MonitorResult", "monitor", "training_reference"]

EXIT_CODES = {"ok": 0, "drift": 3, "decay": 4}
_METRIC_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


@dataclass
class MonitorResult:
    """The outcome of one check.

    Attributes:
        model: registered model name.
        version: the champion version checked.
        verdict: "decay" (metrics worse than at promotion), "drift" (the data moved), or "ok".
        data: `NAME@vN` of the checked data.
        reference: `NAME@vN` of the reference (the champion's training data).
        drift: the drift report.
        decay: the decay report (None without labels).
        run_id: the check's MLflow run.
        report_uri: the HTML report artifact.
        actions: what the policy decided, with outcomes (planned only when `act=False`).
        labels: the label column used, or None.
        seconds: time the check took.
    """

    model: str
    version: str
    verdict: str
    data: str
    reference: str
    drift: DriftReport
    decay: decay_stats.DecayReport | None = None
    run_id: str | None = None
    report_uri: str | None = None
    actions: list[Action] = field(default_factory=list)
    labels: str | None = None
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 no drift, 3 drift, 4 decay (what `nb-mlops monitor` exits with)."""
        return EXIT_CODES[self.verdict]

    def summary(self) -> str:
        """One line: the verdict and its reasons."""
        parts = [f"{self.verdict.upper()}: {self.model} v{self.version} on {self.data}"]
        d = self.drift
        compared = sum(1 for f in d.features if f.schema != "new")
        parts.append(f"{len(d.drifted)}/{compared} features drifted ({d.share:.0%})")
        if self.decay is not None and self.decay.metrics:
            worst = max(self.decay.metrics, key=lambda m: m.worsening)
            parts.append(f"{worst.metric} {worst.promoted:.4g} → {worst.current:.4g}")
        return "; ".join(parts)

    def text(self) -> str:
        return report.text(self)

    def html(self) -> str:
        return report.html_fragment(self)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "data": self.data,
            "reference": self.reference,
            "labels": self.labels,
            "run_id": self.run_id,
            "report_uri": self.report_uri,
            "seconds": round(self.seconds, 3),
            "drift": self.drift.as_dict(),
            "decay": self.decay.as_dict() if self.decay is not None else None,
            "actions": [a.as_dict() for a in self.actions],
        }

    def _repr_mimebundle_(self, **_kwargs: Any) -> dict[str, Any]:
        return {"text/plain": self.text(), "text/html": self.html()}


def training_reference(version: models.ModelVersion, data_name: str, *, cfg: Config) -> str:
    """`NAME@vN` of the training snapshot of a model version's pipeline run.

    Among the run's data versions that were not evaluation data: the one with the checked data's
    name, else the only one, else the one snapshotted with context "train".

    Raises:
        MonitorError: the run recorded no data, or the stored version changed since.
    """
    from nb_mlops.core.data.refs import open_store
    from nb_mlops.core.lineage import lineage

    found = lineage(version.ref, cfg=cfg).data
    candidates = [d for d in found if not d["eval"]] or list(found)
    if not candidates:
        raise MonitorError(
            f"{version.ref}'s pipeline run recorded no data snapshot, so there is no training data to "
            "compare with; pass the reference yourself (reference='NAME@vN', --reference NAME@vN)"
        )
    store = open_store(cfg)
    chosen = next((d for d in candidates if d["name"] == data_name), None)
    if chosen is None and len(candidates) > 1:
        trained = []
        for d in candidates:
            name, number = parse_ref(d["ref"])
            try:
                if store.manifest(name, number).get("context") == "train":
                    trained.append(d)
            except DataError:
                continue
        chosen = trained[0] if trained else None
        if chosen is None:
            names = ", ".join(d["ref"] for d in candidates)
            raise MonitorError(
                f"{version.ref} was trained on several snapshots ({names}) and none is marked "
                "context='train'; pass the reference (reference='NAME@vN', --reference NAME@vN)"
            )
    chosen = chosen or candidates[0]
    name, number = parse_ref(chosen["ref"])
    manifest = store.manifest(name, number)
    if chosen["digest"] and manifest.get("digest") != chosen["digest"]:
        raise MonitorError(
            f"{chosen['ref']} is stored with digest {str(manifest.get('digest'))[:12]}…, but "
            f"{version.ref}'s run recorded {chosen['digest'][:12]}…; the store changed after training"
        )
    return str(chosen["ref"])


def _labels(label: str, frame: Any, cfg: Config) -> tuple[Any, str]:
    """(label values aligned with `frame`, the label column), from `frame` or `NAME@vN:COLUMN`."""
    if ":" in label:
        ref, _, column = label.rpartition(":")
        from nb_mlops.core.data import restore

        other = restore(ref, cfg=cfg)
        if column not in getattr(other, "columns", []):
            raise DataError(f"labels {label!r}: {ref} has no column {column!r}")
        return other[column].reindex(frame.index), column
    if label not in frame.columns:
        raise DataError(
            f"labels {label!r}: the data has no such column (columns: "
            f"{', '.join(map(str, list(frame.columns)[:12]))}); name the label column"
        )
    return frame[label], label


def _score_metrics(
    loaded: models.LoadedModel, frame: Any, y: Any, label: str, wanted: list[str]
) -> tuple[dict[str, float], dict[str, str]]:
    x = models.features(loaded, frame, drop=(label,))
    predictions = models.predict(loaded, x)
    proba = None
    if {"roc_auc", "log_loss"} & set(wanted):
        raw = loaded.raw
        if raw is not None and hasattr(raw, "predict_proba"):
            try:
                proba = raw.predict_proba(x)
            except Exception:  # noqa: BLE001 - then the probability metrics are skipped
                proba = None
    return decay_stats.metric_values(wanted, y, predictions, proba)


def _decay(
    version: models.ModelVersion,
    data: str,
    label: str,
    settings: MonitorSettings,
    cfg: Config,
) -> tuple[decay_stats.DecayReport, PreviousChampion | None]:
    from nb_mlops.core.data import restore
    from nb_mlops.core.lineage import lineage

    frame = restore(data, cfg=cfg)
    y, column = _labels(label, frame, cfg)
    known = y.notna().to_numpy()
    frame, y = frame[known], y[known]
    promoted = decay_stats.promoted_metrics(
        lineage(version.ref, cfg=cfg).metrics, settings.decay_metrics
    )
    result = decay_stats.DecayReport(data=data, labels=label, rows=len(y), threshold=settings.decay)
    if not promoted or not len(y):
        return result, None
    loaded = models.load(version, cfg=cfg)
    current, result.skipped = _score_metrics(loaded, frame, y, column, list(promoted))
    result.metrics = decay_stats.compare(promoted, current, settings.decay)
    previous = None
    policy_ = settings.policy
    if policy_.auto_rollback and result.decayed and result.worst > policy_.rollback_decay:
        previous = _previous(version, frame, y, column, result, cfg)
    return result, previous


def _previous(
    version: models.ModelVersion,
    frame: Any,
    y: Any,
    column: str,
    found: decay_stats.DecayReport,
    cfg: Config,
) -> PreviousChampion | None:
    """The previous champion's score on the metric that decayed most, on the same data."""
    from nb_mlops.core.errors import PromotionError
    from nb_mlops.core.promotion.registry import PREVIOUS

    try:
        before = models.resolve(f"{version.name}@{PREVIOUS}", cfg=cfg)
    except PromotionError:
        return None
    if before.version == version.version:
        return None
    worst = max(found.metrics, key=lambda m: m.worsening)
    values, _ = _score_metrics(models.load(before, cfg=cfg), frame, y, column, [worst.metric])
    if worst.metric not in values:
        return None
    theirs = values[worst.metric]
    better = decay_stats.worsening(worst.metric, worst.current, theirs) < 0
    return PreviousChampion(before.version, worst.metric, worst.current, theirs, better)


def _metric_key(*parts: str) -> str:
    return _METRIC_KEY.sub("_", ".".join(parts))[:250]


def _record(run: Any, result: MonitorResult) -> None:
    """Per-feature metrics and the findings' tags on the check's run."""
    metrics: dict[str, float] = {
        "drift.share": result.drift.share,
        "drift.features": float(len(result.drift.drifted)),
    }
    for f in result.drift.features:
        for name, value in f.stats.items():
            if value is not None and name != "new_share":
                metrics[_metric_key("drift", f.name, name)] = float(value)
        metrics[_metric_key("drift", f.name, "drifted")] = float(f.drifted)
    if result.decay is not None:
        metrics["decay.worst"] = result.decay.worst
        for m in result.decay.metrics:
            metrics[_metric_key("decay", m.metric, "current")] = m.current
            metrics[_metric_key("decay", m.metric, "promoted")] = m.promoted
            metrics[_metric_key("decay", m.metric, "worsening")] = m.worsening
    run.log(step=0, **metrics)
    run.set_tag("nb_mlops.monitor.verdict", result.verdict)
    run.set_tag("nb_mlops.monitor.drifted", ",".join(result.drift.drifted)[:4000])
    run.set_tag("nb_mlops.monitor.summary", result.summary()[:4000])


def _attach_report(run: Any, result: MonitorResult, cfg: Config) -> str | None:
    from nb_mlops.core import store

    with tempfile.TemporaryDirectory(prefix="nb_mlops-check-") as tmp:
        path = Path(tmp) / "report.html"
        path.write_text(report.html_report(result), encoding="utf-8")
        (Path(tmp) / "drift.json").write_text(
            json.dumps(result.as_dict(), default=str, indent=1), encoding="utf-8"
        )
        client = store.client(cfg)
        client.log_artifact(run.run_id, str(path), "monitor")
        client.log_artifact(run.run_id, str(Path(tmp) / "drift.json"), "monitor")
    return f"{run.artifact_uri.rstrip('/')}/monitor/report.html"


def monitor(
    model: str,
    data: str,
    *,
    labels: str | None = None,
    exact: bool = False,
    reference: str | None = None,
    act: bool = True,
    cfg: Config | None = None,
) -> MonitorResult:
    """Check a model's champion against new data: drift, decay with labels, and the policy.

    Args:
        model: `NAME` (its champion), `NAME@ALIAS` or `NAME/VERSION`.
        data: `NAME[@vN]` of a DataFrame snapshot (latest version by default).
        labels: the label column in `data`, or `NAME@vN:COLUMN` of another snapshot (aligned on
            the index); default: `label` in `[tool.nb_mlops.monitor]`, when `data` has it.
        exact: compute drift from every row instead of the snapshot sketches.
        reference: `NAME@vN` to compare with (default: the champion's training snapshot).
        act: carry out the policy's actions (alerts, rollback, retrain); False only decides.
        cfg: project configuration.

    Returns:
        The result; `result.exit_code` is 0 (ok), 3 (drift) or 4 (decay).

    Raises:
        NbMlopsError: an unknown model or snapshot, bad configuration, a model that cannot load.

    Example:
        >>> result = nb_mlops.monitor("churn", data="batch@v3")  # doctest: +SKIP
        >>> result.verdict, result.drift.drifted                 # doctest: +SKIP
        ('drift', ['income', 'region'])
    """
    from nb_mlops.core.data import pending
    from nb_mlops.core.data.refs import open_store
    from nb_mlops.core.tracking import flush, track

    started = time.perf_counter()
    cfg = cfg or load_config()
    settings = parse_settings(cfg.settings.get("monitor"))
    version = models.resolve(model, cfg=cfg)
    pending.wait_all()
    manifest = resolve_manifest(open_store(cfg), data)
    current = format_ref(manifest["name"], manifest["version"])
    ref = reference or training_reference(version, manifest["name"], cfg=cfg)
    label = labels or settings.label
    if labels is None and label and ":" not in label and label not in manifest["columns"]:
        label = None  # the configured label is not in this batch: drift only
    tags = _check_tags(version, f"{current}:{manifest['digest']}", ref, label)
    with track(name=f"monitor-{version.name}-v{version.version}", autolog=False, tags=tags) as run:
        result = _findings(version, ref, current, label, exact, settings, cfg, run.run_id)
        _record(run, result)
        result.report_uri = _attach_report(run, result, cfg)
    flush()
    _journal(result, act, cfg)
    if act and result.actions:
        result.actions = policy.carry_out(result.actions, _context(result), settings, cfg=cfg)
    result.seconds = time.perf_counter() - started
    return result


def _check_tags(
    version: models.ModelVersion, data: str, reference: str, label: str | None
) -> dict[str, str]:
    tags = {
        "nb_mlops.mode": "monitor",
        "nb_mlops.monitor.model": version.name,
        "nb_mlops.monitor.version": version.version,
        "nb_mlops.monitor.data": data,
        "nb_mlops.monitor.reference": reference,
    }
    if label:
        tags["nb_mlops.monitor.labels"] = label
    return tags


def _findings(
    version: models.ModelVersion,
    reference: str,
    current: str,
    label: str | None,
    exact: bool,
    settings: MonitorSettings,
    cfg: Config,
    run_id: str,
) -> MonitorResult:
    """Drift, decay (with labels), the verdict and the actions the policy plans."""
    label_column = label.rpartition(":")[2] if label else None
    found = drift(
        reference,
        current,
        exact=exact,
        exclude=[label_column] if label_column else [],
        columns=models.signature_inputs(version),
        settings=settings,
        cfg=cfg,
    )
    decayed, previous = _decay(version, current, label, settings, cfg) if label else (None, None)
    is_decayed = decayed is not None and decayed.decayed
    result = MonitorResult(
        model=version.name,
        version=version.version,
        verdict="decay" if is_decayed else found.verdict,
        data=current,
        reference=found.reference,
        drift=found,
        decay=decayed,
        run_id=run_id,
        labels=label,
    )
    result.actions = policy.decide(
        drifted=found.verdict == "drift",
        decayed=is_decayed,
        worst_decay=decayed.worst if decayed is not None else 0.0,
        previous=previous,
        settings=settings,
        check=run_id,
    )
    return result


def _journal(result: MonitorResult, act: bool, cfg: Config) -> None:
    """The check's record in the model's monitoring journal, before any action runs."""
    history.append(
        cfg,
        result.model,
        {
            "record": "check",
            "id": result.run_id,
            "version": result.version,
            "verdict": result.verdict,
            "data": result.data,
            "reference": result.reference,
            "drifted": result.drift.drifted,
            "share": result.drift.share,
            "decay": result.decay.as_dict() if result.decay is not None else None,
            "actions": [a.as_dict() for a in result.actions],
            "acted": act,
        },
    )


def _context(result: MonitorResult) -> policy.Context:
    found = result.drift
    return policy.Context(
        model=result.model,
        version=result.version,
        check_id=str(result.run_id),
        data=result.data,
        summary=result.summary(),
        reference=found.reference,
        facts={
            "verdict": result.verdict,
            "reference": found.reference,
            "drifted": ", ".join(found.drifted),
            "share": round(found.share, 4),
        },
    )
