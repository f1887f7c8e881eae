"""Promotion core against the real SQLite store: gates, registry aliases, journal, rollback."""

from __future__ import annotations

from pathlib import Path

import pytest
from promotion_helpers import journal_lines, make_pipeline_run, set_gates

import nb_mlops
from nb_mlops.core import store
from nb_mlops.core.config import load_config
from nb_mlops.core.errors import ConfigError, GatesBlocked, PromotionError, RollbackError
from nb_mlops.core.promotion import PromotionBlocked, evaluate, history, parse_gates

GATES = """
metrics = { accuracy = ">= 0.9", log_loss = "<= 0.3" }
beat_champion = { metric = "accuracy", min_delta = 0.0 }
require_reproduced = true
"""


def _aliases(model: str) -> dict[str, str]:
    return {
        k: str(v)
        for k, v in store.client(load_config()).get_registered_model(model).aliases.items()
    }


def _assert_journal_agrees(model: str) -> None:
    """The champion alias equals the target of the journal's last champion move; nothing pending."""
    entries = history(model)
    assert not [e for e in entries if e.state == "pending"]
    moves = [e for e in entries if e.state == "done" and e.moves_champion]
    assert _aliases(model).get("champion") == (moves[-1].to_version if moves else None)


# --- gate specs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "op", "threshold"),
    [(">= 0.9", ">=", 0.9), ("<0.3", "<", 0.3), ("== 1", "==", 1.0), (">  -2e-3", ">", -0.002)],
)
def test_metric_threshold_specs_parse(spec: str, op: str, threshold: float) -> None:
    gate = parse_gates({"metrics": {"m": spec}}).metrics[0]
    assert (gate.op, gate.threshold) == (op, threshold)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"metrics": {"accuracy": "=> 0.9"}},
            "gates.metrics.accuracy = '=> 0.9' is not a threshold",
        ),
        ({"metrics": {"accuracy": 0.9}}, "gates.metrics.accuracy = 0.9 is not a threshold"),
        ({"metrics": {"accuracy": ">= high"}}, "is not a threshold"),
        ({"metrics": ">= 0.9"}, "gates.metrics must be a table"),
        ({"beat_champion": {"min_delta": 0.1}}, "gates.beat_champion must be a table"),
        ({"beat_champion": {"metric": "acc", "min_delta": "x"}}, "min_delta must be a number"),
        ({"beat_champion": {"metric": "acc", "direction": "up"}}, "direction must be"),
        ({"require_reproduced": "yes"}, "gates.require_reproduced must be true or false"),
        ({"accuracy": ">= 0.9"}, "gates.accuracy is not a known gate"),
    ],
)
def test_bad_gate_specs_are_refused_with_the_offending_value(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_gates(table)


def test_lower_is_better_is_inferred_for_losses() -> None:
    gate = parse_gates({"beat_champion": {"metric": "log_loss"}}).beat_champion
    assert gate is not None and gate.direction == "min"


# --- promote, promote, rollback ------------------------------------------------------------------


def test_promote_promote_rollback_restores_exactly_and_journal_agrees(project: Path) -> None:
    # Given gates and two successful pipeline runs, the second better than the first
    set_gates(project, GATES)
    first = make_pipeline_run(metrics={"accuracy": 0.92, "log_loss": 0.25})
    second = make_pipeline_run(metrics={"accuracy": 0.95, "log_loss": 0.2})

    # When the first is promoted (no champion yet)
    d1 = nb_mlops.promote(first, model="churn", reason="first")
    # Then it is champion, beat_champion is SKIP and every other gate PASS
    assert (d1.status, d1.version, d1.previous_version) == ("PROMOTED", "1", None)
    verdicts = {g.gate: g.verdict for g in d1.gates}
    assert verdicts == {
        "metric:accuracy": "PASS",
        "metric:log_loss": "PASS",
        "beat_champion": "SKIP",
        "require_reproduced": "PASS",
    }
    assert _aliases("churn") == {"champion": "1"}
    _assert_journal_agrees("churn")

    # When the better run is promoted
    d2 = nb_mlops.promote(second, model="churn")
    beat = next(g for g in d2.gates if g.gate == "beat_champion")
    assert (beat.verdict, beat.measured) == ("PASS", 0.95)
    assert "same evaluation snapshot" in beat.detail
    assert _aliases("churn") == {"champion": "2", "previous-champion": "1"}
    _assert_journal_agrees("churn")

    # Then the version records the production pipeline, its digest and the journal, visibly in MLflow
    client = store.client(load_config())
    mv = client.get_model_version("churn", "2")
    run = client.get_run(second)
    assert mv.run_id == second
    assert mv.tags["nb_mlops.pipeline_hash"] == run.data.tags["nb_mlops.pipeline_hash"]
    assert mv.tags["nb_mlops.pipeline_run_id"] == second
    assert len(mv.tags["nb_mlops.model_sha256"]) == 64
    assert any(key.startswith("nb_mlops.journal.") for key in mv.tags)
    description = client.get_registered_model("churn").description
    assert "| promote | 1 → 2 |" in description

    # When rolled back
    back = nb_mlops.rollback("churn", reason="complaints")
    # Then exactly version 1 is champion again and the replaced version is previous-champion
    assert (back.status, back.version, back.previous_version) == ("ROLLED_BACK", "1", "2")
    assert _aliases("churn") == {"champion": "1", "previous-champion": "2"}
    _assert_journal_agrees("churn")

    # And the journal holds three entries, oldest first, with who/when/what
    entries = history("churn")
    assert [(e.action, e.from_version, e.to_version) for e in entries] == [
        ("promote", None, "1"),
        ("promote", "1", "2"),
        ("rollback", "2", "1"),
    ]
    assert entries[1].pipeline_hash == run.data.tags["nb_mlops.pipeline_hash"]
    assert entries[1].data == {"eval": "v1:" + "e" * 64}
    assert entries[1].notebook_sha256 == "a" * 64 and entries[1].git_commit == "c0ffee"
    assert entries[1].who and entries[1].when.endswith("Z")
    # every record is on disk: pending then done for each move
    states = [(r["record"], r["state"]) for r in journal_lines(project, "churn")]
    assert states == [("entry", "pending"), ("settle", "done")] * 3

    # And rolling back once more has no earlier champion: a clear error, nothing changed
    with pytest.raises(RollbackError, match="no earlier champion to roll back to"):
        nb_mlops.rollback("churn", reason="again")
    # But an explicit version works
    assert nb_mlops.rollback("churn", to="2", reason="it was fine").version == "2"
    _assert_journal_agrees("churn")

    # Re-promoting the current champion's run is refused
    with pytest.raises(PromotionError, match="already the champion"):
        nb_mlops.promote(second, model="churn")


def test_blocked_promotion_changes_nothing_and_forced_one_is_journaled(project: Path) -> None:
    set_gates(project, GATES)
    good = make_pipeline_run(metrics={"accuracy": 0.95, "log_loss": 0.2})
    bad = make_pipeline_run(metrics={"accuracy": 0.85, "log_loss": 0.2}, reproduced="false")
    nb_mlops.promote(good, model="churn")
    before = store.client(load_config()).get_registered_model("churn")

    # When a worse run is promoted
    with pytest.raises(GatesBlocked) as caught:
        nb_mlops.promote(bad, model="churn")
    decision = caught.value.decision  # type: ignore[attr-defined]
    assert isinstance(caught.value, PromotionBlocked)
    assert "BLOCKED: 3 gate(s) failed" in str(caught.value)
    assert {g.gate: g.verdict for g in decision.failed} == {
        "metric:accuracy": "FAIL",
        "beat_champion": "FAIL",
        "require_reproduced": "FAIL",
    }
    assert "0.85" in decision.table() and "FAIL" in decision.table()
    # Then the registry did not change at all
    after = store.client(load_config()).get_registered_model("churn")
    assert (after.aliases, after.description) == (before.aliases, before.description)
    assert len(store.client(load_config()).search_model_versions("name = 'churn'")) == 1
    # And the attempt is journaled, and tagged on the run
    blocked = history("churn")[-1]
    assert (blocked.action, blocked.state, blocked.candidate_run) == ("blocked", "done", bad)
    assert blocked.failed_gates == ["metric:accuracy", "beat_champion", "require_reproduced"]
    assert (
        store.client(load_config())
        .get_run(bad)
        .data.tags["nb_mlops.promotion.churn"]
        .startswith("BLOCKED")
    )

    # --force without a reason is refused
    with pytest.raises(PromotionError, match="--force needs --reason"):
        nb_mlops.promote(bad, model="churn", force=True)
    # --force with a reason promotes and journals the failed gates
    forced = nb_mlops.promote(bad, model="churn", force=True, reason="hotfix for incident 42")
    assert (forced.status, forced.forced, forced.version) == ("PROMOTED", True, "2")
    last = history("churn")[-1]
    assert (last.action, last.reason) == ("forced-promote", "hotfix for incident 42")
    assert "metric:accuracy" in last.failed_gates
    _assert_journal_agrees("churn")


def test_evaluate_changes_nothing(project: Path) -> None:
    set_gates(project, 'metrics = { accuracy = ">= 0.99" }')
    run = make_pipeline_run()
    decision = evaluate(run, model="churn")
    assert decision.status == "BLOCKED" and decision.entry_id is None
    assert history("churn") == []


def test_beat_champion_says_when_evaluation_snapshots_differ(project: Path) -> None:
    set_gates(project, 'beat_champion = { metric = "log_loss", min_delta = 0.01 }')
    old = make_pipeline_run(metrics={"log_loss": 0.30}, data={"test": ("v1:" + "1" * 64, "test")})
    new = make_pipeline_run(metrics={"log_loss": 0.20}, data={"test": ("v2:" + "2" * 64, "test")})
    nb_mlops.promote(old, model="m")
    gate = evaluate(new, model="m").gates[0]
    assert gate.verdict == "PASS" and "<= 0.29" in gate.expected
    assert "evaluation snapshots differ (test: candidate v2:" in gate.detail
    set_gates(project, 'beat_champion = { metric = "log_loss", require_same_snapshot = true }')
    assert evaluate(new, model="m").gates[0].verdict == "FAIL"


def test_data_gate_skips_without_snapshots(project: Path) -> None:
    set_gates(project, "require_data_verified = true")
    run = make_pipeline_run(data={})
    gate = evaluate(run, model="m").gates[0]
    assert (gate.gate, gate.verdict) == ("require_data_verified", "SKIP")


# --- refusals ------------------------------------------------------------------------------------


def test_non_pipeline_runs_are_refused_with_how_to(project: Path) -> None:
    interactive = make_pipeline_run(mode="interactive")
    with pytest.raises(
        PromotionError, match="interactive run .* `nb-mlops pipeline build NOTEBOOK`"
    ):
        nb_mlops.promote(interactive, model="m")
    failed = make_pipeline_run(status="FAILED")
    with pytest.raises(PromotionError, match="did not succeed \\(status FAILED\\)"):
        nb_mlops.promote(failed, model="m")
    no_model = make_pipeline_run(log_model=False)
    with pytest.raises(PromotionError, match="logged no model"):
        nb_mlops.promote(no_model, model="m")
    with pytest.raises(PromotionError, match="no run 0123abcd in the store"):
        nb_mlops.promote("0123abcd", model="m")
    with pytest.raises(PromotionError, match="model name 'a/b' is not allowed"):
        nb_mlops.promote(failed, model="a/b")
    step = store.client(load_config()).search_runs(
        [store.experiment_id(load_config(), "promo")], "tags.`nb_mlops.step` = 'fit'"
    )[0]
    with pytest.raises(PromotionError, match="promote the pipeline run"):
        nb_mlops.promote(step.info.run_id, model="m")
    assert history("m") == []


def test_sources_outside_the_candidate_run_are_refused(project: Path) -> None:
    run = make_pipeline_run()
    other = make_pipeline_run()
    client = store.client(load_config())
    other_model = client.search_logged_models(
        experiment_ids=[e.experiment_id for e in client.search_experiments()]
    )
    other_ids = [m.model_id for m in other_model if m.source_run_id not in _tree(run)]
    for source in (
        "file:///etc",
        "/etc/passwd",
        f"models:/{other_ids[0]}",
        f"runs:/{other}/pipeline",
        client.get_run(other).info.artifact_uri + "/pipeline",
        client.get_run(run).info.artifact_uri + "/../../" + other + "/artifacts",
    ):
        with pytest.raises(
            PromotionError, match="outside the artifacts|was not logged by|belongs to run"
        ):
            nb_mlops.promote(run, model="m", source=source)
    # a folder inside the run's artifacts that is not a model is refused too
    with pytest.raises(PromotionError, match="holds no MLmodel"):
        nb_mlops.promote(run, model="m", source=f"runs:/{run}/pipeline")
    assert not store.client(load_config()).search_registered_models()
    # the run's own model by explicit URI is fine
    own = next(m.model_id for m in other_model if m.source_run_id in _tree(run))
    assert nb_mlops.promote(run, model="m", source=f"models:/{own}").status == "PROMOTED"


def _tree(run_id: str) -> set[str]:
    client = store.client(load_config())
    eid = client.get_run(run_id).info.experiment_id
    ids, frontier = {run_id}, [run_id]
    while frontier:
        parent = frontier.pop()
        for child in client.search_runs([eid], f"tags.`mlflow.parentRunId` = '{parent}'"):
            ids.add(child.info.run_id)
            frontier.append(child.info.run_id)
    return ids


def test_changed_model_files_are_refused(project: Path) -> None:
    client = store.client(load_config())
    first = make_pipeline_run()
    nb_mlops.promote(first, model="m")
    second = make_pipeline_run()
    # Given the logging side recorded a digest, and the files changed afterwards
    model = next(
        m
        for m in client.search_logged_models(
            experiment_ids=[e.experiment_id for e in client.search_experiments()]
        )
        if m.source_run_id in _tree(second)
    )
    client.set_logged_model_tags(model.model_id, {"nb_mlops.model_sha256": "0" * 64})
    with pytest.raises(
        PromotionError, match="do not match the digest recorded when they were logged"
    ):
        nb_mlops.promote(second, model="m")
    # And a promoted version whose files changed since promotion is not restored by rollback
    client.set_logged_model_tags(model.model_id, {"nb_mlops.model_sha256": ""})
    nb_mlops.promote(second, model="m")
    pkl = next(
        Path(client.get_model_version_download_uri("m", "1").removeprefix("file://")).glob(
            "model.*"
        )
    )
    pkl.write_bytes(pkl.read_bytes() + b"tampered")
    with pytest.raises(RollbackError, match="no longer match the digest recorded at promotion"):
        nb_mlops.rollback("m", reason="x")
    assert _aliases("m")["champion"] == "2"


def test_rollback_without_history_is_a_clear_error(project: Path) -> None:
    with pytest.raises(RollbackError, match="no model 'ghost' in the registry"):
        nb_mlops.rollback("ghost", reason="x")
    with pytest.raises(RollbackError, match="needs --reason"):
        nb_mlops.rollback("ghost")
    nb_mlops.promote(make_pipeline_run(), model="m")
    with pytest.raises(RollbackError, match="no earlier champion to roll back to"):
        nb_mlops.rollback("m", reason="x")
    with pytest.raises(RollbackError, match="no version 7"):
        nb_mlops.rollback("m", to=7, reason="x")
    assert _aliases("m") == {"champion": "1"}


def test_latest_picks_the_newest_pipeline_run(project: Path) -> None:
    make_pipeline_run(pipeline="p1", metrics={"accuracy": 0.5})
    newest = make_pipeline_run(pipeline="p1", metrics={"accuracy": 0.6})
    make_pipeline_run(pipeline="other")
    assert nb_mlops.promote(latest="p1", model="m").run_id == newest
    with pytest.raises(PromotionError, match="pipeline 'nope' has no run yet"):
        nb_mlops.promote(latest="nope", model="m")
    with pytest.raises(PromotionError, match="either a RUN_ID or --latest"):
        nb_mlops.promote(newest, latest="p1", model="m")


def test_data_gate_verifies_real_snapshots(project: Path) -> None:
    import pandas as pd

    set_gates(project, "require_data_verified = true")
    snap = nb_mlops.snapshot(pd.DataFrame({"x": range(50), "y": [0, 1] * 25}), "train")
    tag = f"v{snap.version}:{snap.digest}"
    # Given a run that used an intact snapshot, the gate passes
    run = make_pipeline_run(data={"train": (tag, "train")})
    gate = evaluate(run, model="m").gates[0]
    assert (gate.verdict, gate.measured) == ("PASS", [f"train@v{snap.version}"])
    # A run that recorded another digest for that version fails, naming both
    liar = make_pipeline_run(data={"train": (f"v{snap.version}:{'0' * 64}", "train")})
    gate = evaluate(liar, model="m").gates[0]
    assert gate.verdict == "FAIL" and "the run recorded 000000000000" in gate.detail
    # A corrupted object fails the gate
    objects = [p for p in (project / ".nb_mlops" / "data" / "objects").rglob("*") if p.is_file()]
    for path in objects:
        path.chmod(0o644)
        path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    gate = evaluate(run, model="m").gates[0]
    assert gate.verdict == "FAIL" and "corrupt" in gate.detail
