"""The registry and the broker's provisioning, built from nakhon's settings: for the composition root
(`nakhon/app.py`) and the field-work commands (`nakhon devices ...`, `nakhon alerts ...`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from collectors.mapping.profiles import Profile, ProfileError, all_profiles
from gateway.broker.dynsec import MosquittoProvisioner
from gateway.errors import ConflictError, ProvisioningError
from gateway.registry.schemas import ProfileSpec
from gateway.registry.store import RegistryStore
from gateway.service import DeviceService
from nakhon.collector_wiring import mqtt_endpoint
from nakhon.config import ConfigError, Settings
from rules.store import AlertStore

log = logging.getLogger(__name__)


def open_registry(settings: Settings) -> RegistryStore:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    profiles = load_mapping_profiles(settings)
    store = RegistryStore(settings.registry.url, mapping_profiles={p.name: p.feed for p in profiles.values()})
    store.migrate()
    sync_profiles(store, profiles)
    return store


def load_mapping_profiles(settings: Settings) -> dict[str, Profile]:
    """The shipped mapping profiles and those of `[domain] profiles_dir`; a bad file is a `ConfigError`."""
    try:
        return all_profiles(settings.domain.profiles_dir)
    except ProfileError as exc:
        raise ConfigError(f"domain.profiles_dir: {exc}") from None


def sync_profiles(store: RegistryStore, profiles: dict[str, Profile]) -> list[str]:
    """Give every loaded mapping profile its registry row (its settings, under its name) when missing."""
    specs = [
        ProfileSpec(
            name=p.name, feed=p.feed, description=p.description[:200], expected_fields=p.expected_fields,
            default_thresholds=p.default_thresholds, heartbeat_s=p.heartbeat_s,
        )
        for p in profiles.values()
    ]
    try:
        return store.profiles.ensure(specs, actor="profiles")
    except ConflictError as exc:
        raise ConfigError(f"domain.profiles_dir: {exc}") from None


def make_provisioner(settings: Settings) -> MosquittoProvisioner | None:
    """The Mosquitto dynamic-security provisioner, when an admin account is configured (else None)."""
    gateway = settings.gateway
    if not gateway.mqtt_admin_username or gateway.mqtt_admin_password is None:
        return None
    endpoint = mqtt_endpoint(settings)
    return MosquittoProvisioner(
        endpoint.host,
        endpoint.port,
        gateway.mqtt_admin_username,
        gateway.mqtt_admin_password.get_secret_value(),
        client_id=gateway.mqtt_client_id,
    )


def service_account_names(settings: Settings) -> frozenset[str]:
    """The broker's service accounts and client ids as configured: no device may be named like one."""
    names = {settings.mqtt.client_id, settings.gateway.mqtt_client_id}
    username = settings.mqtt.parsed_url().username
    if username:
        names.add(username)
    if settings.gateway.mqtt_admin_username:
        names.add(settings.gateway.mqtt_admin_username)
    return frozenset(names)


def open_alert_store(settings: Settings) -> AlertStore:
    open_registry(settings)  # the alert tables live in the registry database and migrate with it
    return AlertStore(settings.registry.url)


async def ensure_collector_account(settings: Settings, registry: RegistryStore) -> None:
    """With broker provisioning configured, make sure the collectors' own MQTT account exists and may
    subscribe to every device topic (also as `$share/nakhon/...` members) before they connect."""
    provisioner = make_provisioner(settings)
    url = settings.mqtt.parsed_url()
    if provisioner is None or not url.username or url.password is None:
        return
    try:
        await DeviceService(registry, provisioner).ensure_collector_account(
            url.username, url.password.get_secret_value(), actor="nakhon run", client_id=settings.mqtt.client_id
        )
        if await provisioner.pin_admin_account():
            log.info("pinned the broker admin account to client id %s", settings.gateway.mqtt_client_id)
    finally:
        await provisioner.close()


async def check_broker_at_start(registry: RegistryStore, provisioner: Any) -> None:
    """Pin the admin account and report (not repair) every registry/broker difference, as
    `nakhon devices reconcile` would; a broker that is down is a warning, not a reason not to serve."""
    try:
        if await provisioner.pin_admin_account():
            log.info("pinned the broker admin account to its client id")
        report = await DeviceService(registry, provisioner).reconcile(fix=False, actor="nakhon run gateway")
    except ProvisioningError as exc:
        log.warning("could not compare the registry with the broker at start: %s", exc)
        return
    for difference in report.differences:
        log.warning("registry and broker disagree: %s (run `nakhon devices reconcile --fix`)", difference)


def import_devices_csv(settings: Settings, csv_text: str) -> str:
    """Register devices from CSV text (idempotent upsert); returns a one-line summary."""
    store = open_registry(settings)
    try:
        report = asyncio.run(DeviceService(store, None).import_csv(csv_text, actor="simulator", atomic=False))
    finally:
        store.close()
    return f"{report.created} created, {report.updated} updated, {len(report.errors)} rejected rows"


__all__ = [
    "check_broker_at_start",
    "ensure_collector_account",
    "import_devices_csv",
    "make_provisioner",
    "open_alert_store",
    "open_registry",
    "service_account_names",
    "sync_profiles",
]
