"""The faces of promotion over the real store: `nb-mlops promote|rollback|history|lineage`,
`%promote` / `%lineage`, and the Promote panel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from promotion_helpers import make_pipeline_run, set_gates

import nb_mlops
from nb_mlops.cli import main
from nb_mlops.core.errors import PromotionError
from nb_mlops.core.lineage import parse_ref
from nb_mlops.core.promotion import Decision, GateResult, evaluate, promote
from nb_mlops.magics.promote import PromoteMagics
from nb_mlops.present.promote import decision_html
from nb_mlops.widgets.promote import PromotePanel


def test_cli_promote_blocked_forced_history_rollback_lineage(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_gates(project, 'metrics = { accuracy = ">= 0.9" }')
    good = make_pipeline_run(metrics={"accuracy": 0.93})
    bad = make_pipeline_run(metrics={"accuracy": 0.5})
    assert main(["promote", good, "--model", "churn", "--reason", "first"]) == 0
    out = capsys.readouterr().out
    assert "metric:accuracy" in out and "PASS" in out and "PROMOTED: churn version 1" in out

    # blocked: exit 1, the gate table on stdout, one error line on stderr
    assert main(["promote", bad, "--model", "churn"]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "0.5" in captured.out
    assert (
        captured.err.startswith("error: BLOCKED: 1 gate(s) failed")
        and captured.err.count("\n") == 1
    )
    assert main(["promote", bad, "--model", "churn", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "BLOCKED"

    assert (
        main(["promote", bad, "--model", "churn", "--force", "--reason", "incident 7", "--json"])
        == 0
    )
    forced = json.loads(capsys.readouterr().out)
    assert (forced["status"], forced["forced"], forced["version"]) == ("PROMOTED", True, "2")

    assert main(["history", "churn", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["action"] for e in entries] == ["promote", "blocked", "blocked", "forced-promote"]
    assert main(["history", "churn"]) == 0
    table = capsys.readouterr().out
    assert "forced-promote" in table and "incident 7" in table

    assert main(["rollback", "churn"]) == 2  # --reason is required (click usage error)
    capsys.readouterr()
    assert main(["rollback", "churn", "--reason", "bad model"]) == 0
    assert "ROLLED_BACK: churn champion 2 → 1" in capsys.readouterr().out

    assert main(["lineage", "churn", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert (found["version"], found["pipeline_run"]["run_id"]) == ("1", good)
    assert found["data"] == [{"name": "eval", "ref": "eval@v1", "digest": "e" * 64, "eval": True}]
    assert found["notebook"]["git_commit"] == "c0ffee"
    assert found["promotion"]["action"] == "rollback"
    assert main(["lineage", "churn/2"]) == 0
    assert "model churn version 2 [@previous-champion]" in capsys.readouterr().out
    assert main(["lineage", "churn@nope"]) == 1
    assert "has no alias @nope" in capsys.readouterr().err

    for command in ("promote", "rollback", "history", "lineage"):
        assert main([command, "--help"]) == 0
    assert "Example" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("churn", ("churn", "champion", None)),
        ("churn@challenger", ("churn", "challenger", None)),
        ("churn/3", ("churn", None, "3")),
        ("churn/v3", ("churn", None, "3")),
    ],
)
def test_lineage_refs(ref: str, parsed: tuple) -> None:
    assert parse_ref(ref) == parsed


@pytest.mark.parametrize("ref", ["", "churn@", "churn/x", "a/b/c", "../x", "churn@a@b"])
def test_bad_lineage_refs_are_refused(ref: str) -> None:
    with pytest.raises(PromotionError, match="not a model reference|is not allowed"):
        parse_ref(ref)


def test_lineage_of_a_model_without_champion_is_a_clear_error(project: Path) -> None:
    with pytest.raises(PromotionError, match="model 'ghost' has no alias @champion"):
        nb_mlops.lineage("ghost")


@pytest.fixture
def shell() -> InteractiveShell:
    ip = InteractiveShell.instance()
    ip.register_magics(PromoteMagics)
    return ip


def test_promote_and_lineage_magics_in_text_mode(
    project: Path, shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    set_gates(project, 'metrics = { accuracy = ">= 0.9" }')
    good = make_pipeline_run(pipeline="churn", metrics={"accuracy": 0.95})
    bad = make_pipeline_run(pipeline="churn", metrics={"accuracy": 0.1})
    with pytest.raises(UsageError, match="RUN_ID or --latest"):
        shell.run_line_magic("promote", "")
    # the model defaults to the pipeline's name
    shell.run_line_magic("promote", f"{good} -r first")
    out = capsys.readouterr().out
    assert "PROMOTED: churn version 1 is champion" in out
    with pytest.raises(UsageError, match="BLOCKED: 1 gate"):
        shell.run_line_magic("promote", f"{bad} --model churn")
    assert "FAIL" in capsys.readouterr().out
    with pytest.raises(UsageError, match="--force needs --reason"):
        shell.run_line_magic("promote", f"{bad} --force")
    shell.run_line_magic("lineage", "churn")
    text = capsys.readouterr().out
    assert "model churn version 1 [@champion]" in text and f"← pipeline run {good}" in text
    with pytest.raises(UsageError, match="has no alias @x"):
        shell.run_line_magic("lineage", "churn@x")


def test_promote_panel_needs_force_and_reason_for_a_blocked_run(project: Path) -> None:
    set_gates(project, 'metrics = { accuracy = ">= 0.9" }')
    bad = make_pipeline_run(metrics={"accuracy": 0.5})
    checked = evaluate(bad, model="m")
    panel = PromotePanel(
        checked, lambda reason, force: promote(bad, model="m", reason=reason, force=force)
    )
    # Given a blocked check, the button is disabled until force is ticked and a reason given
    assert checked.status == "BLOCKED" and panel.button.disabled
    assert "FAIL" in panel.table.value and "0.5" in panel.table.value
    panel.force.value = True
    assert panel.button.disabled
    panel.reason.value = "demo day"
    assert not panel.button.disabled
    # When Promote is clicked
    panel.button.click()
    # Then the model is promoted (forced), and the panel says so and disables the button
    assert panel.decision.status == "PROMOTED" and panel.decision.forced
    assert "PROMOTED: m version 1" in panel.message.value and panel.button.disabled
    assert nb_mlops.history("m")[-1].action == "forced-promote"
    bundle = panel._repr_mimebundle_()
    assert (
        "application/vnd.jupyter.widget-view+json" in bundle and "PROMOTED" in bundle["text/plain"]
    )


def test_decision_html_escapes_user_strings() -> None:
    hostile = "<img src=x onerror=alert(1)>"
    decision = Decision(
        status="BLOCKED",
        model=hostile,
        action="check",
        run_id="javascript:alert(1)",
        gates=[GateResult(f"metric:{hostile}", "FAIL", hostile, ">= 1", hostile)],
    )
    rendered = decision_html(decision)
    assert "<img" not in rendered and "&lt;img src=x onerror=alert(1)&gt;" in rendered
