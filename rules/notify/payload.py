"""The webhook payload, version 1 (modelled on Alertmanager's webhook format). Documented in rules/README.md.

    {"version": "1", "schema": "nakhon.notification/v1", "receiver": "ops", "status": "firing" | "resolved",
     "kind": "firing" | "resolved" | "reminder" | "escalation", "groupKey": "...", "groupLabels": {...},
     "commonLabels": {...}, "truncatedAlerts": 0, "title": "...", "message": "..." (the human text),
     "alerts": [ALERT, ...]}

ALERT: alert_id, rule, device_id, device_name, city, district, feed, severity, state, value, threshold,
started_at / fired_at / ended_at (UTC, RFC 3339) and the same as *_bangkok (Asia/Bangkok), message_th, message_en,
ack_url (signed one-click link for this receiver; null once acknowledged or resolved), silence_url (POST a silence
with `silence_matchers`), labels, acknowledged_by / acknowledged_at.

Adding a field is compatible; renaming or removing one raises `version`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rules.notify.render import Renderer
from rules.store import Alert
from rules.timeutil import to_bangkok, to_utc

PAYLOAD_VERSION = "1"
PAYLOAD_SCHEMA = "nakhon.notification/v1"
MAX_ALERTS = 1000  # a storm message lists at most this many alerts (`truncatedAlerts` counts the rest)


def _times(name: str, t_ns: int | None) -> dict[str, str | None]:
    if t_ns is None:
        return {f"{name}_at": None, f"{name}_bangkok": None}
    return {f"{name}_at": to_utc(t_ns).isoformat(), f"{name}_bangkok": to_bangkok(t_ns).isoformat()}


def alert_payload(
    alert: Alert, renderer: Renderer, receiver: str, now_ns: int, device_name: str | None
) -> dict[str, Any]:
    open_unacked = alert.state != "resolved" and alert.ack_ns is None
    out: dict[str, Any] = {
        "alert_id": alert.id,
        "rule": alert.rule,
        "device_id": alert.device_id,
        "device_name": device_name or alert.device_id,
        "city": alert.city,
        "district": alert.district,
        "feed": alert.feed,
        "severity": alert.severity,
        "state": alert.state,
        "value": alert.value,
        "threshold": alert.threshold,
        **_times("started", alert.started_ns),
        **_times("fired", alert.fired_ns),
        **_times("ended", alert.resolved_ns),
        "message_th": alert.message_th,
        "message_en": alert.message_en,
        "ack_url": renderer.ack_url(alert.id, receiver, now_ns) if open_unacked else None,
        "silence_url": f"{renderer.public_url}/api/v1/silences",
        "silence_matchers": [f"rule={alert.rule}", f"device_id={alert.device_id}"],
        "labels": dict(alert.labels),
        "acknowledged_by": alert.ack_by,
        "acknowledged_at": to_utc(alert.ack_ns).isoformat() if alert.ack_ns is not None else None,
    }
    return out


def build_payload(
    *,
    receiver: str,
    kind: str,
    group_key: str,
    group_labels: dict[str, str],
    alerts: Sequence[Alert],
    labels_of: Callable[[Alert], dict[str, str]],
    renderer: Renderer,
    now_ns: int,
    device_name: Callable[[str], str | None],
) -> dict[str, Any]:
    listed = list(alerts)[:MAX_ALERTS]
    all_labels = [labels_of(a) for a in alerts]
    common = dict(all_labels[0]) if all_labels else {}
    for labels in all_labels[1:]:
        common = {k: v for k, v in common.items() if labels.get(k) == v}
    common.pop("alert_id", None)
    status = "firing" if any(a.state != "resolved" for a in alerts) else "resolved"
    return {
        "version": PAYLOAD_VERSION,
        "schema": PAYLOAD_SCHEMA,
        "receiver": receiver,
        "status": status,
        "kind": kind,
        "groupKey": group_key,
        "groupLabels": group_labels,
        "commonLabels": common,
        "truncatedAlerts": len(alerts) - len(listed),
        "alerts": [alert_payload(a, renderer, receiver, now_ns, device_name(a.device_id)) for a in listed],
    }
