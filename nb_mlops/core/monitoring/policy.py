"""Monitoring policies: decide what a check's findings call for, then do it and journal each act.

`decide` is pure: from the drift and decay found, the previous champion's score on the same
labelled data and `[tool.nb_mlops.monitor.policy]`, the list of actions (alert, rollback, retrain).
`carry_out` performs them in order — rollback first, then retrain (promoted through the gates when
`auto_promote`), alerts for what happened — records each outcome in the monitoring journal and
never raises for a failed act: the outcome says what failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from nb_mlops.core.config import Config
from nb_mlops.core.errors import NbMlopsError
from nb_mlops.core.monitoring import actions as acts
from nb_mlops.core.monitoring import alerts, history
from nb_mlops.core.monitoring.settings import MonitorSettings

__all__ = ["Action", "Context", "PreviousChampion", "carry_out", "decide"]


@dataclass
class PreviousChampion:
    """The champion before the current one, scored on the same labelled data.

    Attributes:
        version: its version.
        metric: the metric compared (the one that decayed most).
        current: the champion's value of it.
        previous: the previous champion's value.
        better: the previous champion scored better.
    """

    version: str
    metric: str
    current: float
    previous: float
    better: bool


@dataclass
class Action:
    """One act of a policy.

    Attributes:
        name: alert | rollback | retrain | promote.
        reason: why, naming the policy key and the check.
        event: the alert's event (alerts only).
        status: planned | done | failed | blocked (a promotion the gates refused) | pending (a
            promotion request waiting for an approver).
        detail: what happened, one line.
        run_id: the retraining run (retrain, promote).
        version: the champion after a rollback or promotion.
        deliveries: webhook outcomes (alerts).
    """

    name: str
    reason: str
    event: str | None = None
    status: str = "planned"
    detail: str = ""
    run_id: str | None = None
    version: str | None = None
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    to: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Context:
    """What the acts need to know about the check.

    Attributes:
        model: registered model name.
        version: the champion version checked.
        check_id: the check's MLflow run id.
        data: `NAME@vN` of the checked data.
        summary: the check's one-line summary.
        reference: `NAME@vN` of the reference (the champion's training data).
        facts: JSON-ready facts sent with every alert (verdict, drifted features, ...).
    """

    model: str
    version: str
    check_id: str
    data: str
    summary: str
    facts: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None


def _wants(settings: MonitorSettings, event: str) -> bool:
    return any(event in hook.events for hook in settings.alerts.webhooks)


def decide(
    *,
    drifted: bool,
    decayed: bool,
    worst_decay: float,
    previous: PreviousChampion | None,
    settings: MonitorSettings,
    check: str,
) -> list[Action]:
    """The actions the policy calls for (in the order they are carried out).

    Args:
        drifted: the check's data drifted.
        decayed: the champion's metrics decayed.
        worst_decay: the largest relative worsening measured.
        previous: the previous champion's score on the same data (auto rollback needs it).
        settings: the monitor settings (policy and webhooks).
        check: the check's id, quoted in reasons.
    """
    policy = settings.policy
    planned: list[Action] = []
    retrain_reason = None
    for found, event, key, chosen in (
        (drifted, "drift", "on_drift", policy.on_drift),
        (decayed, "decay", "on_decay", policy.on_decay),
    ):
        if not found or chosen == "none":
            continue
        reason = f"policy {key} = {chosen}: check {check} found {event}"
        if _wants(settings, event):
            planned.append(Action("alert", reason, event=event))
        if chosen == "retrain" and retrain_reason is None:
            retrain_reason = reason
    if (
        decayed
        and policy.auto_rollback
        and previous is not None
        and previous.better
        and worst_decay > policy.rollback_decay
    ):
        planned.insert(
            0,
            Action(
                "rollback",
                f"policy auto_rollback: check {check} found {previous.metric} "
                f"{previous.current:.4g} (decay {worst_decay:.1%} > {policy.rollback_decay:.1%}); "
                f"version {previous.version} scores {previous.previous:.4g} on the same data",
                to=previous.version,
            ),
        )
    if retrain_reason is not None:
        planned.append(Action("retrain", retrain_reason))
    return planned


def _alert(
    ctx: Context, settings: MonitorSettings, event: str, summary: str, **facts: Any
) -> Action:
    payload = alerts.event_payload(
        event,
        ctx.model,
        summary,
        version=ctx.version,
        check_run_id=ctx.check_id,
        data=ctx.data,
        **{**ctx.facts, **facts},
    )
    action = Action("alert", f"{event} at check {ctx.check_id}", event=event)
    deliveries = alerts.notify(event, payload, settings.alerts)
    action.deliveries = [d.as_dict() for d in deliveries]
    failed = [d for d in deliveries if not d.ok]
    action.status = "failed" if failed else "done"
    action.detail = (
        "; ".join(f"{d.webhook}: {d.error} after {d.attempts} attempt(s)" for d in failed)
        or f"sent to {len(deliveries)} webhook(s)"
    )
    return action


def carry_out(
    planned: list[Action],
    ctx: Context,
    settings: MonitorSettings,
    *,
    cfg: Config,
    journal: Callable[[Action], None] | None = None,
) -> list[Action]:
    """Perform `planned` in order; return every action with its outcome (follow-up alerts added).

    Args:
        journal: called with each finished action (default: the model's monitoring journal).
    """

    def record(action: Action) -> Action:
        if journal is not None:
            journal(action)
        else:
            history.append(
                cfg, ctx.model, {"record": "action", "id": ctx.check_id, "action": action.as_dict()}
            )
        return action

    done: list[Action] = []
    for action in planned:
        if action.name == "alert":
            sent = _alert(ctx, settings, str(action.event), ctx.summary)
            action.status, action.detail, action.deliveries = (
                sent.status,
                sent.detail,
                sent.deliveries,
            )
            done.append(record(action))
        elif action.name == "rollback":
            done.append(record(_rollback(action, ctx, cfg)))
            if action.status == "done" and _wants(settings, "rollback"):
                done.append(
                    record(
                        _alert(ctx, settings, "rollback", action.detail, to_version=action.version)
                    )
                )
        elif action.name == "retrain":
            done.extend(record(a) for a in _retrain(action, ctx, settings, cfg))
    return done


def _rollback(action: Action, ctx: Context, cfg: Config) -> Action:
    try:
        decision = acts.rollback_champion(ctx.model, to=action.to, reason=action.reason, cfg=cfg)
    except NbMlopsError as exc:
        action.status, action.detail = "failed", str(exc).splitlines()[0]
        return action
    action.status, action.version = "done", decision.version
    action.detail = decision.summary()
    return action


def _retrain(action: Action, ctx: Context, settings: MonitorSettings, cfg: Config) -> list[Action]:
    """The retraining run, then (with `auto_promote`) its promotion through the gates."""
    _run_retrain(action, ctx, cfg)
    if action.status == "failed":
        if _wants(settings, "retrain_failed"):
            alert = _alert(ctx, settings, "retrain_failed", action.detail, run_id=action.run_id)
            return [action, alert]
        return [action]
    if not settings.policy.auto_promote or action.run_id is None:
        return [action]
    return [action, *_promote(action, ctx, settings, cfg)]


def _run_retrain(action: Action, ctx: Context, cfg: Config) -> None:
    try:
        outcome = acts.retrain(
            ctx.model,
            ctx.data,
            reference=ctx.reference,
            trigger=ctx.check_id,
            reason=action.reason,
            cfg=cfg,
        )
    except NbMlopsError as exc:
        action.status, action.detail = "failed", str(exc).splitlines()[0]
        return
    action.run_id = outcome.run_id
    action.status = "done" if outcome.succeeded else "failed"
    action.detail = (
        f"retraining run {outcome.run_id} {outcome.status}"
        + (f": {outcome.error}" if outcome.error else "")
        + ("" if outcome.repointed else " (data inputs as the pipeline names them)")
    )


def _promote(action: Action, ctx: Context, settings: MonitorSettings, cfg: Config) -> list[Action]:
    """Promote the retrained run (never forced); alert on the outcome when a webhook wants it."""
    from nb_mlops.core.promotion import PromotionBlocked

    run_id = str(action.run_id)
    promote = Action("promote", f"policy auto_promote after {action.reason}", run_id=run_id)
    event, facts = "promotion", {"run_id": run_id}
    try:
        decision = acts.promote_retrained(ctx.model, run_id, reason=promote.reason, cfg=cfg)
    except PromotionBlocked as blocked:
        promote.status, promote.detail = "blocked", str(blocked.decision.summary())
        event = "retrain_blocked"
    except NbMlopsError as exc:
        promote.status, promote.detail = "failed", str(exc).splitlines()[0]
        event = "retrain_failed"
    else:
        promote.detail = decision.summary()
        if decision.status == "PENDING_APPROVAL":  # `require_approval`: a request, not a move
            promote.status, event = "pending", "approval_requested"
            facts["request_id"] = decision.entry_id
        else:
            promote.status, promote.version = "done", decision.version
            facts["to_version"] = decision.version
    if not _wants(settings, event):
        return [promote]
    return [promote, _alert(ctx, settings, event, promote.detail, **facts)]
