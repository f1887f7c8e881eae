"""Performance decay: the champion's metrics on new labelled data against those it was promoted on.

The promoted metrics are the pipeline run's (found through lineage). Each one whose name is known
(`accuracy`, `f1`, `log_loss`, `rmse`, ... with prefixes like `test_` or `eval_` and a `_score`
suffix allowed) is recomputed with scikit-learn on the labels; a metric decays when it is worse by
more than `decay` (relative). Metrics of the training data (`training_*`) are compared only when the
run logged no other metric of that name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["DecayReport", "MetricDecay", "compare", "metric_values"]

_PREFIX = re.compile(r"^(test|eval|val|validation|holdout|training|train)[_.]")
_ALIASES = {
    "auc": "roc_auc",
    "roc_auc_score": "roc_auc",
    "mean_squared_error": "mse",
    "root_mean_squared_error": "rmse",
    "mean_absolute_error": "mae",
    "logloss": "log_loss",
    "f1_score": "f1",
    "precision_score": "precision",
    "recall_score": "recall",
    "accuracy_score": "accuracy",
    "r2_score": "r2",
    "balanced_accuracy_score": "balanced_accuracy",
}
LOWER_IS_BETTER = {"log_loss", "mse", "rmse", "mae"}


@dataclass
class MetricDecay:
    """One metric: as promoted and as measured now.

    Attributes:
        metric: the normalised name (`accuracy`, `rmse`, ...).
        promoted_as: the name the pipeline run logged it under.
        promoted: its value at promotion.
        current: its value on the new labelled data.
        worsening: relative worsening (0.1 = 10 % worse; negative = better).
        decayed: worsening > the configured `decay`.
    """

    metric: str
    promoted_as: str
    promoted: float
    current: float
    worsening: float
    decayed: bool


@dataclass
class DecayReport:
    """The champion's decay on a labelled version.

    Attributes:
        data: `NAME@vN` of the labelled data.
        labels: the label column (or `NAME@vN:COLUMN` when the labels came from another version).
        rows: labelled rows scored.
        metrics: every metric compared.
        skipped: metric names that could not be recomputed, with why.
        threshold: the configured `decay`.
        decayed: any metric decayed.
        worst: the largest worsening (0 when nothing was compared).
    """

    data: str
    labels: str
    rows: int
    metrics: list[MetricDecay] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    threshold: float = 0.05

    @property
    def decayed(self) -> bool:
        return any(m.decayed for m in self.metrics)

    @property
    def worst(self) -> float:
        return max((m.worsening for m in self.metrics), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["decayed"], out["worst"] = self.decayed, self.worst
        return out

    def summary(self) -> str:
        if not self.metrics:
            return f"decay not measured on {self.data}: no promoted metric could be recomputed"
        shown = ", ".join(
            f"{m.metric} {m.promoted:.4g} → {m.current:.4g}" for m in self.metrics[:4]
        )
        word = "DECAY" if self.decayed else "no decay"
        return f"{word} on {self.data} ({self.rows} labelled rows): {shown}"


def normalise(name: str) -> str:
    """`test_accuracy_score` → `accuracy`; unknown names come back lower-cased."""
    base = _PREFIX.sub("", name.lower())
    base = _ALIASES.get(base, base)
    if base.endswith("_score") and base[: -len("_score")] in _METRICS:
        base = base[: -len("_score")]
    return base


def _average(fn: Callable[..., float]) -> Callable[..., float]:
    """A precision/recall/F1 over two classes as sklearn's binary score, else weighted."""

    def score(y: Any, pred: Any, proba: Any) -> float:
        try:
            return float(fn(y, pred, average="binary"))
        except ValueError:
            return float(fn(y, pred, average="weighted"))

    return score


def _metrics() -> dict[str, tuple[Callable[[Any, Any, Any], float], bool]]:
    from sklearn import metrics as m

    def proba_needed(fn: Callable[..., float]) -> Callable[[Any, Any, Any], float]:
        def score(y: Any, pred: Any, proba: Any) -> float:
            if proba is None:
                raise ValueError("the model gives no class probabilities")
            if proba.ndim == 2 and proba.shape[1] == 2 and fn is m.roc_auc_score:
                return float(fn(y, proba[:, 1]))
            if fn is m.roc_auc_score:
                return float(fn(y, proba, multi_class="ovr"))
            return float(fn(y, proba))

        return score

    return {
        "accuracy": (lambda y, p, _: float(m.accuracy_score(y, p)), False),
        "balanced_accuracy": (lambda y, p, _: float(m.balanced_accuracy_score(y, p)), False),
        "f1": (_average(m.f1_score), False),
        "precision": (_average(m.precision_score), False),
        "recall": (_average(m.recall_score), False),
        "roc_auc": (proba_needed(m.roc_auc_score), True),
        "log_loss": (proba_needed(m.log_loss), True),
        "mse": (lambda y, p, _: float(m.mean_squared_error(y, p)), False),
        "rmse": (lambda y, p, _: math.sqrt(float(m.mean_squared_error(y, p))), False),
        "mae": (lambda y, p, _: float(m.mean_absolute_error(y, p)), False),
        "r2": (lambda y, p, _: float(m.r2_score(y, p)), False),
    }


_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "f1",
    "precision",
    "recall",
    "roc_auc",
    "log_loss",
    "mse",
    "rmse",
    "mae",
    "r2",
)


def promoted_metrics(
    logged: Mapping[str, float], only: tuple[str, ...] = ()
) -> dict[str, tuple[str, float]]:
    """normalised name → (logged name, value) of the metrics decay can recompute."""
    chosen: dict[str, tuple[str, float]] = {}
    for name, value in sorted(logged.items()):
        metric = normalise(name)
        if metric not in _METRICS or (only and metric not in only and name not in only):
            continue
        training = name.lower().startswith(("training_", "train_"))
        held = chosen.get(metric)
        if held is None or (held[0].lower().startswith(("training_", "train_")) and not training):
            chosen[metric] = (name, float(value))
    return chosen


def metric_values(
    wanted: list[str], y: Any, predictions: Any, proba: Any
) -> tuple[dict[str, float], dict[str, str]]:
    """Recompute `wanted` metrics; (values, metric → why it was skipped)."""
    import numpy as np

    table = _metrics()
    pred = np.asarray(predictions)
    if pred.ndim == 2 and pred.shape[1] == 1:
        pred = pred[:, 0]
    values: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for metric in wanted:
        fn, _ = table[metric]
        try:
            values[metric] = fn(y, pred, proba)
        except (ValueError, TypeError) as exc:
            skipped[metric] = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return values, skipped


def worsening(metric: str, promoted: float, current: float) -> float:
    """Relative worsening of `current` against `promoted` (negative when it is better)."""
    change = (current - promoted) if metric in LOWER_IS_BETTER else (promoted - current)
    scale = abs(promoted) if promoted else 1.0
    return change / scale


def compare(
    promoted: Mapping[str, tuple[str, float]],
    current: Mapping[str, float],
    threshold: float,
) -> list[MetricDecay]:
    """One `MetricDecay` per metric measured on both sides."""
    out = []
    for metric, (name, before) in promoted.items():
        if metric not in current:
            continue
        now = current[metric]
        worse = worsening(metric, before, now)
        out.append(MetricDecay(metric, name, before, now, worse, worse > threshold))
    return out
