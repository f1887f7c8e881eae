"""The `[tool.nb_mlops.monitor]` table: drift thresholds, decay, alerts and the policy, validated.

Every key is checked once, here: an unknown key, a wrong type or an out-of-range number is a
`ConfigError` naming the key, the value and what is expected. Faces and core read the parsed
`MonitorSettings`, never the raw table.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nb_mlops.core.errors import ConfigError

__all__ = [
    "ACTIONS",
    "EVENTS",
    "STATISTICS",
    "AlertSettings",
    "MonitorSettings",
    "PolicySettings",
    "Webhook",
    "parse_settings",
]

# statistic → (default threshold, what it measures); a feature drifts when any statistic of its
# kind exceeds its threshold (and the noise level of the sample sizes compared)
STATISTICS: dict[str, tuple[float, str]] = {
    "ks": (0.1, "Kolmogorov-Smirnov statistic D (numeric)"),
    "wasserstein": (0.1, "Wasserstein distance in reference standard deviations (numeric)"),
    "psi": (0.1, "population stability index (numeric on reference deciles, categorical)"),
    "js": (0.05, "Jensen-Shannon distance, base 2 (categorical)"),
    "cramers_v": (0.1, "Cramér's V of the chi-square test (categorical)"),
    "missing": (0.05, "change of the missing-value share, absolute"),
}
ACTIONS = ("alert", "retrain", "none")
EVENTS = (
    "drift",
    "decay",
    "retrain_blocked",
    "retrain_failed",
    "promotion",
    "approval_requested",
    "rollback",
)
_TOP = ("label", "ignore", "drift_share", "psi_bins", "decay", "decay_metrics")
_TABLES = ("thresholds", "alerts", "policy")
_ALERT_KEYS = ("webhooks", "events", "timeout", "retries", "backoff")
_HOOK_KEYS = ("url", "url_env", "format", "events")
_POLICY_KEYS = ("on_drift", "on_decay", "auto_promote", "auto_rollback", "rollback_decay")
_WHERE = "[tool.nb_mlops.monitor]"


@dataclass(frozen=True)
class Webhook:
    """One alert receiver.

    Attributes:
        url: where events are POSTed (read from `url_env` when that is given).
        format: "json" (the event as a JSON object) or "slack" (a Slack-compatible message).
        events: the events it receives.
        source: how it was configured, for messages (never the URL itself: it may be a secret).
    """

    url: str
    format: str = "json"
    events: tuple[str, ...] = EVENTS
    source: str = ""


@dataclass(frozen=True)
class AlertSettings:
    """`[tool.nb_mlops.monitor.alerts]`: receivers, a per-attempt timeout and retries."""

    webhooks: tuple[Webhook, ...] = ()
    timeout: float = 5.0
    retries: int = 3
    backoff: float = 0.5


@dataclass(frozen=True)
class PolicySettings:
    """`[tool.nb_mlops.monitor.policy]`: what a check does about what it found.

    Attributes:
        on_drift, on_decay: "alert" (send the event to the webhooks), "retrain" (run the
            production pipeline on the new data, and alert), or "none".
        auto_promote: promote a retrained run through the gates (else it waits for a click).
        auto_rollback: roll back when the champion's decay passes `rollback_decay` and the
            previous champion scores better on the same labelled data.
        rollback_decay: relative worsening that allows an automatic rollback.
    """

    on_drift: str = "alert"
    on_decay: str = "alert"
    auto_promote: bool = False
    auto_rollback: bool = False
    rollback_decay: float = 0.1


@dataclass(frozen=True)
class MonitorSettings:
    """The parsed `[tool.nb_mlops.monitor]` table.

    Attributes:
        thresholds: statistic → threshold (`inf` ignores a statistic).
        drift_share: the data drift when at least this share of the compared features drift.
        psi_bins: reference-quantile bins of the numeric PSI.
        label: the label column (left out of drift; scored for decay when present).
        ignore: columns never compared.
        decay: relative worsening of a metric that counts as decay (0.05 = 5 % worse).
        decay_metrics: the metrics to compare (default: every one that can be recomputed).
    """

    thresholds: Mapping[str, float] = field(
        default_factory=lambda: {k: v for k, (v, _) in STATISTICS.items()}
    )
    drift_share: float = 0.5
    psi_bins: int = 10
    label: str | None = None
    ignore: tuple[str, ...] = ()
    decay: float = 0.05
    decay_metrics: tuple[str, ...] = ()
    alerts: AlertSettings = field(default_factory=AlertSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)


def _fail(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{_WHERE} {key} = {value!r} is invalid: {expected}")


def _unknown(table: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    extra = sorted(set(table) - set(known))
    if extra:
        raise ConfigError(f"unknown key {extra[0]!r} in {where}; known keys: {', '.join(known)}")


def _number(key: str, value: Any, low: float, high: float, allow_inf: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and math.isinf(value) and allow_inf and value > 0:
        return float(value)
    if not ok or not math.isfinite(value) or not (low <= value <= high):
        more = " (or inf to ignore it)" if allow_inf else ""
        raise _fail(key, value, f"give a number from {low:g} to {high:g}{more}")
    return float(value)


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, value, "give true or false")
    return value


def _names(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(key, value, 'give a list of names, e.g. ["id", "timestamp"]')
    return tuple(value)


def _events(key: str, value: Any) -> tuple[str, ...]:
    events = _names(key, value)
    bad = [e for e in events if e not in EVENTS]
    if bad:
        raise _fail(key, value, f"events are {', '.join(EVENTS)}")
    return events


def _table(key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(key, value, "give a table")
    return value


def _webhook(index: int, value: Any, events: tuple[str, ...]) -> Webhook:
    key = f"alerts.webhooks[{index}]"
    if isinstance(value, str):
        value = {"url": value}
    hook = _table(key, value)
    _unknown(hook, _HOOK_KEYS, f"{_WHERE} {key}")
    source = f"{key}.url"
    url = hook.get("url")
    if "url_env" in hook:
        env = hook["url_env"]
        if not isinstance(env, str) or not env:
            raise _fail(f"{key}.url_env", env, "give the name of an environment variable")
        source = f"${env}"
        url = os.environ.get(env) or url
        if not url:
            raise ConfigError(
                f"{_WHERE} {key}: environment variable {env} is not set; set it to the "
                "webhook URL (or remove the webhook)"
            )
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        shown = url if "url_env" not in hook else "(from " + source + ")"
        raise _fail(f"{key}.url", shown, "give an http:// or https:// URL (or url_env = NAME)")
    fmt = hook.get("format", "json")
    if fmt not in ("json", "slack"):
        raise _fail(f"{key}.format", fmt, 'give "json" or "slack"')
    own = _events(f"{key}.events", hook["events"]) if "events" in hook else events
    return Webhook(url=url, format=str(fmt), events=own, source=source)


def _alerts(value: Any) -> AlertSettings:
    table = _table("alerts", value)
    _unknown(table, _ALERT_KEYS, f"{_WHERE[:-1]}.alerts]")
    events = _events("alerts.events", table["events"]) if "events" in table else EVENTS
    hooks = table.get("webhooks", [])
    if isinstance(hooks, str | Mapping):
        hooks = [hooks]
    if not isinstance(hooks, list):
        raise _fail("alerts.webhooks", hooks, "give a list of URLs or {url, format, events} tables")
    retries = table.get("retries", 3)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
        raise _fail("alerts.retries", retries, "give a whole number from 0 to 10")
    return AlertSettings(
        webhooks=tuple(_webhook(i, h, events) for i, h in enumerate(hooks)),
        timeout=_number("alerts.timeout", table.get("timeout", 5.0), 0.1, 300),
        retries=retries,
        backoff=_number("alerts.backoff", table.get("backoff", 0.5), 0, 60),
    )


def _policy(value: Any) -> PolicySettings:
    table = _table("policy", value)
    _unknown(table, _POLICY_KEYS, f"{_WHERE[:-1]}.policy]")
    actions = {}
    for key in ("on_drift", "on_decay"):
        action = table.get(key, "alert")
        if action not in ACTIONS:
            raise _fail(f"policy.{key}", action, f"give one of {', '.join(ACTIONS)}")
        actions[key] = str(action)
    return PolicySettings(
        on_drift=actions["on_drift"],
        on_decay=actions["on_decay"],
        auto_promote=_flag("policy.auto_promote", table.get("auto_promote", False)),
        auto_rollback=_flag("policy.auto_rollback", table.get("auto_rollback", False)),
        rollback_decay=_number("policy.rollback_decay", table.get("rollback_decay", 0.1), 0, 10),
    )


def parse_settings(table: Mapping[str, Any] | None) -> MonitorSettings:
    """Validate `[tool.nb_mlops.monitor]` (the `monitor` table of the configuration).

    Raises:
        ConfigError: an unknown key or a bad value (the message names the key and the value).

    Example:
        >>> parse_settings({"drift_share": 0.3, "thresholds": {"psi": 0.2}}).thresholds["psi"]
        0.2
    """
    if table is None:
        return MonitorSettings()
    table = _table("(the table)", table)
    _unknown(table, _TOP + _TABLES, _WHERE)
    raw = _table("thresholds", table.get("thresholds", {}))
    _unknown(raw, tuple(STATISTICS), f"{_WHERE[:-1]}.thresholds]")
    thresholds = {k: v for k, (v, _) in STATISTICS.items()}
    for name, value in raw.items():
        thresholds[name] = _number(f"thresholds.{name}", value, 0, 1e6, allow_inf=True)
    bins = table.get("psi_bins", 10)
    if isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= 100:
        raise _fail("psi_bins", bins, "give a whole number from 2 to 100")
    label = table.get("label")
    if label is not None and (not isinstance(label, str) or not label):
        raise _fail("label", label, "give the name of the label column")
    return MonitorSettings(
        thresholds=thresholds,
        drift_share=_number("drift_share", table.get("drift_share", 0.5), 0, 1),
        psi_bins=bins,
        label=label,
        ignore=_names("ignore", table.get("ignore", [])) if "ignore" in table else (),
        decay=_number("decay", table.get("decay", 0.05), 0, 10),
        decay_metrics=_names("decay_metrics", table["decay_metrics"])
        if "decay_metrics" in table
        else (),
        alerts=_alerts(table["alerts"]) if "alerts" in table else AlertSettings(),
        policy=_policy(table["policy"]) if "policy" in table else PolicySettings(),
    )
