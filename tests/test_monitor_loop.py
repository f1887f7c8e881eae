"""Scoring and checks against a real promoted champion in a real store: runs, lineage, the report,
exit codes, decay with labels, and the policy's alerts and automatic rollback."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from monitor_helpers import clean_environment, fit_model, make_champion, make_frame
from webhook_receiver import webhook_receiver

import nb_mlops
from nb_mlops.cli import main
from nb_mlops.core import store
from nb_mlops.core.config import load_config
from nb_mlops.core.data import snapshot, snapshots
from nb_mlops.core.errors import DataError, PromotionError
from nb_mlops.core.monitoring import checks

CONFIG = (
    '[project]\nname = "demo"\n\n[tool.nb_mlops]\n\n[tool.nb_mlops.monitor]\nlabel = "target"\n'
)


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One project for the module: champion `churn` v1, fitted on `train@v1` (5,000 rows), the
    label column `target` configured."""
    root = tmp_path_factory.mktemp("loop")
    (root / "pyproject.toml").write_text(CONFIG)
    with pytest.MonkeyPatch.context() as mp:
        clean_environment(mp)
        mp.chdir(root)
        make_champion(make_frame(5_000, seed=0))
        snapshot(make_frame(5_000, seed=11), "same", wait=True)
        snapshot(make_frame(5_000, shift=0.6, share=0.6, seed=12), "shifted", wait=True)
        yield root


@pytest.fixture
def here(champion: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(champion)
    return champion


def _local(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


def test_scoring_snapshots_predictions_with_lineage_and_records_a_score_run(here: Path) -> None:
    # When the champion scores a batch
    done = nb_mlops.score("churn@champion", data="same")
    # Then the predictions are the model's, indexed like the input
    frame = make_frame(5_000, seed=11)
    expected = fit_model(make_frame(5_000, seed=0)).predict(frame[["x", "y", "c", "k"]])
    assert done.predictions["prediction"].tolist() == expected.tolist()
    assert (done.input, done.output, done.rows, done.version) == (
        "same@v1",
        "same-predictions@v1",
        5_000,
        "1",
    )
    # And the predictions' snapshot names the model version, the input and the run
    (stored,) = snapshots("same-predictions@v1")
    assert stored.lineage == {
        "model": "churn",
        "model_version": "1",
        "input": "same@v1",
        "input_digest": snapshots("same@v1")[0].digest,
        "run_id": done.run_id,
    }
    # And the run is a FINISHED score run naming model, input and output
    run = store.client(load_config()).get_run(done.run_id)
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert tags["nb_mlops.mode"] == "score"
    assert (tags["nb_mlops.score.model"], tags["nb_mlops.score.version"]) == ("churn", "1")
    assert tags["nb_mlops.score.input"].startswith("same@v1:")
    assert tags["nb_mlops.score.output"] == f"same-predictions@v1:{stored.digest}"
    assert tags["nb_mlops.data.same"].startswith("v1:")
    assert run.data.metrics["rows"] == 5_000


def test_score_from_the_command_line(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", "churn/1", "--data", "shifted@v1", "--out", "scored", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["output"], out["rows"], out["model"]) == ("scored@v1", 5_000, "churn")
    assert main(["score", "churn", "--data", "shifted"]) == 0
    assert capsys.readouterr().out.startswith("SCORED: 5,000 rows of shifted@v1 with churn v1")
    assert main(["score", "nope", "--data", "shifted"]) == 1
    assert "model 'nope' has no alias @champion" in capsys.readouterr().err
    assert main(["score", "churn", "--data", "missing"]) == 1
    assert "no snapshot named 'missing'" in capsys.readouterr().err


def test_a_check_is_a_monitor_run_with_metrics_a_verdict_and_an_html_report(here: Path) -> None:
    # When the champion is checked on a shifted batch
    result = nb_mlops.monitor("churn", data="shifted")
    # Then it drifted against its training snapshot (found through lineage)
    assert (result.verdict, result.exit_code, result.reference) == ("drift", 3, "train@v1")
    assert set(result.drift.drifted) == {"x", "c"}
    assert result.decay is not None and not result.decay.decayed
    # And the run records it
    run = store.client(load_config()).get_run(str(result.run_id))
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["nb_mlops.mode"] == "monitor"
    assert tags["nb_mlops.monitor.verdict"] == "drift"
    assert tags["nb_mlops.monitor.reference"] == "train@v1"
    assert tags["nb_mlops.monitor.data"].startswith("shifted@v1:")
    assert metrics["drift.share"] == 0.5 and metrics["drift.x.drifted"] == 1.0
    assert metrics["drift.x.ks"] == pytest.approx(result.drift.features[0].stats["ks"])
    # And the report is a standalone page with a plot per drifted feature, nothing fetched
    assert result.report_uri is not None
    page = _local(result.report_uri).read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") == 2
    assert not re.search(r"(src|href)=['\"]?https?:", page)
    assert json.loads((_local(result.report_uri).parent / "drift.json").read_text())["verdict"] == (
        "drift"
    )
    # And the monitoring journal holds the check
    last = checks("churn")[-1]
    assert (last["id"], last["verdict"], last["data"]) == (result.run_id, "drift", "shifted@v1")


def test_monitor_exit_codes_say_ok_drift_decay_or_error(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["monitor", "churn", "--data", "same"]) == 0
    assert capsys.readouterr().out.startswith("OK: churn v1 on same@v1")
    assert main(["monitor", "churn", "--data", "shifted", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["exit_code"] == 3
    # labels that no longer follow the model: its accuracy falls, a decay
    flipped = make_frame(3_000, seed=13)
    flipped["target"] = 1 - flipped["target"]
    snapshot(flipped, "flipped", wait=True)
    assert main(["monitor", "churn", "--data", "flipped", "--labels", "target"]) == 4
    out = capsys.readouterr().out
    assert out.startswith("DECAY: churn v1 on flipped@v1") and "accuracy" in out
    assert main(["monitor", "churn", "--data", "nothing"]) == 1
    assert "no snapshot named 'nothing'" in capsys.readouterr().err
    assert main(["monitor", "churn", "--data", "same", "--labels", "nope"]) == 1
    assert "labels 'nope': the data has no such column" in capsys.readouterr().err
    assert main(["monitor", "--help"]) == 0
    assert "Exit status: 0 no drift, 3 drift, 4 decay" in capsys.readouterr().out


def test_decay_compares_the_promoted_metrics_with_labels_from_another_snapshot(
    here: Path,
) -> None:
    batch = make_frame(3_000, seed=14)
    snapshot(batch.drop(columns=["target"]), "unlabelled", wait=True)
    snapshot(batch[["target"]], "truth", wait=True)
    result = nb_mlops.monitor("churn", data="unlabelled", labels="truth@v1:target")
    assert result.decay is not None and result.verdict == "ok"
    (accuracy,) = result.decay.metrics
    promoted = nb_mlops.lineage("churn").metrics["accuracy"]
    model = fit_model(make_frame(5_000, seed=0))
    now = float((model.predict(batch[["x", "y", "c", "k"]]) == batch["target"]).mean())
    assert (accuracy.promoted, accuracy.current) == (promoted, pytest.approx(now))
    assert not accuracy.decayed and result.decay.rows == 3_000
    run = store.client(load_config()).get_run(str(result.run_id))
    assert run.data.metrics["decay.accuracy.current"] == pytest.approx(now)


def test_a_reference_can_be_named_and_the_label_comes_from_configuration(here: Path) -> None:
    result = nb_mlops.monitor("churn", data="shifted", reference="same@v1")
    assert result.reference == "same@v1" and result.labels == "target"
    assert result.decay is not None and "target" not in {f.name for f in result.drift.features}
    # an unlabelled batch: the configured label is absent, drift only
    snapshot(make_frame(1_000, seed=15).drop(columns=["target"]), "nolabel", wait=True)
    assert nb_mlops.monitor("churn", data="nolabel").decay is None


def test_policy_alerts_reach_the_webhook_and_are_journaled(here: Path) -> None:
    with webhook_receiver() as rx:
        (here / "pyproject.toml").write_text(
            CONFIG + f'\n[tool.nb_mlops.monitor.alerts]\nwebhooks = ["{rx.url}"]\nbackoff = 0.01\n'
        )
        try:
            # --no-act decides without sending
            dry = nb_mlops.monitor("churn", data="shifted", act=False)
            assert [(a.name, a.event, a.status) for a in dry.actions] == [
                ("alert", "drift", "planned")
            ]
            assert rx.requests == []
            result = nb_mlops.monitor("churn", data="shifted")
        finally:
            (here / "pyproject.toml").write_text(CONFIG)
        (body,) = rx.bodies("drift")
        assert body["model"] == "churn" and body["check_run_id"] == result.run_id
        assert body["data"] == "shifted@v1" and body["reference"] == "train@v1"
        assert body["summary"].startswith("DRIFT: churn v1 on shifted@v1")
        (action,) = result.actions
        assert (action.name, action.status) == ("alert", "done")
        assert action.reason.startswith(f"policy on_drift = alert: check {result.run_id}")
        journaled = checks("churn")[-1]
        assert journaled["id"] == result.run_id
        assert journaled["actions"][0]["status"] == "done"


def test_scoring_refuses_a_model_whose_files_changed_since_promotion(here: Path) -> None:
    from nb_mlops.core.monitoring import models

    version = models.resolve("churn", cfg=load_config())
    assert version.sha256
    models._CACHE.clear()
    folder = _local(version.source) if version.source.startswith("file:") else Path(version.source)
    requirements = folder / "requirements.txt"
    original = requirements.read_text()
    requirements.write_text(original + "\n# tampered\n")
    try:
        with pytest.raises(nb_mlops.NbMlopsError, match="do not match the digest recorded"):
            nb_mlops.score("churn", data="same")
    finally:
        requirements.write_text(original)


def test_an_unknown_model_or_a_bad_label_is_one_clear_error(here: Path) -> None:
    with pytest.raises(PromotionError, match="model 'ghost' has no alias @champion"):
        nb_mlops.monitor("ghost", data="same")
    with pytest.raises(DataError, match=r"labels 'truth@v1:nope': truth@v1 has no column 'nope'"):
        snapshot(make_frame(10, seed=1)[["target"]], "truth", wait=True)
        nb_mlops.monitor("churn", data="same", labels="truth@v1:nope")


def test_auto_rollback_returns_to_the_previous_champion_when_it_scores_better(
    project: Path,
) -> None:
    with webhook_receiver() as rx:
        (project / "pyproject.toml").write_text(
            '[project]\nname = "demo"\n\n[tool.nb_mlops]\n\n[tool.nb_mlops.monitor.policy]\n'
            'on_decay = "alert"\nauto_rollback = true\nrollback_decay = 0.2\n\n'
            f'[tool.nb_mlops.monitor.alerts]\nwebhooks = ["{rx.url}"]\nbackoff = 0.01\n'
        )
        # Given a good champion v1, replaced by v2 that learnt the labels inverted (its pipeline
        # run reported a fine accuracy: a leak in its evaluation)
        make_champion(make_frame(4_000, seed=0))
        make_champion(make_frame(4_000, seed=1), flip=True, metrics={"accuracy": 0.86})
        assert nb_mlops.lineage("churn").version == "2"
        snapshot(make_frame(3_000, seed=2), "labelled", wait=True)
        # When v2 is checked on labelled data
        result = nb_mlops.monitor("churn", data="labelled", labels="target")
        # Then it decayed, v1 scores better on the same rows, and the policy rolled back to it
        assert result.verdict == "decay" and result.exit_code == 4
        names = [(a.name, a.event, a.status) for a in result.actions]
        assert names == [
            ("rollback", None, "done"),
            ("alert", "rollback", "done"),
            ("alert", "decay", "done"),
        ]
        assert nb_mlops.lineage("churn").version == "1"
        last = nb_mlops.history("churn")[-1]
        assert last.action == "rollback" and last.to_version == "1"
        assert last.reason is not None and last.reason.startswith("policy auto_rollback: check ")
        assert result.run_id in last.reason
        # (the two promotions by hand were announced too; the policy's rollback once, by it)
        events = [b["event"] for b in rx.bodies()]
        assert events == ["promotion", "promotion", "rollback", "decay"]
        assert rx.bodies("rollback")[0]["to_version"] == "1"
