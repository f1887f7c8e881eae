"""Users and approvals: `[promotion] promoters / approvers / require_approval`, promotion requests
approved or rejected by another user, from the CLI, the Python API and the server.

Given a project whose configuration names promoters and approvers and requires approval, when
users (as `NB_MLOPS_USER`, or the Jupyter user) promote, approve and reject, then only the right
users act, a request is decided once, and the journal names requester and approver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from approval_auth import HeaderUsers, NoApprovingForMallory
from promotion_helpers import journal_lines, make_pipeline_run
from webhook_receiver import webhook_receiver

import nb_mlops
from nb_mlops.cli import main
from nb_mlops.core import store
from nb_mlops.core.config import load_config
from nb_mlops.core.config_schema import problems
from nb_mlops.core.errors import ApprovalError, ConfigError, PermissionDenied
from nb_mlops.core.promotion import approvals, approve, promote, reject, rollback

ACCESS = """
[tool.nb_mlops.promotion]
promoters = ["alice", "bob"]
approvers = ["alice", "bob", "carol"]
require_approval = true
"""


def _configure(root: Path, access: str = ACCESS) -> None:
    (root / "pyproject.toml").write_text(
        '[project]\nname = "demo"\n\n[tool.nb_mlops]\n\n[tool.nb_mlops.gates]\n'
        'metrics = { accuracy = ">= 0.5" }\n' + access
    )


def _champion(model: str) -> str | None:
    aliases = store.client(load_config()).get_registered_model(model).aliases
    return None if "champion" not in aliases else str(aliases["champion"])


def _as(monkeypatch: pytest.MonkeyPatch, user: str) -> None:
    monkeypatch.setenv("NB_MLOPS_USER", user)


# --- configuration -------------------------------------------------------------------------------


def test_the_promotion_table_is_checked_and_fails_closed(project: Path) -> None:
    assert problems({"promotion": {"promoters": ["a"], "approvers": ["b"]}}) == []
    assert "promotion.promoter is not a known key; did you mean `promotion.promoters`?" in problems(
        {"promotion": {"promoter": ["a"]}}
    )
    assert any("list of user names" in p for p in problems({"promotion": {"approvers": "bob"}}))
    assert any("true or false" in p for p in problems({"promotion": {"require_approval": "yes"}}))
    assert any(
        "needs promotion.approvers" in p
        for p in problems({"promotion": {"require_approval": True}})
    )
    # a misspelt key never reads as "anyone may promote"
    _configure(project, '[tool.nb_mlops.promotion]\npromoter = ["alice"]\n')
    run = make_pipeline_run()
    with pytest.raises(ConfigError, match="promoter"):
        promote(run, model="churn", who="mallory")


# --- the CLI with two users ----------------------------------------------------------------------


def test_a_request_is_approved_by_another_user_and_journaled_with_both(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _configure(project)
    run = make_pipeline_run()
    capsys.readouterr()
    # a user not among the promoters gets one line naming the user and the key
    _as(monkeypatch, "mallory")
    assert main(["promote", run, "--model", "churn"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'mallory'" in err and "`promoters`" in err
    # alice's promotion becomes a request: gates run, the champion does not move
    _as(monkeypatch, "alice")
    assert main(["promote", run, "--model", "churn", "--reason", "weekly", "--json"]) == 0
    request = json.loads(capsys.readouterr().out)
    assert request["status"] == "PENDING_APPROVAL" and request["gates"][0]["verdict"] == "PASS"
    rid = request["entry_id"]
    [entry] = journal_lines(project, "churn")
    assert (entry["action"], entry["who"], entry["requester"], entry["candidate_run"]) == (
        "request",
        "alice",
        "alice",
        run,
    )
    assert entry["reason"] == "weekly" and entry["gates"][0]["gate"] == "metric:accuracy"
    assert main(["approvals", "churn", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["requester"], r["stale"]) for r in listed] == [(rid, "alice", False)]
    # self-approval is refused
    assert main(["approve", rid]) == 1
    assert "cannot approve it" in capsys.readouterr().err
    # bob approves (by a unique prefix): the champion moves, journaled with requester and approver
    _as(monkeypatch, "bob")
    assert main(["approve", rid[:8], "--reason", "looked at the gates"]) == 0
    assert "PROMOTED: churn version 1" in capsys.readouterr().out
    assert _champion("churn") == "1"
    last = journal_lines(project, "churn")[-2]
    assert (last["action"], last["who"], last["requester"], last["request_id"]) == (
        "promote",
        "bob",
        "alice",
        rid,
    )
    assert last["reason"] == "weekly (approval: looked at the gates)"
    # decided once: a second approval is refused, and nothing is pending
    assert main(["approve", rid]) == 1
    assert "approved already by bob" in capsys.readouterr().err
    assert main(["approvals"]) == 0
    assert "no pending promotion requests" in capsys.readouterr().out
    assert [e.action for e in nb_mlops.history("churn")] == ["request", "promote"]


def test_stale_and_rejected_requests_are_refused(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _configure(project)
    cfg = load_config()
    first, second = make_pipeline_run(cfg), make_pipeline_run(cfg)
    old = promote(first, model="churn", who="alice", cfg=cfg)
    new = promote(second, model="churn", who="alice", cfg=cfg)
    assert approve(new.entry_id or "", who="bob", cfg=cfg).status == "PROMOTED"
    # the first request was made when there was no champion: approving it now is refused
    [pending] = approvals("churn", cfg=cfg)
    assert pending.id == old.entry_id and pending.stale
    with pytest.raises(ApprovalError, match="stale: the champion of churn is now 1"):
        approve(pending.id, who="carol", cfg=cfg)
    assert _champion("churn") == "1"
    # an outsider cannot reject; an approver can, once
    with pytest.raises(PermissionDenied, match="'mallory' may not approve or reject"):
        reject(pending.id, who="mallory", cfg=cfg)
    assert reject(pending.id, reason="stale", who="carol", cfg=cfg).status == "REJECTED"
    with pytest.raises(ApprovalError, match="rejected already by carol"):
        reject(pending.id, who="bob", cfg=cfg)
    assert approvals(cfg=cfg) == []
    entry = journal_lines(project, "churn")[-1]
    assert (entry["action"], entry["who"], entry["requester"]) == ("reject", "carol", "alice")
    # a rollback is a promoter's act and needs no approval
    with pytest.raises(PermissionDenied, match="'carol' may not promote or roll back"):
        rollback("churn", reason="x", who="carol", cfg=cfg)


def test_promoters_alone_limit_who_promotes_without_approval(project: Path) -> None:
    _configure(project, '[tool.nb_mlops.promotion]\npromoters = ["alice"]\n')
    run = make_pipeline_run()
    with pytest.raises(PermissionDenied, match="'bob' may not promote"):
        promote(run, model="churn", who="bob")
    decision = promote(run, model="churn", who="alice")
    assert decision.status == "PROMOTED" and _champion("churn") == "1"
    assert journal_lines(project, "churn")[0]["who"] == "alice"


def test_a_request_tells_the_approvers_webhook_and_the_approval_announces_the_promotion(
    project: Path,
) -> None:
    with webhook_receiver() as rx:
        # Given approval required and a webhook for requests and promotions
        hook = f'webhooks = [{{ url = "{rx.url}", events = ["approval_requested", "promotion"] }}]'
        _configure(project, ACCESS + f"\n[tool.nb_mlops.monitor.alerts]\nbackoff = 0.01\n{hook}\n")
        run = make_pipeline_run()
        # When alice promotes and bob approves
        request = promote(run, model="churn", who="alice")
        approve(str(request.entry_id), who="bob")
        # Then the webhook heard the request (naming it) and then the promotion
        heard = [r["body"] for r in rx.requests]
        assert [b["event"] for b in heard] == ["approval_requested", "promotion"]
        assert heard[0]["request_id"] == request.entry_id and heard[0]["who"] == "alice"
        assert heard[1]["to_version"] == "1" and heard[1]["who"] == "bob"


def test_a_policy_promotion_under_approval_is_a_pending_request_not_a_move(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nb_mlops.core.monitoring.policy import Action, Context, _promote
    from nb_mlops.core.monitoring.settings import parse_settings

    # Given approval required and a retrained run the monitoring policy wants to promote
    _configure(project)
    _as(monkeypatch, "alice")  # the user running the check: a promoter
    run = make_pipeline_run()
    cfg = load_config()
    retrain = Action("retrain", "policy on_drift = retrain", run_id=run)
    ctx = Context(model="churn", version="1", check_id="c" * 32, data="batch@v2", summary="drift")
    # When the policy promotes it
    [action] = _promote(retrain, ctx, parse_settings(cfg.settings.get("monitor")), cfg)
    # Then it is a request waiting for an approver: pending, no version, no champion moved
    assert (action.status, action.version) == ("pending", None), action.detail
    assert action.detail.startswith("PENDING_APPROVAL: request")
    assert [r.run_id for r in approvals("churn")] == [run]
    assert [e.action for e in nb_mlops.history("churn")] == ["request"]


def _approve_process(project: Path, user: str, rid: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nb_mlops.cli", "approve", rid],
        cwd=project,
        env={**os.environ, "NB_MLOPS_USER": user},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_approvers_at_once_exactly_one_wins(project: Path) -> None:
    _configure(project)
    cfg = load_config()
    request = promote(make_pipeline_run(cfg), model="churn", who="alice", cfg=cfg)
    procs = [_approve_process(project, user, request.entry_id or "") for user in ("bob", "carol")]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert sorted(code for code, _, _ in results) == [0, 1], results
    loser = next(err for code, _, err in results if code == 1)
    assert "approved already by" in loser
    moves = [e for e in journal_lines(project, "churn") if e.get("action") == "promote"]
    assert len(moves) == 1 and _champion("churn") == "1"


# --- the server: the deployment's Authorizer decides ------------------------------------------------

pytest_plugins = ["pytest_jupyter.jupyter_server"]
API = ("nb-mlops", "api")
_CACHE = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")


class TestServer:
    @pytest.fixture(autouse=True)
    def _machine_cache(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # pytest-jupyter points HOME at a temp folder: keep the machine's MLflow schema template
        monkeypatch.setenv("XDG_CACHE_HOME", _CACHE)

    @pytest.fixture
    def jp_root_dir(self, tmp_path: Path) -> Path:
        root = tmp_path / "root"
        root.mkdir()
        _configure(root, ACCESS.replace('"carol"]', '"carol", "mallory"]'))
        return root

    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return {
            "ServerApp": {
                "jpserver_extensions": {"nb_mlops.server": True},
                "identity_provider_class": HeaderUsers,
                "authorizer_class": NoApprovingForMallory,
            }
        }

    async def test_approve_is_403_for_the_user_the_authorizer_denies(
        self, jp_fetch: Any, jp_root_dir: Path
    ) -> None:
        from tornado.httpclient import HTTPClientError

        cfg = load_config(jp_root_dir)
        request = promote(make_pipeline_run(cfg), model="churn", who="alice", cfg=cfg)
        rid = request.entry_id or ""

        async def post(
            user: str, verb: str = "approve", *route: str, body: str = "{}"
        ) -> tuple[int, dict[str, Any]]:
            try:
                response = await jp_fetch(
                    *API,
                    *(route or ("approvals", rid, verb)),
                    method="POST",
                    body=body,
                    headers={"X-Test-User": user},
                )
            except HTTPClientError as exc:
                assert exc.response is not None
                return exc.code, json.loads(exc.response.body)
            return response.code, json.loads(response.body)

        listed = json.loads((await jp_fetch(*API, "approvals", params={"model": "churn"})).body)
        assert [r["id"] for r in listed["requests"]] == [rid]
        assert (await post("mallory"))[0] == 403  # the Authorizer says no
        rollback = ("models", "churn", "rollback")
        assert (await post("mallory", "", *rollback, body='{"reason": "x"}'))[0] == 403
        job = '{"path": "nb.ipynb", "action": "promote", "model": "churn"}'
        assert (await post("mallory", "", "jobs", body=job))[0] == 403
        code, data = await post("alice")
        assert code == 409 and "cannot approve it" in data["message"]  # her own request
        code, data = await post("bob")
        assert code == 200 and data["status"] == "PROMOTED" and data["requester"] == "alice"
        code, data = await post("carol", "reject")
        assert code == 409 and "approved already by bob" in data["message"]
        last = journal_lines(jp_root_dir, "churn")[-2]
        assert (last["action"], last["who"], last["requester"]) == ("promote", "bob", "alice")


def _post(port: int, path: str, user: str, token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/nb-mlops/api/{path}",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"token {token}", "X-Test-User": user},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_a_real_jupyter_server_asks_the_configured_authorizer(
    project: Path, tmp_path: Path
) -> None:
    """`jupyter server` started as a site would, with its own Authorizer in its configuration:
    mallory is an approver for the project, but the site says no → 403; bob approves → 200."""
    from jupyter_proc import start, stop

    _configure(project, ACCESS.replace('"carol"]', '"carol", "mallory"]'))
    cfg = load_config()
    rid = promote(make_pipeline_run(cfg), model="churn", who="alice", cfg=cfg).entry_id or ""
    config_dir = tmp_path / "jupyter-config"
    config_dir.mkdir()
    (config_dir / "jupyter_server_config.json").write_text(
        json.dumps(
            {
                "ServerApp": {
                    "jpserver_extensions": {"nb_mlops.server": True},
                    "identity_provider_class": "approval_auth.HeaderUsers",
                    "authorizer_class": "approval_auth.NoApprovingForMallory",
                }
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NB_MLOPS_", "JUPYTER_"))}
    env["JUPYTER_CONFIG_DIR"] = str(config_dir)
    here = str(Path(__file__).parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    token = "approvals-test-token"
    proc, port = start(project, token=token, env=env, lab=False, log=tmp_path / "jupyter.log")
    try:
        assert _post(port, f"approvals/{rid}/approve", "mallory", token)[0] == 403
        code, data = _post(port, f"approvals/{rid}/approve", "bob", token)
        assert code == 200 and data["status"] == "PROMOTED", data
    finally:
        stop(proc)
    last = journal_lines(project, "churn")[-2]
    assert (last["action"], last["who"], last["requester"]) == ("promote", "bob", "alice")
