"""The acts a monitoring policy takes: retrain, promote the retrained run through the gates, roll
back. Every face and every policy goes through these three functions.

`retrain` runs the pipeline layer's retrainer, named by `RETRAINER` and imported only when a policy
retrains (the core package never imports the pipeline package, which needs papermill); `promote`
and `rollback` are the promotion module's own operations, so gates, lock and journal apply as for a
click.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from nb_mlops.core.config import Config
from nb_mlops.core.errors import MonitorError, NbMlopsError

__all__ = ["RETRAINER", "RetrainOutcome", "promote_retrained", "retrain", "rollback_champion"]

RETRAINER = "nb_mlops.pipeline.retrain:retrain"


@dataclass
class RetrainOutcome:
    """A retraining run.

    Attributes:
        run_id: its MLflow pipeline run.
        status: SUCCEEDED or FAILED (the runner's words).
        error: the first step error, when it failed.
        repointed: its data inputs were pointed at the new data (else it read them as written).
    """

    run_id: str | None
    status: str
    error: str | None = None
    repointed: bool = False

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _retrainer() -> Callable[..., dict[str, Any]]:
    module, _, name = RETRAINER.partition(":")
    try:
        found: Callable[..., dict[str, Any]] = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise MonitorError(
            f"cannot load the retrainer {RETRAINER} ({exc}); install nb_mlops with its pipeline extra"
        ) from exc
    return found


def retrain(
    model: str,
    data: str,
    *,
    reference: str | None = None,
    trigger: str | None,
    reason: str,
    cfg: Config,
) -> RetrainOutcome:
    """Run `model`'s production pipeline on `data`, linked to the check `trigger`.

    Args:
        data: `NAME@vN` of the new data.
        reference: `NAME@vN` of the champion's training data (the input `data` replaces);
            default: the training snapshot its lineage names (as a check finds it), so a retrain
            asked for by hand (JupyterLab's Retrain now) re-points the same input a policy would.

    Raises:
        NbMlopsError: the pipeline cannot be fetched or started (a failed run does not raise).
    """
    if reference is None:
        reference = _training_reference(model, data, cfg)
    found = _retrainer()(model, data, reference=reference, trigger=trigger, reason=reason, cfg=cfg)
    return RetrainOutcome(
        run_id=found.get("run_id"),
        status=str(found.get("status")),
        error=found.get("error"),
        repointed=bool(found.get("repointed")),
    )


def _training_reference(model: str, data: str, cfg: Config) -> str | None:
    """The champion's training snapshot, or None when its lineage names none (the retrainer then
    pins `data`'s own name)."""
    from nb_mlops.core.data.names import parse_ref
    from nb_mlops.core.monitoring import models
    from nb_mlops.core.monitoring.check import training_reference

    try:
        version = models.resolve(model, cfg=cfg)
        return training_reference(version, parse_ref(data)[0], cfg=cfg)
    except NbMlopsError:  # no champion, no recorded data: the retrainer says what is missing
        return None


def promote_retrained(model: str, run_id: str, *, reason: str, cfg: Config) -> Any:
    """Promote a retrained run through the gates (never forced).

    Returns:
        The promotion `Decision`.

    Raises:
        PromotionBlocked: a gate failed (journaled by promotion; the champion stays).
    """
    from nb_mlops.core.promotion import promote

    return promote(run_id, model=model, reason=reason, cfg=cfg, announce=False)


def rollback_champion(model: str, *, to: str | None, reason: str, cfg: Config) -> Any:
    """Move `champion` back (to `to`, or to the version it replaced), journaled with `reason`."""
    from nb_mlops.core.promotion import rollback

    return rollback(model, to=to, reason=reason, cfg=cfg, announce=False)
