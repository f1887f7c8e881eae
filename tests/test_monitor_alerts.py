"""Alert webhooks against a real local HTTP receiver: JSON and Slack payloads, event filters,
retries on 5xx and 429, no retry on other 4xx, timeouts, unreachable receivers, secret URLs, and
the events of promotions and rollbacks made by hand."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from model_helpers import tracked_pipeline_run
from webhook_receiver import webhook_receiver

from nb_mlops.core.monitoring.alerts import event_payload, notify, redact
from nb_mlops.core.monitoring.settings import parse_settings


def _alerts(hooks: list, **more: object) -> object:
    return parse_settings({"alerts": {"webhooks": hooks, "backoff": 0.01, **more}}).alerts


def test_an_event_reaches_json_and_slack_webhooks_as_their_format() -> None:
    with webhook_receiver() as rx:
        settings = _alerts([rx.url, {"url": rx.url + "/slack", "format": "slack"}])
        payload = event_payload("drift", "churn", "2 of 4 features drifted", share=0.5)
        # When a drift event is sent
        deliveries = notify("drift", payload, settings)
        # Then both webhooks answered 2xx on the first attempt
        assert [(d.ok, d.attempts, d.status) for d in deliveries] == [(True, 1, 200)] * 2
        plain, slack = (r["body"] for r in rx.requests)
        assert plain["event"] == "drift" and plain["model"] == "churn" and plain["share"] == 0.5
        assert plain["when"].endswith("Z")
        assert slack["text"].startswith(":warning: nb_mlops drift: 2 of 4 features drifted")
        assert slack["blocks"][0]["type"] == "section" and "*model*: churn" in str(slack)
        assert {r["content_type"] for r in rx.requests} == {"application/json"}


def test_webhooks_receive_only_the_events_they_subscribe_to() -> None:
    with webhook_receiver() as rx:
        settings = _alerts(
            [{"url": rx.url, "events": ["rollback"]}, rx.url + "/all"], events=["drift", "rollback"]
        )
        notify("drift", event_payload("drift", "m", "x"), settings)
        notify("decay", event_payload("decay", "m", "x"), settings)  # nobody subscribed
        notify("rollback", event_payload("rollback", "m", "x"), settings)
        assert [(r["path"], r["body"]["event"]) for r in rx.requests] == [
            ("/hooks/secret-token/all", "drift"),
            ("/hooks/secret-token", "rollback"),
            ("/hooks/secret-token/all", "rollback"),
        ]


def test_server_errors_and_429_are_retried_until_an_answer() -> None:
    with webhook_receiver() as rx:
        rx.answers = [(500, 0), (503, 0), (429, 0), (200, 0)]
        rx.headers = {"Retry-After": "0"}
        (delivery,) = notify("drift", event_payload("drift", "m", "x"), _alerts([rx.url]))
        assert (delivery.ok, delivery.attempts, delivery.status) == (True, 4, 200)
        assert len(rx.requests) == 4


def test_a_refusal_is_final_and_retries_run_out() -> None:
    with webhook_receiver() as rx:
        rx.answers = [(404, 0)]
        (refused,) = notify("drift", event_payload("drift", "m", "x"), _alerts([rx.url]))
        assert (refused.ok, refused.attempts, refused.error) == (False, 1, "HTTP 404 Not Found")
        rx.answers = [(500, 0)] * 5
        (failed,) = notify("drift", event_payload("drift", "m", "x"), _alerts([rx.url], retries=2))
        assert (failed.ok, failed.attempts, failed.status) == (False, 3, 500)


def test_a_slow_receiver_times_out_and_is_retried() -> None:
    with webhook_receiver() as rx:
        # the slow answer comes well after the timeout, and the timeout leaves a loaded machine
        # ample time for the prompt one
        rx.answers = [(200, 6.0), (200, 0)]
        settings = _alerts([rx.url], timeout=2.0, retries=1)
        (delivery,) = notify("drift", event_payload("drift", "m", "x"), settings)
        assert (delivery.ok, delivery.attempts) == (True, 2)


def test_an_unreachable_receiver_fails_without_raising_and_hides_the_url() -> None:
    # a port nobody listens on: bind one, close it
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T000/B000/very-secret"
    (delivery,) = notify("drift", event_payload("drift", "m", "x"), _alerts([url], retries=1))
    assert not delivery.ok and delivery.attempts == 2
    assert delivery.error is not None and delivery.error.startswith("cannot connect")
    assert "very-secret" not in delivery.webhook and delivery.webhook.startswith(
        f"http://127.0.0.1:{port}/…"
    )
    assert redact("https://hooks.example.com/services/A/B") == "https://hooks.example.com/…"


def test_a_webhook_url_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with webhook_receiver() as rx:
        monkeypatch.setenv("NB_MLOPS_TEST_HOOK", rx.url)
        settings = _alerts([{"url_env": "NB_MLOPS_TEST_HOOK", "format": "slack"}])
        (delivery,) = notify("decay", event_payload("decay", "m", "accuracy fell"), settings)
        assert delivery.ok and "$NB_MLOPS_TEST_HOOK" in delivery.webhook
        assert "secret-token" not in delivery.webhook
        assert rx.bodies()[0]["text"].endswith("accuracy fell")


def test_unknown_events_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown event 'boom'"):
        event_payload("boom", "m", "x")


def test_a_promotion_and_a_rollback_reach_the_webhooks_subscribed_to_them(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import nb_mlops
    from nb_mlops.core.config import load_config

    cell = "from sklearn.linear_model import LogisticRegression\nm = LogisticRegression().fit(X, y)"
    namespace = {"X": [[0.0], [1.0], [2.0], [3.0]], "y": [0, 0, 1, 1]}
    with webhook_receiver() as rx:
        # Given a webhook for promotions and rollbacks, and one for drift only
        with (project / "pyproject.toml").open("a") as fh:
            fh.write(
                "\n[tool.nb_mlops.monitor.alerts]\nbackoff = 0.01\nwebhooks = [\n"
                f'  {{ url = "{rx.url}/moves", events = ["promotion", "rollback"] }},\n'
                f'  {{ url = "{rx.url}/drift", events = ["drift"] }},\n]\n'
            )
        first = tracked_pipeline_run(load_config(), cell, dict(namespace))
        second = tracked_pipeline_run(load_config(), cell, dict(namespace))
        # When two runs are promoted by hand and the champion rolled back
        nb_mlops.promote(first, model="churn")
        nb_mlops.promote(second, model="churn")
        nb_mlops.rollback("churn", reason="bad batch")
        # Then the moves webhook heard each, in order, with the versions; the drift one nothing
        moves = [r["body"] for r in rx.requests]
        assert [r["path"].rsplit("/", 1)[-1] for r in rx.requests] == ["moves"] * 3
        assert [(m["event"], m["to_version"]) for m in moves] == [
            ("promotion", "1"),
            ("promotion", "2"),
            ("rollback", "1"),
        ]
        assert moves[1]["run_id"] == second and moves[2]["reason"] == "bad batch"
        assert all(m["model"] == "churn" and m["who"] for m in moves)
    # And a webhook that cannot be reached warns but never undoes the move
    third = tracked_pipeline_run(load_config(), cell, dict(namespace))
    assert nb_mlops.promote(third, model="churn").status == "PROMOTED"
    assert "the promotion alert to" in capsys.readouterr().err
    assert nb_mlops.history("churn")[-1].to_version == "3"
