"""Alerts: POST an event to the configured webhooks, with a timeout, retries and a backoff.

An event is a JSON object (`event`, `model`, `summary`, and what the check found); a webhook with
`format = "slack"` gets a Slack-compatible message (`text` plus one mrkdwn block) instead. A
delivery is retried on connection errors, timeouts, HTTP 5xx and 429 (honouring `Retry-After` up
to 30 s); other 4xx answers are final. A failed delivery never raises: it is reported, and the
webhook's URL (often a secret) is shown only as scheme and host.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlparse

from nb_mlops.core.monitoring.settings import EVENTS, AlertSettings, Webhook

__all__ = ["Delivery", "event_payload", "notify", "slack_message"]

_MAX_WAIT = 30.0
_USER_AGENT = "nb_mlops-alerts"


@dataclass
class Delivery:
    """The outcome of sending one event to one webhook.

    Attributes:
        webhook: where it went (scheme and host only) and how it was configured.
        event: the event name.
        ok: the receiver answered 2xx.
        attempts: requests made.
        status: the last HTTP status, or None when no answer came.
        error: what went wrong last, or None.
    """

    webhook: str
    event: str
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def redact(url: str) -> str:
    """`https://hooks.example.com/services/T0/B0/XYZ` → `https://hooks.example.com/…`."""
    parsed = urlparse(url)
    host = parsed.hostname or "?"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{host}{port}/…"


def event_payload(event: str, model: str, summary: str, **facts: Any) -> dict[str, Any]:
    """The JSON body of an event (facts must be JSON-ready)."""
    from nb_mlops.core.promotion.journal import now_iso

    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; events are {', '.join(EVENTS)}")
    return {"event": event, "model": model, "summary": summary, "when": now_iso(), **facts}


def slack_message(payload: dict[str, Any]) -> dict[str, Any]:
    """A Slack-compatible message (`text` for notifications, one mrkdwn block for the channel)."""
    icon = {
        "drift": ":warning:",
        "decay": ":chart_with_downwards_trend:",
        "retrain_blocked": ":no_entry:",
        "retrain_failed": ":x:",
        "promotion": ":rocket:",
        "approval_requested": ":raised_hand:",
        "rollback": ":rewind:",
    }.get(str(payload.get("event")), ":bell:")
    text = f"{icon} nb_mlops {payload.get('event')}: {payload.get('summary')}"
    details = [
        f"*{key}*: {value}"
        for key, value in payload.items()
        if key not in ("event", "summary") and isinstance(value, str | int | float | bool)
    ]
    body = text + ("\n" + "\n".join(details) if details else "")
    return {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": body[:2900]}}],
    }


def _retry_after(exc: urllib.error.HTTPError, fallback: float) -> float:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return min(_MAX_WAIT, max(0.0, float(value))) if value is not None else fallback
    except ValueError:
        return fallback


def post(hook: Webhook, event: str, body: dict[str, Any], settings: AlertSettings) -> Delivery:
    """POST `body` to one webhook, retrying transient failures."""
    data = json.dumps(body, default=str).encode()
    shown = f"{redact(hook.url)} ({hook.source})" if hook.source else redact(hook.url)
    attempts, status, error = 0, None, None
    for attempt in range(settings.retries + 1):
        attempts += 1
        wait = min(_MAX_WAIT, settings.backoff * (2**attempt))
        request = urllib.request.Request(
            hook.url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": _USER_AGENT},
        )
        try:
            with urllib.request.urlopen(request, timeout=settings.timeout) as reply:  # noqa: S310 - http(s) checked in settings
                reply.read(1 << 16)
                return Delivery(shown, event, True, attempts, int(reply.status))
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code} {exc.reason}"
            if exc.code != 429 and exc.code < 500:
                break  # the receiver refused the request itself: retrying changes nothing
            wait = _retry_after(exc, wait) if exc.code == 429 else wait
        except TimeoutError:
            status, error = None, f"no answer within {settings.timeout:g} s"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            status, error = None, f"cannot connect: {reason}"
        if attempt < settings.retries:
            time.sleep(wait)
    return Delivery(shown, event, False, attempts, status, error)


def notify(event: str, payload: dict[str, Any], settings: AlertSettings) -> list[Delivery]:
    """Send `payload` to every webhook subscribed to `event` (in order; failures reported).

    Example:
        >>> body = event_payload("drift", "churn", "3 of 10 features drifted")  # doctest: +SKIP
        >>> [d.ok for d in notify("drift", body, settings.alerts)]              # doctest: +SKIP
        [True]
    """
    out = []
    for hook in settings.webhooks:
        if event not in hook.events:
            continue
        body = slack_message(payload) if hook.format == "slack" else payload
        out.append(post(hook, event, body, settings))
    return out
