"""Prometheus metrics of the rules engine and notifications (exposed as *_total counters)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

NOTIFICATIONS = Counter(
    "nakhon_notifications",
    "Notification deliveries by receiver and outcome (sent, failed, retried)",
    ["receiver", "outcome"],
)
ALERT_STATE_CHANGES = Counter(
    "nakhon_alerts_state_changes", "Alert state changes by rule and new state", ["rule", "state"]
)
RULES_QUEUE_DROPPED = Counter("nakhon_rules_queue_dropped", "Readings dropped because the rules queue was full")
ALERT_POINT_ERRORS = Counter("nakhon_alert_point_errors", "Alert points the sink callback failed to take")
RECEIVER_QUEUE_DEPTH = Gauge("nakhon_notification_queue_depth", "Messages waiting per receiver", ["receiver"])
ALERT_BATCH_FAILURES = Counter(
    "nakhon_alert_batch_failures", "Alert store batch commits that failed (retried, or dropped after the last try)",
    ["outcome"],
)
RULES_READINGS_EVALUATED = Counter("nakhon_rules_readings_evaluated", "Readings the rules engine has evaluated")
NOTIFICATIONS_FAILING = Gauge(
    "nakhon_notifications_failing",
    "1 while the receiver's last delivery attempt failed (messages stay owed and are retried), else 0",
    ["receiver"],
)
ALERT_BATCH_BUSY = Counter(
    "nakhon_alert_batch_busy",
    "Alert store batch commits that found the SQLite file locked by another writer and went to a thread to wait",
)
ALERT_CANDIDATES = Counter(
    "nakhon_alert_candidates",
    "Pending alerts not shown yet, by rule and outcome: proposed (the condition began to hold), withdrawn (it "
    "cleared before show_pending_after_s or for:), shown (it became an alert), discarded (at start: its rule was "
    "removed, or an open alert of the same rule and device supersedes it)",
    ["rule", "outcome"],
)
