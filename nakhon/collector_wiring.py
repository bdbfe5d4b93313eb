"""The collectors built from nakhon's settings: sink, MQTT endpoint, inputs, the collector service.
Called by the composition root (`nakhon/app.py`), the quarantine commands and the fault tests."""

from __future__ import annotations

import logging
from typing import Any

from collectors.directory import DeviceDirectory
from collectors.domain import default_enrichers
from collectors.formats import make_format
from collectors.mapping import FieldMapper
from collectors.mapping.profiles import all_profiles
from collectors.pipeline import Input, ReadingConsumer
from collectors.service import CollectorService, DiagnosticsFlush
from collectors.sinks.base import Sink
from collectors.sinks.influx import InfluxV1Sink
from collectors.sinks.sqlite import SQLiteSink
from collectors.transport.mqtt import MqttEndpoint, MQTTv50
from nakhon.config import InputConfig, Settings

log = logging.getLogger(__name__)


def make_sink(settings: Settings) -> Sink:
    """InfluxDB when `influxdb.url` is set, else the embedded SQLite store in the data dir."""
    influx = settings.influxdb
    if influx.url:
        return InfluxV1Sink(
            influx.url,
            influx.database,
            username=influx.username,
            password=influx.password.get_secret_value() if influx.password else None,
            token=influx.token.get_secret_value() if influx.token else None,
            retention_policy=influx.retention_policy,
            gzip=influx.gzip,
            timeout_s=influx.timeout_s,
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteSink(settings.sqlite_store_path)


def mqtt_endpoint(settings: Settings, *, username: str | None = None, password: str | None = None) -> MqttEndpoint:
    url = settings.mqtt.parsed_url()
    return MqttEndpoint(
        host=url.host,
        port=url.port,
        username=username or url.username,
        password=password or (url.password.get_secret_value() if url.password else None),
        tls=url.scheme == "mqtts",
    )


def _format_options(settings: Settings, config: InputConfig) -> dict[str, Any]:
    options = dict(config.options)
    if config.format == "native":
        options.setdefault("prefix", settings.mqtt.topic_prefix)
    return options


def build_inputs(settings: Settings) -> tuple[list[Input], list[str]]:
    """The parsers per topic filter, and the filters to subscribe to ($share/<group>/ when configured)."""
    inputs: list[Input] = []
    subscriptions: list[str] = []
    group = settings.mqtt.shared_group
    for config in settings.mqtt.effective_inputs():
        parser = make_format(config.format, **_format_options(settings, config))
        inputs.append(Input(topics=list(config.topics), format=parser))
        subscriptions.extend(f"$share/{group}/{t}" if group else t for t in config.topics)
    return inputs, subscriptions


def quarantine_limits(settings: Settings) -> dict[str, float]:
    q = settings.quarantine
    return {"max_rows": q.max_rows, "max_bytes": int(q.max_mb * 1024 * 1024), "max_age_s": q.max_age_days * 86400}


def build_collector(
    settings: Settings,
    directory: DeviceDirectory,
    *,
    readings_out: ReadingConsumer | None = None,
    diagnostics_flush: DiagnosticsFlush | None = None,
    sink: Sink | None = None,
    mqtt_protocol: int = MQTTv50,
    client_id: str | None = None,
) -> CollectorService:
    inputs, subscriptions = build_inputs(settings)
    domain = settings.domain
    return CollectorService(
        endpoint=mqtt_endpoint(settings),
        client_id=client_id or settings.mqtt.client_id,
        inputs=inputs,
        subscriptions=subscriptions,
        directory=directory,
        sink=sink or make_sink(settings),
        data_dir=settings.data_dir / "collector",
        spool_max_bytes=int(settings.spool.max_mb * 1024 * 1024),
        batch_points=settings.influxdb.batch_points,
        flush_interval_s=settings.influxdb.flush_interval_s,
        receive_maximum=settings.mqtt.receive_maximum,
        session_expiry_s=settings.mqtt.session_expiry_s,
        keepalive_s=settings.mqtt.keepalive_s,
        reconnect_delay_s=settings.mqtt.reconnect_delay_s,
        reconnect_max_delay_s=settings.mqtt.reconnect_max_delay_s,
        max_payload_bytes=settings.mqtt.max_payload_bytes,
        quarantine_limits=quarantine_limits(settings),
        mapper=FieldMapper(),
        profiles=all_profiles(domain.profiles_dir),
        enrichers=default_enrichers(domain),
        readings_out=readings_out,
        diagnostics_flush=diagnostics_flush,
        protocol_version=mqtt_protocol,
        time_policy=domain.time_policy(),
        feed_sentinels=domain.feed_sentinels(),
    )


__all__ = ["build_collector", "build_inputs", "make_sink", "mqtt_endpoint", "quarantine_limits"]
