"""Notifications: one `Notifier` interface, apprise behind it, and the pipeline of stages
(route -> group -> silence / maintenance / inhibit / quiet hours -> dedup -> queue per receiver -> retry -> record)."""

from rules.notify.base import Notifier, NotifyError, NotifyMessage, PermanentNotifyError, RetryableNotifyError
from rules.notify.memory import MemoryNotifier

__all__ = [
    "MemoryNotifier",
    "Notifier",
    "NotifyError",
    "NotifyMessage",
    "PermanentNotifyError",
    "RetryableNotifyError",
]
