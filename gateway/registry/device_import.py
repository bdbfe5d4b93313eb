"""CSV import into the registry: the rows `csv_import.parse_device_csv` validated, upserted with bulk statements
in one transaction with their audit entries.

Parallel imports (or an import and a create) of the same ids or DevEUIs: one commits, the others get a
`ConflictError` (409) and write nothing, on SQLite and PostgreSQL alike (the unique keys decide, not a read).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from core.db import utcnow
from gateway.errors import ConflictError, FieldProblem
from gateway.registry.csv_import import ParsedCsv
from gateway.registry.database import RegistryDatabase, chunks, iso
from gateway.registry.models import AuditEntry, Device
from gateway.registry.profiles import profile_problem, registered_profiles_in
from gateway.registry.schemas import ImportReport, topic_for
from gateway.secrets import redact


class DeviceImport:
    def __init__(self, db: RegistryDatabase) -> None:
        self.db = db

    def apply(self, parsed: ParsedCsv, *, actor: str, atomic: bool, dry_run: bool = False) -> ImportReport:
        """Upsert the parsed rows in one transaction with bulk statements.

        `atomic=True` (the API): any bad row means nothing is written. `atomic=False` (the CLI): good rows are
        written, bad ones reported. Rows equal to what is stored are counted `unchanged` and not audited.
        """
        try:
            return self._apply(parsed, actor=actor, atomic=atomic, dry_run=dry_run)
        except IntegrityError:
            # A parallel import or create of the same ids (or DevEUIs) committed first. The driver's message holds
            # the rows' values: it is not passed on, the caller gets a 409 naming no value.
            raise ConflictError(
                "another import or registration of some of these devices committed at the same time; "
                "nothing was imported: send the file again",
                message_th="มีการนำเข้าหรือลงทะเบียนอุปกรณ์ชุดเดียวกันพร้อมกัน จึงยังไม่ได้นำเข้า โปรดส่งไฟล์อีกครั้ง",
            ) from None

    def _apply(self, parsed: ParsedCsv, *, actor: str, atomic: bool, dry_run: bool) -> ImportReport:
        problems = list(parsed.problems)
        rows = parsed.rows
        created: list[dict[str, Any]] = []
        updated: list[dict[str, Any]] = []
        audits: list[dict[str, Any]] = []
        unchanged = 0
        topic_changes: list[tuple[str, str, str]] = []
        with self.db.transaction() as session:
            profiles = registered_profiles_in(session)
            existing: dict[str, Device] = {}
            ids = [r.spec.device_id for r in rows]
            for chunk in chunks(ids):
                for device in session.scalars(select(Device).where(Device.device_id.in_(chunk))):
                    existing[device.device_id] = device
            euis = [r.spec.dev_eui for r in rows if r.spec.dev_eui]
            eui_owner: dict[str, str] = {}
            for chunk in chunks(euis):
                for eui, owner in session.execute(
                    select(Device.dev_eui, Device.device_id).where(Device.dev_eui.in_(chunk))
                ):
                    eui_owner[str(eui)] = owner
            now = utcnow()
            for row in rows:
                spec = row.spec
                current = existing.get(spec.device_id)
                values: dict[str, Any] = {
                    "feed": spec.feed,
                    "city": spec.city,
                    "district": spec.district,
                    "name": spec.name,
                    "lat": spec.lat,
                    "lon": spec.lon,
                }
                for column in ("profile", "dev_eui", "heartbeat_s"):
                    if column in row.given or current is None:
                        values[column] = getattr(spec, column)
                site = dict(current.site) if current is not None else {}
                for column in row.given:
                    if column.startswith("site_"):
                        key = column[len("site_") :]
                        if key in spec.site:
                            site[key] = spec.site[key]
                        else:
                            site.pop(key, None)
                values["site"] = site
                profile = values.get("profile", current.profile if current else None)
                row_problems: list[FieldProblem] = []
                profile_wrong = profile_problem(profile, spec.feed, profiles, row=row.line)
                if profile_wrong is not None:
                    row_problems.append(profile_wrong)
                eui = values.get("dev_eui")
                if eui and eui_owner.get(eui, spec.device_id) != spec.device_id:
                    row_problems.append(
                        FieldProblem(
                            "dev_eui", f"DevEUI {eui} is registered to device {eui_owner[eui]!r}", row=row.line
                        )
                    )
                if row_problems:
                    problems.extend(row_problems)
                    continue
                if current is None:
                    record = {
                        "device_id": spec.device_id,
                        **values,
                        "status": "active",
                        "maintenance_until": None,
                        "mqtt_username": None,
                        "mqtt_password_hash": None,
                        "created_at": now,
                        "updated_at": now,
                    }
                    created.append(record)
                    audits.append(
                        {
                            "at": now,
                            "actor": actor,
                            "action": "device.import_create",
                            "entity_type": "device",
                            "entity_id": spec.device_id,
                            "before": None,
                            "after": redact({k: iso(v) for k, v in record.items()}),
                        }
                    )
                    continue
                before = {k: getattr(current, k) for k in values}
                if before == values:
                    unchanged += 1
                    continue
                updated.append({"device_id": spec.device_id, **values, "updated_at": now})
                old_topic = topic_for(current.city, current.feed, current.device_id)
                new_topic = topic_for(spec.city, spec.feed, spec.device_id)
                if current.mqtt_password_hash is not None and old_topic != new_topic:
                    topic_changes.append((spec.device_id, old_topic, new_topic))
                audits.append(
                    {
                        "at": now,
                        "actor": actor,
                        "action": "device.import_update",
                        "entity_type": "device",
                        "entity_id": spec.device_id,
                        "before": redact({k: iso(v) for k, v in before.items()}),
                        "after": redact({k: iso(v) for k, v in values.items()}),
                    }
                )
            write = not dry_run and not (atomic and problems)
            if write:
                if created:
                    session.execute(insert(Device), created)
                if updated:
                    session.execute(update(Device), updated)
                if audits:
                    session.execute(insert(AuditEntry), audits)
            else:
                session.rollback()
        problems.sort(key=lambda p: (p.row or 0, p.field))
        report = ImportReport(
            dry_run=dry_run,
            applied=write,
            rows=parsed.total_rows,
            created=len(created),
            updated=len(updated),
            unchanged=unchanged,
            rejected=len({p.row for p in problems}),
            errors=[p.as_dict() for p in problems],
            created_ids=[r["device_id"] for r in created],
            updated_ids=[r["device_id"] for r in updated],
            topic_changes=topic_changes if write else [],
        )
        if write and (created or updated):
            self.db.changed()
        return report
