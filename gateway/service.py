"""Device operations that touch both the registry and the broker, kept consistent with each other.

Order matters for security: credentials are created on the broker before the registry records them (a
registry failure then removes the broker account again), and a device is revoked on the broker before the
registry marks it retired (so "retired" never describes a device that can still publish).
The registry store is synchronous; its calls run in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.broker.dynsec import DynsecCommandError, Provisioner, device_account
from gateway.errors import BrokerNotConfiguredError, ConflictError, FieldProblem, InvalidInputError, ProvisioningError
from gateway.registry.csv_import import parse_device_csv
from gateway.registry.schemas import DeviceOut, DevicePatch, DeviceSpec, ImportReport, reserved_device_id, topic_for
from gateway.registry.store import RegistryStore
from gateway.secrets import hash_password, new_device_password

if TYPE_CHECKING:
    from gateway.reconcile import ReconcileReport

log = logging.getLogger(__name__)

NOTE_EN = "Store this password now: it is shown only once and cannot be recovered (rotate to get a new one)."
NOTE_TH = "โปรดบันทึกรหัสผ่านนี้ทันที ระบบจะแสดงเพียงครั้งเดียวและไม่สามารถกู้คืนได้ (หมุนเวียนรหัสเพื่อออกรหัสใหม่)"


@dataclass(frozen=True, slots=True)
class IssuedCredentials:
    """MQTT credentials as issued: the password exists only here, never in the registry or a log."""

    username: str
    password: str
    topic: str
    client_id: str = ""  # the only MQTT client id this account may connect with (= username)

    def __repr__(self) -> str:
        return f"IssuedCredentials(username={self.username!r}, password='***', topic={self.topic!r})"


def _already_exists(exc: DynsecCommandError) -> bool:
    return "already exists" in exc.error.lower()


class DeviceService:
    def __init__(
        self, store: RegistryStore, provisioner: Provisioner | None, *, reserved_ids: frozenset[str] = frozenset()
    ) -> None:
        self.store = store
        self.provisioner = provisioner
        # The configured service accounts and client ids (the collectors', the gateway's): no device may be named so.
        self.reserved_ids = reserved_ids

    def _check_not_reserved(self, device_id: str) -> None:
        if reserved_device_id(device_id, self.reserved_ids):
            raise InvalidInputError(
                [FieldProblem("device_id", "reserved for the broker's service accounts; choose another device id",
                              value=device_id)]
            )

    def _account_taken(self, device_id: str, username: str) -> ConflictError:
        return ConflictError(
            f"the broker already has an MQTT account {username!r} that this registry did not issue for device "
            f"{device_id!r}; it is not taken over (run `nakhon devices reconcile` to see and repair)",
            message_th="โบรกเกอร์ MQTT มีบัญชีชื่อนี้อยู่แล้วซึ่งไม่ได้ออกโดยทะเบียนนี้ จึงไม่นำมาใช้",
            device_id=device_id,
            username=username,
        )

    def _broker(self, why: str) -> Provisioner:
        if self.provisioner is None:
            raise BrokerNotConfiguredError(f"no MQTT broker is configured: cannot {why}")
        return self.provisioner

    async def create_device(self, spec: DeviceSpec, *, actor: str) -> tuple[DeviceOut, IssuedCredentials | None]:
        """Register the device; with a broker configured, also issue its MQTT account (password returned once)."""
        self._check_not_reserved(spec.device_id)
        if self.provisioner is None:
            return await asyncio.to_thread(self.store.devices.create, spec, actor=actor), None
        if await asyncio.to_thread(self.store.devices.exists, spec.device_id):
            raise ConflictError(
                f"device {spec.device_id!r} is already registered",
                message_th="อุปกรณ์นี้ลงทะเบียนไว้แล้ว",
                device_id=spec.device_id,
            )
        password = new_device_password()
        password_hash = await asyncio.to_thread(hash_password, password)
        username = device_account(spec.device_id)
        try:
            await self.provisioner.create_device_client(spec.device_id, password, city=spec.city, feed=spec.feed)
        except DynsecCommandError as exc:
            if _already_exists(exc):  # a parallel create won, or an account nobody here issued: never adopted
                raise self._account_taken(spec.device_id, username) from None
            raise
        try:
            device = await asyncio.to_thread(
                self.store.devices.create,
                spec,
                actor=actor,
                mqtt_username=username,
                mqtt_password_hash=password_hash,
            )
        except BaseException:
            with contextlib.suppress(Exception):  # undo the broker account; the registry error is what matters
                await self.provisioner.revoke_device_client(spec.device_id, username=username)
            raise
        return device, IssuedCredentials(username, password, device.topic, username)

    async def rotate_credentials(self, device_id: str, *, actor: str) -> IssuedCredentials:
        """A new password at once (the old one stops working, live sessions are dropped); also the first issue
        for devices registered without one (e.g. by CSV import)."""
        broker = self._broker("issue MQTT credentials")
        device = await asyncio.to_thread(self.store.devices.get, device_id)
        if device.status == "retired":
            raise ConflictError(
                f"device {device_id!r} is retired: it gets no credentials",
                message_th="อุปกรณ์นี้ถูกปลดระวางแล้ว",
                device_id=device_id,
            )
        self._check_not_reserved(device_id)
        password = new_device_password()
        password_hash = await asyncio.to_thread(hash_password, password)
        username = device_account(device_id)
        owned = device.mqtt_username  # the broker account this registry issued, if any
        if owned == username:
            try:
                await broker.set_device_password(device_id, password, username=username)
            except DynsecCommandError as exc:
                if "not found" not in exc.error.lower():
                    raise
                # The broker lost the account (e.g. a fresh dynamic-security file): create it again.
                await broker.create_device_client(device_id, password, city=device.city, feed=device.feed)
        else:
            try:
                await broker.create_device_client(device_id, password, city=device.city, feed=device.feed)
            except DynsecCommandError as exc:
                if _already_exists(exc):
                    raise self._account_taken(device_id, username) from None
                raise
            if owned is not None:
                # An account from before namespaces (username = device id, no pinned client id): it is replaced
                # by the pinned one, and deleted only if it is the device account we made.
                with contextlib.suppress(DynsecCommandError):
                    await broker.revoke_device_client(device_id, username=owned, keep_role=True)
        await asyncio.to_thread(
            self.store.devices.set_credentials,
            device_id,
            mqtt_username=username,
            mqtt_password_hash=password_hash,
            actor=actor,
        )
        return IssuedCredentials(username, password, device.topic, username)

    async def update_device(self, device_id: str, patch: DevicePatch, *, actor: str) -> DeviceOut:
        before, after = await asyncio.to_thread(self.store.devices.update, device_id, patch, actor=actor)
        if after.has_mqtt_credentials and before.topic != after.topic:
            try:
                broker = self._broker("move the device's MQTT permission to its new topic")
                await broker.update_device_topic(device_id, old_topic=before.topic, new_topic=after.topic)
            except (ProvisioningError, BrokerNotConfiguredError):
                # Put the registry back so that it keeps describing what the broker enforces.
                undo = DevicePatch.model_validate({"city": before.city, "feed": before.feed})
                await asyncio.to_thread(self.store.devices.update, device_id, undo, actor=f"{actor} (undo)")
                raise
        return after

    async def retire_device(self, device_id: str, *, actor: str) -> DeviceOut:
        device = await asyncio.to_thread(self.store.devices.get, device_id)
        if device.status == "retired":
            return device
        if device.mqtt_username is not None:
            broker = self._broker(f"revoke the MQTT account of {device_id!r} (it would keep working)")
            await broker.revoke_device_client(device_id, username=device.mqtt_username)
        return await asyncio.to_thread(self.store.devices.retire, device_id, actor=actor)

    async def import_csv(
        self,
        text: str,
        *,
        actor: str,
        atomic: bool,
        dry_run: bool = False,
        cities: frozenset[str] | None = None,
    ) -> ImportReport:
        """`cities`: a city-scoped caller may neither add devices to other cities nor change their devices."""
        parsed = await asyncio.to_thread(parse_device_csv, text)
        current = (
            await asyncio.to_thread(self.store.devices.cities_of, [r.spec.device_id for r in parsed.rows])
            if cities is not None
            else {}
        )
        kept = []
        for row in parsed.rows:
            spec = row.spec
            if reserved_device_id(spec.device_id, self.reserved_ids):
                parsed.problems.append(
                    FieldProblem("device_id", "reserved for the broker's service accounts", row=row.line,
                                 value=spec.device_id)
                )
            elif cities is not None and not {spec.city, current.get(spec.device_id, spec.city)} <= cities:
                parsed.problems.append(
                    FieldProblem("city", f"outside the cities this token may change ({', '.join(sorted(cities))})",
                                 row=row.line, value=spec.city)
                )
            else:
                kept.append(row)
        parsed.rows = kept
        report = await asyncio.to_thread(self.store.imports.apply, parsed, actor=actor, atomic=atomic, dry_run=dry_run)
        if report.topic_changes:
            broker = self._broker("move provisioned devices' MQTT permissions to their new topics")
            for device_id, old_topic, new_topic in report.topic_changes:
                try:
                    await broker.update_device_topic(device_id, old_topic=old_topic, new_topic=new_topic)
                except ProvisioningError as exc:
                    # Per row: this device goes back to where the broker still lets it publish; the others moved.
                    _prefix, city, feed, _id = old_topic.split("/", 3)
                    undo = DevicePatch.model_validate({"city": city, "feed": feed})
                    await asyncio.to_thread(self.store.devices.update, device_id, undo, actor=f"{actor} (undo)")
                    report.broker_errors.append(
                        {"device_id": device_id, "error": exc.code, "message": exc.message, "kept_topic": old_topic}
                    )
        return report

    async def ensure_collector_account(
        self, username: str, password: str, *, actor: str, client_id: str | None = None
    ) -> None:
        await self._broker("create the collectors' account").ensure_collector_account(
            username, password, client_id=client_id
        )
        await asyncio.to_thread(
            self.store.audit.record,
            actor=actor,
            action="broker.collector_account",
            entity_type="broker_client",
            entity_id=username,
            after={"username": username, "role": "collectors", "client_id": client_id},
        )

    async def reconcile(self, *, fix: bool, actor: str) -> ReconcileReport:
        """Registry and broker compared (and with `fix`, repaired): see `gateway.reconcile`."""
        from gateway.reconcile import reconcile

        return await reconcile(self.store, self._broker("compare the registry with the broker"), fix=fix, actor=actor)


__all__ = ["NOTE_EN", "NOTE_TH", "DeviceService", "IssuedCredentials", "topic_for"]
