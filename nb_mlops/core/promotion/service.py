"""Promote, roll back and read the history of a model: the one implementation every face calls.

A promotion holds the model's cross-process lock from the first read of the champion to the last
journal record, journals write-ahead around the alias move, registers only a model logged by
the candidate run's tree, and hashes the model's bytes instead of loading them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nb_mlops.core import store
from nb_mlops.core.config import Config, load_config
from nb_mlops.core.durable import settle
from nb_mlops.core.errors import (
    GatesBlocked,
    ModelNotFound,
    NbMlopsError,
    PromotionError,
    RollbackError,
)
from nb_mlops.core.promotion.access import check_promoter
from nb_mlops.core.promotion.gates import (
    FAIL,
    DataVerifier,
    GateResult,
    RunFacts,
    evaluate_gates,
    format_value,
    parse_gates,
)
from nb_mlops.core.promotion.journal import Journal, JournalEntry
from nb_mlops.core.promotion.registry import (
    CHAMPION,
    DIGEST_TAG,
    PREVIOUS,
    Candidate,
    ModelRef,
    check_model_name,
    choice_note,
    find_version,
    get_alias,
    get_version,
    latest_pipeline_run,
    load_candidate,
    model_aliases,
    model_exists,
    model_safety,
    register_version,
    resolve_source,
    run_facts,
    safety_tags,
    source_digest,
    verify_digest,
    version_location,
)
from nb_mlops.core.user import current_user

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "Decision",
    "PromotionBlocked",
    "evaluate",
    "history",
    "promote",
    "reconcile",
    "rollback",
]

FAULT_ENV = "NB_MLOPS_FAULT"  # test hook: SIGKILL this process at a named point of an alias move


@dataclass
class Decision:
    """The outcome of a promotion, a gate check or a rollback.

    Attributes:
        status: PROMOTED, BLOCKED, READY (checked, nothing changed), ROLLED_BACK,
            PENDING_APPROVAL (a request waits for an approver) or REJECTED.
        model: registered model name.
        action: promote | forced-promote | blocked | check | rollback | request | reject.
        run_id: the candidate pipeline run (rollback: the restored version's run).
        version: the champion version after the act (BLOCKED/READY: None or the existing version).
        previous_version: the champion before the act.
        gates: every gate result (empty for rollbacks).
        forced: True when failed gates were overridden with --force.
        reason: the reason given.
        entry_id: the journal entry's id (None for READY; a request's id is its entry's).
        requester: who asked for an approved promotion (the acting user is the approver).
        request_id: the approval request this decision settles.
    """

    status: str
    model: str
    action: str
    run_id: str | None = None
    version: str | None = None
    previous_version: str | None = None
    gates: list[GateResult] = field(default_factory=list)
    forced: bool = False
    reason: str | None = None
    entry_id: str | None = None
    pipeline: str | None = None
    pipeline_hash: str | None = None
    model_source: str | None = None
    model_sha256: str | None = None
    requester: str | None = None
    request_id: str | None = None
    note: str | None = None  # which of several logged models was chosen

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if g.verdict == FAIL]

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "gates"}
        data["gates"] = [g.as_dict() for g in self.gates]
        return data

    def summary(self) -> str:
        """One line: what happened (and which model, when the run logged several)."""
        line = self._summary()
        return f"{line}; {self.note}" if self.note else line

    def _summary(self) -> str:
        if self.status == "PROMOTED":
            forced = (
                " (FORCED past " + ", ".join(g.gate for g in self.failed) + ")"
                if self.forced
                else ""
            )
            return (
                f"PROMOTED: {self.model} version {self.version} is champion{forced}"
                f" (was {self.previous_version or 'none'}; run {self.run_id})"
                + (f"; requested by {self.requester}, approved" if self.requester else "")
            )
        if self.status == "ROLLED_BACK":
            return f"ROLLED_BACK: {self.model} champion {self.previous_version} → {self.version}"
        if self.status == "PENDING_APPROVAL":
            return (
                f"PENDING_APPROVAL: request {self.entry_id} to make run {self.run_id} champion of "
                f"{self.model} waits for an approver: `nb-mlops approve {self.entry_id}`"
            )
        if self.status == "REJECTED":
            return f"REJECTED: request {self.request_id} for run {self.run_id} → {self.model}"
        if self.status == "READY":
            return f"READY: run {self.run_id} passes every gate for {self.model}"
        return (
            f"BLOCKED: {len(self.failed)} gate(s) failed for run {self.run_id} → {self.model}: "
            + ", ".join(g.gate for g in self.failed)
        )

    def table(self) -> str:
        """The gate table as plain text (faces with rich or widgets render `gates` themselves)."""
        rows = [("gate", "verdict", "measured", "expected", "detail")]
        rows += [
            (g.gate, g.verdict, format_value(g.measured), format_value(g.expected), g.detail)
            for g in self.gates
        ]
        if len(rows) == 1:
            return "(no gates configured)"
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        return "\n".join(
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
            for row in rows
        )


class PromotionBlocked(GatesBlocked):
    """Gates failed; `decision` holds the full gate table (nothing changed in the registry)."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(
            decision.summary() + "; fix the failing gates or pass --force with --reason TEXT"
        )
        self.decision = decision


# --- public operations ---------------------------------------------------------------------------


def evaluate(
    run_id: str | None = None,
    *,
    model: str,
    latest: str | None = None,
    source: str | None = None,
    cfg: Config | None = None,
) -> Decision:
    """Judge a pipeline run against the gates without changing anything (the Promote panel's view).

    Returns:
        A decision with status READY (every gate passes or skips) or BLOCKED.
    """
    cfg, client = _open(cfg)
    check_model_name(model)
    spec = parse_gates(cfg.gates)
    settle()  # this process's own pending writes first
    candidate = load_candidate(client, _resolve_run(client, run_id, latest))
    ref = resolve_source(candidate, source)
    model_safety(cfg, ref)
    current = get_alias(client, model, CHAMPION)
    gates = evaluate_gates(
        spec, candidate.facts, _champion(client, model, current), _data_verifier(cfg)
    )
    failed = any(g.verdict == FAIL for g in gates)
    return Decision(
        note=None if source else choice_note(candidate, ref),
        status="BLOCKED" if failed else "READY",
        model=model,
        action="check",
        run_id=candidate.run_id,
        previous_version=current,
        gates=gates,
        pipeline=candidate.tags.get("nb_mlops.pipeline"),
        pipeline_hash=candidate.tags.get("nb_mlops.pipeline_hash"),
        model_source=ref.source,
    )


def promote(
    run_id: str | None = None,
    *,
    model: str,
    latest: str | None = None,
    reason: str | None = None,
    force: bool = False,
    source: str | None = None,
    cfg: Config | None = None,
    announce: bool = True,
    who: str | None = None,
) -> Decision:
    """Make a pipeline run's model the `champion` of `model`, through the gates, with a journal entry.

    Args:
        run_id: the pipeline run to promote (or give `latest`: the newest run of that pipeline).
        model: registered model name (created on first promotion).
        reason: why (required with `force`: promote even when gates fail, journaled as forced).
        source: an explicit model URI inside the run's artifacts (default: the model it logged).
        cfg: project configuration (default: the current project's).
        announce: send the `promotion` event to the webhooks subscribed to it.
        who: the acting user (default: `NB_MLOPS_USER`, else the OS user); must be one of
            `[promotion] promoters` when that list is set.

    Returns:
        The decision: PROMOTED, or PENDING_APPROVAL (a request, `entry_id` its id) when the
        configuration sets `require_approval`.

    Raises:
        PromotionBlocked: a gate failed and `force` is not set (journaled; registry unchanged).
        PermissionDenied: `who` is not among the configured promoters.
        PromotionError: the run is not a successful pipeline run with a model, the source lies
            outside its artifacts, or the model's files changed since they were logged.

    Example:
        >>> nb_mlops.promote(latest="train", model="churn", reason="weekly").version  # doctest: +SKIP
        '3'
    """
    if force and not (reason and reason.strip()):
        raise PromotionError("--force needs --reason TEXT saying why the failed gates are accepted")
    cfg, client = _open(cfg)
    who = who or current_user()
    rules = check_promoter(cfg, who)
    attempt = prepare(cfg, client, _resolve_run(client, run_id, latest), model, source)
    attempt.reason, attempt.force, attempt.who = reason, force, who
    with store.lock(cfg, f"promote-{model}"):
        decision = promote_locked(attempt, ask=rules.require_approval)
    if announce and decision.status == "PROMOTED":
        _announce(cfg, "promotion", model, decision, run_id=decision.run_id, who=who)
    elif announce and decision.status == "PENDING_APPROVAL":  # the approvers' cue
        facts = {"run_id": decision.run_id, "who": who, "request_id": decision.entry_id}
        _announce(cfg, "approval_requested", model, decision, **facts)
    return decision


@dataclass
class Attempt:
    """What a promotion acts on, read before the model's lock is taken."""

    cfg: Config
    client: MlflowClient
    model: str
    candidate: Candidate
    ref: ModelRef
    safety: dict[str, Any]
    journal: Journal
    reason: str | None = None
    force: bool = False
    who: str | None = None
    note: str | None = None  # which of several logged models is registered
    requester: str | None = None
    request_id: str | None = None


def prepare(
    cfg: Config, client: MlflowClient, run_id: str, model: str, source: str | None
) -> Attempt:
    """Check the model name and the gates table, load the candidate run and its model."""
    check_model_name(model)
    parse_gates(cfg.gates)  # a bad gates table fails before anything is read
    settle()  # this process's own pending writes first
    candidate = load_candidate(client, run_id)
    ref = resolve_source(candidate, source)
    safety = model_safety(cfg, ref)
    attempt = Attempt(cfg, client, model, candidate, ref, safety, Journal(cfg, model))
    attempt.note = None if source else choice_note(candidate, ref)
    return attempt


def promote_locked(attempt: Attempt, *, ask: bool = False) -> Decision:
    """Under the model's lock: judge the gates, then journal a blocked attempt, a request for
    approval (`ask`) or move the champion."""
    try:
        decision = _judge_and_act(attempt, ask)
    except PromotionBlocked as blocked:
        blocked.decision.note = attempt.note
        raise
    decision.note = attempt.note
    return decision


def _judge_and_act(attempt: Attempt, ask: bool) -> Decision:
    a = attempt
    _reconcile_locked(a.cfg, a.client, a.model, a.journal)
    aliases = model_aliases(a.client, a.model)
    current = aliases.get(CHAMPION) if aliases is not None else None
    existing = (
        find_version(a.client, a.model, a.candidate.run_id, a.ref) if aliases is not None else None
    )
    if existing is not None and str(existing.version) == current:
        raise PromotionError(
            f"run {a.candidate.run_id} is already the champion of {a.model} (version {current}); "
            "nothing to do"
        )
    gates = evaluate_gates(
        parse_gates(a.cfg.gates),
        a.candidate.facts,
        _champion(a.client, a.model, current),
        _data_verifier(a.cfg),
    )
    failed = [g for g in gates if g.verdict == FAIL]
    fields = _entry_fields(a.candidate, a.ref, gates, failed, a.reason, current)
    fields.update(model_safety=a.safety, requester=a.requester, request_id=a.request_id)
    if failed and not a.force:
        entry = JournalEntry.new("blocked", a.model, who=a.who, state="done", **fields)
        a.journal.append(entry)
        _tag_blocked(a.client, a.candidate.run_id, a.model, failed)
        raise PromotionBlocked(_decision("BLOCKED", entry, gates))
    if ask:
        fields["requester"] = a.who
        entry = JournalEntry.new("request", a.model, who=a.who, state="done", **fields)
        a.journal.append(entry)
        return _decision("PENDING_APPROVAL", entry, gates)
    return _move(a, aliases, existing, fields, gates)


def _move(
    a: Attempt,
    aliases: dict[str, str] | None,
    existing: Any,
    fields: dict[str, Any],
    gates: list[GateResult],
) -> Decision:
    """Register the version (unless it exists) and move `champion` to it, write-ahead journaled."""
    digest = verify_digest(a.ref, a.cfg.tracking_uri)
    tags = {**_version_tags(a.candidate, a.ref, digest), **safety_tags(a.safety)}
    version = (
        str(existing.version)
        if existing
        else register_version(
            a.client, a.model, a.candidate, a.ref, tags, exists=aliases is not None
        )
    )
    failed = bool(fields["failed_gates"])
    entry = JournalEntry.new(
        "forced-promote" if failed else "promote",
        a.model,
        who=a.who,
        state="pending",
        to_version=version,
        model_sha256=digest,
        previous_champion_before=(aliases or {}).get(PREVIOUS),
        **fields,
    )
    a.journal.append(entry)
    _move_champion(a.client, a.model, version, fields["from_version"])
    a.journal.settle(entry, "done")
    _publish(a.client, a.model, entry, a.journal)
    decision = _decision("PROMOTED", entry, gates)
    decision.forced = failed
    return decision


def rollback(
    model: str,
    *,
    to: str | int | None = None,
    reason: str | None = None,
    cfg: Config | None = None,
    who: str | None = None,
    announce: bool = True,
) -> Decision:
    """Move `champion` back to the version it replaced (or to version `to`), and journal it.

    Args:
        model: registered model name.
        to: the version to restore (default: the champion before the current one, per the journal).
        reason: why (required).
        cfg: project configuration.
        who: the user journaled as acting (default: `NB_MLOPS_USER`, else the OS user); a
            server that rolls back for its users passes each request's user. Must be one of
            `[promotion] promoters` when that list is set (a rollback never waits for approval).
        announce: send the `rollback` event to the webhooks subscribed to it.

    Raises:
        ModelNotFound: no such registered model.
        RollbackError: no reason, no such version, or no earlier champion to return to.

    Example:
        >>> nb_mlops.rollback("churn", reason="drift on Monday's data").version  # doctest: +SKIP
        '2'
    """
    if not (reason and str(reason).strip()):
        raise RollbackError("rollback needs --reason TEXT saying why the champion is rolled back")
    cfg, client = _open(cfg)
    check_model_name(model)
    who = who or current_user()
    check_promoter(cfg, who)
    with store.lock(cfg, f"promote-{model}"):
        entry = _rollback_locked(cfg, client, model, to, str(reason), who)
    decision = _decision("ROLLED_BACK", entry, [])
    if announce:
        _announce(cfg, "rollback", model, decision, reason=str(reason), who=entry.who)
    return decision


def _rollback_locked(
    cfg: Config, client: MlflowClient, model: str, to: str | int | None, reason: str, who: str
) -> JournalEntry:
    """Under the model's lock: pick the version to restore and move `champion`, journaled."""
    journal = Journal(cfg, model)
    _reconcile_locked(cfg, client, model, journal)
    aliases = model_aliases(client, model)
    if aliases is None:
        raise ModelNotFound(
            f"no model {model!r} in the registry: nothing to roll back; promote a run first"
        )
    current = aliases.get(CHAMPION)
    if current is None:
        raise RollbackError(f"model {model!r} has no champion: nothing to roll back")
    target = _rollback_target(client, model, journal.entries(), current, to)
    mv = _restorable(client, model, target)
    entry = JournalEntry.new(
        "rollback",
        model,
        who=who,
        state="pending",
        from_version=current,
        to_version=target,
        reason=reason,
        previous_champion_before=aliases.get(PREVIOUS),
        **_restored_fields(client, mv),
    )
    journal.append(entry)
    _move_champion(client, model, target, current)
    journal.settle(entry, "done")
    _publish(client, model, entry, journal)
    return entry


def _restorable(client: MlflowClient, model: str, target: str) -> Any:
    """The version to restore, refused when missing or when its files changed since promotion."""
    mv = get_version(client, model, target)
    if mv is None:
        raise RollbackError(
            f"model {model!r} has no version {target}; see `nb-mlops history {model}`"
        )
    recorded = (mv.tags or {}).get(DIGEST_TAG)
    location = version_location(client, mv)
    actual = source_digest(location, client.tracking_uri) if recorded else None
    if recorded and actual != recorded:
        raise RollbackError(
            f"{model} version {target}: its files no longer match the digest recorded at promotion "
            f"({recorded[:12]}…); refusing to restore changed artifacts"
        )
    return mv


def _restored_fields(client: MlflowClient, mv: Any) -> dict[str, Any]:
    """A rollback entry's provenance: what the restored version's tags recorded."""
    tags = mv.tags or {}
    return {
        "candidate_run": mv.run_id,
        "pipeline": tags.get("nb_mlops.pipeline"),
        "pipeline_hash": tags.get("nb_mlops.pipeline_hash"),
        "notebook": tags.get("nb_mlops.notebook"),
        "notebook_sha256": tags.get("nb_mlops.notebook_sha256"),
        "git_commit": tags.get("nb_mlops.git_commit"),
        "data": {
            k[len("nb_mlops.data.") :]: v for k, v in tags.items() if k.startswith("nb_mlops.data.")
        },
        "model_source": version_location(client, mv),
        "model_sha256": tags.get(DIGEST_TAG),
    }


def _announce(cfg: Config, event: str, model: str, decision: Decision, **facts: Any) -> None:
    """Send `event` to the webhooks of `[tool.nb_mlops.monitor.alerts]` that subscribe to it.
    The move is done and journaled already: a delivery that fails is printed, never raised."""
    from nb_mlops.core.monitoring import alerts
    from nb_mlops.core.monitoring.settings import parse_settings

    settings = parse_settings(cfg.settings.get("monitor")).alerts
    if not any(event in hook.events for hook in settings.webhooks):
        return
    payload = alerts.event_payload(
        event,
        model,
        decision.summary(),
        to_version=decision.version,
        from_version=decision.previous_version,
        **facts,
    )
    for delivery in alerts.notify(event, payload, settings):
        if not delivery.ok:
            print(
                f"warning: nb_mlops: the {event} alert to {delivery.webhook} failed "
                f"({delivery.error}, {delivery.attempts} attempt(s)); the {event} itself is done",
                file=sys.stderr,
            )


def history(model: str, *, cfg: Config | None = None) -> list[JournalEntry]:
    """The journal of `model`, oldest first (pending entries of a crashed process settled first).

    Example:
        >>> [e.action for e in nb_mlops.history("churn")]  # doctest: +SKIP
        ['promote', 'blocked', 'promote', 'rollback']
    """
    cfg = cfg or load_config()
    check_model_name(model)
    journal = Journal(cfg, model)
    if journal.pending():
        reconcile(model, cfg=cfg)
    return journal.entries()


def reconcile(model: str, *, cfg: Config | None = None) -> list[JournalEntry]:
    """Settle the entries a killed process left pending against the alias actually set.

    Returns:
        The entries settled now (done when the alias had moved, aborted when it had not).
    """
    cfg, client = _open(cfg)
    journal = Journal(cfg, model)
    with store.lock(cfg, f"promote-{model}"):
        return _reconcile_locked(cfg, client, model, journal)


# --- internals ------------------------------------------------------------------------------------


def _open(cfg: Config | None) -> tuple[Config, MlflowClient]:
    cfg = store.ensure_store(cfg or load_config())
    return cfg, store.client(cfg)


def _resolve_run(client: MlflowClient, run_id: str | None, latest: str | None) -> str:
    if bool(run_id) == bool(latest):
        raise PromotionError("give either a RUN_ID or --latest PIPELINE (one of them)")
    return run_id or latest_pipeline_run(client, str(latest))


def _champion(
    client: MlflowClient, model: str, version: str | None
) -> tuple[str, RunFacts | None] | None:
    if version is None:
        return None
    mv = get_version(client, model, version)
    if mv is None or not mv.run_id:
        return (version, None)
    from mlflow.exceptions import MlflowException

    try:
        return (version, run_facts(client.get_run(mv.run_id)))
    except MlflowException:
        return (version, None)


def _data_verifier(cfg: Config) -> DataVerifier:
    """Check a data version recorded as `vN:<digest>`: it exists with that digest, and every
    object of it re-hashes to its name (`nb_mlops.core.data.verify`)."""
    from nb_mlops.core import data

    def check(name: str, tag: str) -> str | None:
        version_text, _, digest = tag.partition(":")
        ref = f"{name}@{version_text}"
        try:
            found = data.snapshots(ref, cfg=cfg)
            stored = found[0].digest if found else ""
            if digest and stored and stored != digest:
                return (
                    f"{ref} is stored with digest {stored[:12]}…, the run recorded {digest[:12]}…"
                )
            problems = data.verify(ref, cfg=cfg)
        except NbMlopsError as exc:
            return str(exc).splitlines()[0]
        return _verify_problem(problems)

    return check


def _verify_problem(result: Any) -> str | None:
    """`verify` returns a list of problems ({"snapshot", "object", "problem", "path"}); empty is good."""
    if not result:
        return None
    if isinstance(result, list | tuple):
        shown = [
            f"{p.get('problem', 'bad')} object {str(p.get('object', '?'))[:12]}… ({p.get('path') or '-'})"
            if isinstance(p, dict)
            else str(p)
            for p in result[:3]
        ]
        more = f" and {len(result) - 3} more" if len(result) > 3 else ""
        return "; ".join(shown) + more
    return str(result)


def _entry_fields(
    candidate: Candidate,
    ref: ModelRef,
    gates: list[GateResult],
    failed: list[GateResult],
    reason: str | None,
    current: str | None,
) -> dict[str, Any]:
    tags = candidate.tags
    return {
        "from_version": current,
        "reason": reason,
        "gates": [g.as_dict() for g in gates],
        "failed_gates": [g.gate for g in failed],
        "candidate_run": candidate.run_id,
        "pipeline": tags.get("nb_mlops.pipeline"),
        "pipeline_hash": tags.get("nb_mlops.pipeline_hash"),
        "data": dict(candidate.facts.data),
        "notebook": candidate.tree_tag("mlflow.source.name"),
        "notebook_sha256": candidate.tree_tag("nb_mlops.notebook_sha256"),
        "git_commit": candidate.tree_tag(*_GIT_COMMIT),
        "model_source": ref.source,
    }


_GIT_COMMIT = ("nb_mlops.git_commit", "nb_mlops.git.commit", "mlflow.source.git.commit")


def _version_tags(candidate: Candidate, ref: ModelRef, digest: str) -> dict[str, str]:
    """What a new version carries: its production pipeline, provenance and digest."""
    tags = candidate.tags
    return {
        "nb_mlops.pipeline": tags.get("nb_mlops.pipeline", ""),
        "nb_mlops.pipeline_hash": tags.get("nb_mlops.pipeline_hash", ""),
        "nb_mlops.pipeline_run_id": candidate.run_id,
        "nb_mlops.source_run_id": ref.run_id,
        "nb_mlops.notebook": candidate.tree_tag("mlflow.source.name") or "",
        "nb_mlops.notebook_sha256": candidate.tree_tag("nb_mlops.notebook_sha256") or "",
        "nb_mlops.git_commit": candidate.tree_tag(*_GIT_COMMIT) or "",
        "nb_mlops.git_branch": candidate.tree_tag("nb_mlops.git.branch") or "",
        "nb_mlops.git_dirty": candidate.tree_tag("nb_mlops.git.dirty") or "",
        "nb_mlops.python": candidate.tree_tag("nb_mlops.python") or "",
        "nb_mlops.env_sha256": candidate.tree_tag("nb_mlops.env_sha256") or "",
        "nb_mlops.eval_data": ",".join(sorted(candidate.facts.eval_data)),
        DIGEST_TAG: digest,
        **{k: v for k, v in tags.items() if k.startswith("nb_mlops.data.")},
    }


def _fault(point: str) -> None:
    """Test hook: die without cleanup at a named point of an alias move."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _move_champion(client: MlflowClient, model: str, version: str, current: str | None) -> None:
    _fault("before-alias")
    if current is not None:
        client.set_registered_model_alias(model, PREVIOUS, current)
    _fault("between-aliases")
    client.set_registered_model_alias(model, CHAMPION, version)
    _fault("after-alias")


def _reconcile_locked(
    cfg: Config, client: MlflowClient, model: str, journal: Journal
) -> list[JournalEntry]:
    """Called under the model's lock: settle pending entries against the champion alias."""
    settled = []
    for entry in journal.pending():
        actual = get_alias(client, model, CHAMPION)
        if entry.to_version is not None and actual == entry.to_version:
            journal.settle(entry, "done", recovered=True)
            _publish(client, model, entry, journal)
        else:
            # the alias never moved: undo a half-done move of previous-champion
            before = entry.previous_champion_before
            if get_alias(client, model, PREVIOUS) != before and model_exists(client, model):
                if before is None:
                    client.delete_registered_model_alias(model, PREVIOUS)
                else:
                    client.set_registered_model_alias(model, PREVIOUS, before)
            journal.settle(entry, "aborted", recovered=True)
        settled.append(entry)
    return settled


def _rollback_target(
    client: MlflowClient,
    model: str,
    entries: list[JournalEntry],
    current: str,
    to: str | int | None,
) -> str:
    if to is not None:
        target = str(to).lstrip("v")
        if target == current:
            raise RollbackError(f"version {target} is already the champion of {model!r}")
        return target
    stack = _champion_stack(entries)
    if stack and stack[-1] == current and len(stack) >= 2:
        return stack[-2]
    if not stack or stack[-1] != current:
        # the alias was moved outside nb_mlops: fall back to what MLflow says it replaced
        previous = get_alias(client, model, PREVIOUS)
        if previous and previous != current:
            return previous
    promotions = sum(1 for e in entries if e.moves_champion and e.state == "done")
    raise RollbackError(
        f"model {model!r} has no earlier champion to roll back to (journal: {promotions} champion move(s), "
        f"current champion v{current}); pass --to VERSION to choose one"
    )


def _champion_stack(entries: list[JournalEntry]) -> list[str]:
    """Replay the journal: promotions push a version, a rollback pops back to its target."""
    stack: list[str] = []
    for entry in entries:
        if entry.state != "done" or not entry.moves_champion or entry.to_version is None:
            continue
        if entry.action == "rollback" and entry.to_version in stack:
            while stack and stack[-1] != entry.to_version:
                stack.pop()
        else:
            stack.append(entry.to_version)
    return stack


def _decision(status: str, entry: JournalEntry, gates: list[GateResult]) -> Decision:
    """What a promotion, a blocked promotion or a rollback reports: its journal entry's facts."""
    return Decision(
        status=status,
        model=entry.model,
        action=entry.action,
        run_id=entry.candidate_run,
        version=entry.to_version,
        previous_version=entry.from_version,
        gates=gates,
        reason=entry.reason,
        entry_id=entry.id,
        pipeline=entry.pipeline,
        pipeline_hash=entry.pipeline_hash,
        model_source=entry.model_source,
        model_sha256=entry.model_sha256,
        requester=entry.requester,
        request_id=entry.request_id,
    )


def _gate_summary(gates: list[dict[str, Any]]) -> str:
    return ", ".join(f"{g['gate']}={g['verdict']}" for g in gates) or "no gates"


def _tag_blocked(client: MlflowClient, run_id: str, model: str, failed: list[GateResult]) -> None:
    """Show a blocked attempt on the candidate run (the registry stays untouched)."""
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # the journal has it; the tag is a convenience
        client.set_tag(
            run_id, f"nb_mlops.promotion.{model}", "BLOCKED: " + ", ".join(g.gate for g in failed)
        )


def _publish(client: MlflowClient, model: str, entry: JournalEntry, journal: Journal) -> None:
    """Make a settled entry visible in MLflow: a tag on the version and the model's description."""
    if entry.to_version is None:
        return
    summary = {
        "when": entry.when,
        "who": entry.who,
        "action": entry.action,
        "from": entry.from_version,
        "to": entry.to_version,
        "reason": entry.reason,
        "gates": _gate_summary(entry.gates),
    }
    client.set_model_version_tag(
        model,
        entry.to_version,
        f"nb_mlops.journal.{entry.when.replace(':', '-')}",
        json.dumps(summary)[:4900],
    )
    rows = [
        f"| {e.when} | {e.action} | {e.from_version or '-'} → {e.to_version or '-'} | {e.who} | "
        f"{(e.reason or '').replace('|', '/')[:80]} | {_gate_summary(e.gates)[:120]} |"
        for e in journal.entries()[-20:]
        if e.state == "done"
    ]
    description = (
        "Promotion journal (nb_mlops; newest last; full journal: "
        f"`.nb_mlops/journal/{journal.path.name}`, `nb-mlops history {model}`)\n\n"
        "| when (UTC) | action | from → to | who | reason | gates |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows)
    )
    client.update_registered_model(model, description=description)
