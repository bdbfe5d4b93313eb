"""`nakhon devices reconcile`: compare what the registry says about each device's MQTT account with what the
broker enforces, print every difference, and with `fix` repair it. Also run (report only) at gateway start.

Differences and their repair:
- `missing_on_broker`: the registry says the device has credentials, the broker has no such account.
  Repair: the registry forgets the credentials (a password cannot be re-created from its hash); rotate them.
- `orphan_on_broker`: a device account on the broker (made by nakhon, by its textname) that no active device of
  the registry owns (retired, deleted, a create that failed half-way). Repair: delete it (and its role).
- `not_pinned`: the account may connect with any client id. Repair: pin it to its username.
- `wrong_topic`: the account's role allows other topics than the registry's. Repair: move the permission.
- `legacy_username`: the account is named after the device id, from before namespaced accounts. Not repaired
  automatically (the device's configuration would change): rotate the credentials to move it to `device.<id>`.
Every run is audited (`broker.reconcile`), and so is every repair.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.broker.dynsec import DeviceAccount, Provisioner, device_account
from gateway.registry.schemas import topic_for
from gateway.registry.store import RegistryStore


@dataclass(frozen=True, slots=True)
class Difference:
    device_id: str
    kind: str
    detail: str
    fixed: bool = False

    def __str__(self) -> str:
        state = "fixed" if self.fixed else "not fixed"
        return f"{self.device_id}\t{self.kind}\t{self.detail}\t({state})"


@dataclass(slots=True)
class ReconcileReport:
    differences: list[Difference] = field(default_factory=list)

    @property
    def unfixed(self) -> list[Difference]:
        return [d for d in self.differences if not d.fixed]


async def reconcile(
    store: RegistryStore, broker: Provisioner, *, fix: bool, actor: str
) -> ReconcileReport:
    accounts = await broker.device_accounts()
    rows = await asyncio.to_thread(store.devices.broker_view)
    report = ReconcileReport()
    owned: set[str] = set()

    async def note(device_id: str, kind: str, detail: str, repair: object = None) -> None:
        fixed = False
        if fix and repair is not None:
            await repair  # type: ignore[misc]
            fixed = True
            await asyncio.to_thread(
                store.audit.record, actor=actor, action=f"broker.reconcile.{kind}", entity_type="device",
                entity_id=device_id, after={"detail": detail},
            )
        elif repair is not None and hasattr(repair, "close"):
            repair.close()  # the coroutine that was not needed
        report.differences.append(Difference(device_id, kind, detail, fixed))

    for device_id, status, city, feed, username, has_password in rows:
        if status != "active" or username is None or not has_password:
            continue
        owned.add(username)
        account: DeviceAccount | None = accounts.get(username)
        if account is None:
            await note(device_id, "missing_on_broker", f"no broker account {username!r}",
                       asyncio.to_thread(store.devices.clear_credentials, device_id, actor=actor))
            continue
        if username != device_account(device_id):
            await note(device_id, "legacy_username",
                       f"account {username!r} predates namespaced accounts: rotate credentials to move it to "
                       f"{device_account(device_id)!r}")
        if account.client_id != username:
            await note(device_id, "not_pinned", f"account {username!r} may connect with any client id",
                       broker.pin_client(username, username))
        topic = topic_for(city, feed, device_id)
        if not account.topics:
            await note(device_id, "wrong_topic", f"broker allows no topic, registry says {topic!r}: rotate credentials")
        elif account.topics != (topic,):
            stale = [t for t in account.topics if t != topic]
            await note(device_id, "wrong_topic", f"broker allows {list(account.topics)}, registry says {topic!r}",
                       _move(broker, device_id, stale, topic))
    for username, account in sorted(accounts.items()):
        if username not in owned:
            # the device's role stays while another account of the same device (the one it owns) still uses it
            shared = any(u != username and a.device_id == account.device_id for u, a in accounts.items())
            await note(account.device_id, "orphan_on_broker",
                       f"broker account {username!r} is owned by no active device with credentials",
                       broker.revoke_device_client(account.device_id, username=username, keep_role=shared))
    await asyncio.to_thread(
        store.audit.record, actor=actor, action="broker.reconcile", entity_type="broker", entity_id="devices",
        after={"differences": len(report.differences), "unfixed": len(report.unfixed), "fix": fix},
    )
    return report


async def _move(broker: Provisioner, device_id: str, stale: list[str], topic: str) -> None:
    for old in stale:
        await broker.update_device_topic(device_id, old_topic=old, new_topic=topic)


__all__ = ["Difference", "ReconcileReport", "reconcile"]
