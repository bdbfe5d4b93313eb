"""The rules component's settings (`rules.service.build_rules_service` builds the component from them)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from rules.acklink import DEFAULT_TTL_S


class RulesSettings(BaseModel):
    database_url: str = "sqlite:///nakhon-alerts.db"  # or postgresql+psycopg://user:pass@host/db
    rules_dir: Path | None = None  # None: the shipped rules/defaults/
    routing_file: Path | None = None  # None: rules/notify/default_routing.yaml (log only)
    public_url: str = "http://localhost:8000"  # for acknowledge links in messages
    queue_size: int = Field(10_000, ge=1)  # readings waiting for the engine
    receiver_queue_size: int = Field(100, ge=1)  # messages waiting per receiver
    tick_interval_s: float = Field(5.0, gt=0)
    # a `for:` rule's condition is stored and shown as a pending alert once it held this long (or fires);
    # a shorter flap is a candidate only (rules/store.py `AlertCandidate`). 0: shown at once.
    show_pending_after_s: float = Field(60.0, ge=0)
    retry_max_attempts: int = Field(0, ge=0)  # 0: retry while the message still matters
    retry_initial_backoff_s: float = Field(2.0, ge=0)
    retry_max_backoff_s: float = Field(60.0, ge=0)  # the longest wait between two attempts (per receiver: `retry.max`)
    notify_timeout_s: float = Field(30.0, gt=0)
    notify_shutdown_grace_s: float = Field(5.0, ge=0)  # at stop, wait this long for owed notifications to go
    ack_link_secret: SecretStr | None = None  # signs acknowledge links; None: ack_link_secret_file
    ack_link_secret_file: Path | None = None  # made once when missing; None (and no secret): per-process secret
    ack_link_ttl_s: float = Field(DEFAULT_TTL_S, gt=0)  # how long a link in a message stays valid
