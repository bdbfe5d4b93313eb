"""The console's words in Thai and English, and times as people here read them (Asia/Bangkok; Thai dates in
the Buddhist era, as the alert messages write them)."""

from __future__ import annotations

from datetime import datetime

from core.time import BANGKOK, BE_OFFSET, THAI_MONTHS_ABBR
from rules.labels import FEED_EN, FEED_TH, SEVERITY_TH, STATE_TH

TEXT: dict[str, tuple[str, str]] = {  # key: (English, Thai)
    "app": ("nakhon console", "คอนโซลนคร"),
    "devices": ("Devices", "อุปกรณ์"),
    "alerts": ("Alerts", "การแจ้งเตือน"),
    "register": ("Register", "ลงทะเบียน"),
    "import": ("Import CSV", "นำเข้า CSV"),
    "logout": ("Log out", "ออกจากระบบ"),
    "login": ("Log in", "เข้าสู่ระบบ"),
    "username": ("User name", "ชื่อผู้ใช้"),
    "password": ("Password", "รหัสผ่าน"),
    "login_failed": ("Wrong user name or password.", "ชื่อผู้ใช้หรือรหัสผ่านไม่ถูกต้อง"),
    "login_locked": (
        "Too many failed attempts: try again in {s} seconds.",
        "ใส่รหัสผ่านผิดหลายครั้งเกินไป โปรดลองใหม่ในอีก {s} วินาที",
    ),
    "bad_form": ("The form expired: please try again.", "แบบฟอร์มหมดอายุ โปรดลองอีกครั้ง"),
    "role": ("Role", "สิทธิ์"),
    "all_cities": ("all cities", "ทุกเมือง"),
    "city": ("City", "เมือง"),
    "district": ("District", "เขต/อำเภอ"),
    "feed": ("Feed", "ประเภทข้อมูล"),
    "status": ("Status", "สถานะ"),
    "any": ("any", "ทั้งหมด"),
    "filter": ("Filter", "กรอง"),
    "device_id": ("Device id", "รหัสอุปกรณ์"),
    "name": ("Name", "ชื่อ"),
    "health": ("Health", "สภาพ"),
    "last_seen": ("Last seen", "ส่งข้อมูลล่าสุด"),
    "battery": ("Battery", "แบตเตอรี่"),
    "never": ("never", "ยังไม่เคย"),
    "no_devices": ("No devices match.", "ไม่มีอุปกรณ์ที่ตรงเงื่อนไข"),
    "health_reporting": ("reporting", "ส่งข้อมูลปกติ"),
    "health_late": ("late", "ล่าช้า"),
    "health_silent": ("silent", "เงียบ"),
    "health_maintenance": ("in maintenance", "อยู่ระหว่างบำรุงรักษา"),
    "health_quarantining": ("quarantining", "ข้อมูลถูกกักกัน"),
    "health_retired": ("retired", "ปลดระวางแล้ว"),
    "status_active": ("active", "ใช้งาน"),
    "status_retired": ("retired", "ปลดระวางแล้ว"),
    "registry": ("Registry", "ข้อมูลทะเบียน"),
    "topic": ("MQTT topic", "หัวข้อ MQTT"),
    "location": ("Location", "ตำแหน่ง"),
    "profile": ("Profile", "โปรไฟล์"),
    "heartbeat_s": ("Expected every (s)", "ส่งข้อมูลทุก (วินาที)"),
    "maintenance_until": ("Maintenance until", "บำรุงรักษาถึง"),
    "credentials": ("MQTT credentials", "รหัส MQTT"),
    "yes": ("yes", "มี"),
    "no": ("no", "ไม่มี"),
    "recent_messages": ("Last 20 raw messages", "ข้อความดิบ 20 รายการล่าสุด"),
    "received": ("Received", "ได้รับเมื่อ"),
    "payload": ("Payload", "ข้อมูล"),
    "outcome": ("Outcome", "ผล"),
    "accepted": ("accepted", "รับแล้ว"),
    "rejected": ("rejected", "ปฏิเสธ"),
    "no_messages": ("No messages yet.", "ยังไม่มีข้อความ"),
    "quarantine": ("Quarantine", "ข้อความที่ถูกกักกัน"),
    "reason": ("Reason", "เหตุผล"),
    "no_quarantine": ("Nothing quarantined.", "ไม่มีข้อความที่ถูกกักกัน"),
    "open_alerts": ("Open alerts", "การแจ้งเตือนที่ยังเปิดอยู่"),
    "no_alerts": ("No open alerts.", "ไม่มีการแจ้งเตือนที่เปิดอยู่"),
    "history": ("Who did what", "ประวัติการดำเนินการ"),
    "when": ("When", "เมื่อ"),
    "who": ("Who", "ผู้ดำเนินการ"),
    "action": ("Action", "การดำเนินการ"),
    "actions": ("Actions", "ดำเนินการ"),
    "maintenance": ("Maintenance window", "ช่วงบำรุงรักษา"),
    "hours": ("hours", "ชั่วโมง"),
    "start_maintenance": ("Start maintenance", "เริ่มบำรุงรักษา"),
    "end_maintenance": ("End maintenance now", "สิ้นสุดการบำรุงรักษาทันที"),
    "rotate": ("Rotate credentials", "ออกรหัสผ่านใหม่"),
    "retire": ("Retire device", "ปลดระวางอุปกรณ์"),
    "retire_confirm": ("Retire this device? Its MQTT account stops working at once.",
                       "ปลดระวางอุปกรณ์นี้หรือไม่ บัญชี MQTT ของอุปกรณ์จะใช้งานไม่ได้ทันที"),
    "read_only": ("Your role can only read.", "สิทธิ์ของคุณดูข้อมูลได้อย่างเดียว"),
    "creds_title": ("MQTT credentials — shown only once", "รหัส MQTT — แสดงเพียงครั้งเดียว"),
    "creds_note": (
        "Store this password now: it cannot be shown again (rotate to get a new one).",
        "โปรดบันทึกรหัสผ่านนี้ทันที ระบบจะไม่แสดงอีก (ออกรหัสผ่านใหม่ได้ด้วยการหมุนเวียนรหัส)",
    ),
    "example": ("Try it", "ทดลองส่ง"),
    "copy": ("Copy", "คัดลอก"),
    "copied": ("Copied", "คัดลอกแล้ว"),
    "open_device": ("Open the device page", "ไปที่หน้าอุปกรณ์"),
    "register_title": ("Register a device", "ลงทะเบียนอุปกรณ์"),
    "lat": ("Latitude", "ละติจูด"),
    "lon": ("Longitude", "ลองจิจูด"),
    "submit_register": ("Register and issue credentials", "ลงทะเบียนและออกรหัส"),
    "form_errors": ("Please correct the fields marked below.", "โปรดแก้ไขช่องที่ระบุด้านล่าง"),
    "import_title": ("Import devices from CSV", "นำเข้าอุปกรณ์จากไฟล์ CSV"),
    "import_help": (
        "Columns device_id, feed, city, district, lat, lon, name (UTF-8). Nothing is applied until every row is valid.",
        "คอลัมน์ device_id, feed, city, district, lat, lon, name (UTF-8) ระบบจะไม่บันทึกข้อมูลใดจนกว่าทุกแถวจะถูกต้อง",
    ),
    "file": ("CSV file", "ไฟล์ CSV"),
    "submit_import": ("Check and import", "ตรวจสอบและนำเข้า"),
    "import_refused": ("{n} row(s) are invalid: nothing was imported.", "มี {n} แถวที่ไม่ถูกต้อง จึงไม่ได้นำเข้าข้อมูลใดเลย"),
    "import_done": ("Imported: {c} created, {u} updated, {s} unchanged.",
                    "นำเข้าแล้ว: เพิ่ม {c} แก้ไข {u} ไม่เปลี่ยนแปลง {s}"),
    "line": ("Line", "บรรทัด"),
    "column": ("Column", "คอลัมน์"),
    "problem": ("Problem", "ปัญหา"),
    "bad_value": ("Invalid value", "ค่าในช่องนี้ไม่ถูกต้อง"),
    "alerts_title": ("Active alerts", "การแจ้งเตือนที่ยังไม่คลี่คลาย"),
    "severity": ("Severity", "ระดับ"),
    "state": ("State", "สถานะ"),
    "started": ("Started", "เริ่มเมื่อ"),
    "value": ("Value", "ค่า"),
    "acked_by": ("Acknowledged by {who}, {when}", "รับทราบโดย {who} เมื่อ {when}"),
    "comment": ("Comment", "หมายเหตุ"),
    "acknowledge": ("Acknowledge", "รับทราบ"),
    "silence": ("Silence", "ปิดเสียงแจ้งเตือน"),
    "matchers": ("Matchers (one per line, e.g. city=laem-chabang)", "เงื่อนไข (บรรทัดละหนึ่ง เช่น city=laem-chabang)"),
    "duration": ("Duration", "ระยะเวลา"),
    "silences": ("Active silences", "การปิดเสียงที่มีผลอยู่"),
    "no_silences": ("No active silences.", "ไม่มีการปิดเสียง"),
    "ends": ("Ends", "สิ้นสุด"),
    "created_by": ("By", "โดย"),
    "silence_city_needed": ("Name one of your cities in a city= matcher.", "โปรดระบุเมืองที่คุณดูแลในเงื่อนไข city="),
    "bad_matcher": ("Not a matcher: {m}", "เงื่อนไขไม่ถูกต้อง: {m}"),
    "live": ("live", "อัปเดตอัตโนมัติ"),
    "paused": ("updates paused", "หยุดอัปเดตชั่วคราว"),
    "forbidden": ("Your role may not do this.", "สิทธิ์ของคุณไม่สามารถดำเนินการนี้ได้"),
    "not_found": ("Not found.", "ไม่พบข้อมูล"),
    "error": ("Something went wrong", "เกิดข้อผิดพลาด"),
    "done": ("Done.", "ดำเนินการแล้ว"),
    "no_broker": ("No MQTT broker is configured: no credentials were issued.",
                  "ยังไม่ได้ตั้งค่าโบรกเกอร์ MQTT จึงยังไม่ได้ออกรหัส"),
    "alerts_in_group": ("{n} alert(s)", "{n} รายการ"),
    "lang_switch": ("ภาษาไทย", "English"),
}

ROLE_TH = {"admin": "ผู้ดูแลระบบ", "engineer": "วิศวกร", "operator": "เจ้าหน้าที่เวร", "viewer": "ผู้ดูข้อมูล"}
SEVERITY_EN = {"info": "info", "warning": "warning", "critical": "critical"}


class Words:
    """`t("key", n=3)` in one language; missing keys fail loudly in tests, never show a blank."""

    def __init__(self, lang: str) -> None:
        self.lang = "en" if lang == "en" else "th"
        self._index = 0 if self.lang == "en" else 1

    def __call__(self, key: str, **values: object) -> str:
        text = TEXT[key][self._index]
        return text.format(**values) if values else text

    def feed(self, feed: str) -> str:
        return (FEED_EN if self.lang == "en" else FEED_TH).get(feed, feed)

    def severity(self, severity: str) -> str:
        return (SEVERITY_EN if self.lang == "en" else SEVERITY_TH).get(severity, severity)

    def role(self, role: str) -> str:
        return role if self.lang == "en" else ROLE_TH.get(role, role)

    def state(self, state: str) -> str:
        return state if self.lang == "en" else STATE_TH.get(state, state)

    def time(self, value: datetime | int | None) -> str:
        """Asia/Bangkok; Thai: `1 ธ.ค. 2569 14:05:09 น.`, English: `2026-12-01 14:05:09`."""
        if value is None:
            return self("never")
        dt = datetime.fromtimestamp(value / 1e9, tz=BANGKOK) if isinstance(value, int) else value.astimezone(BANGKOK)
        if self.lang == "en":
            return f"{dt:%Y-%m-%d %H:%M:%S}"
        return f"{dt.day} {THAI_MONTHS_ABBR[dt.month - 1]} {dt.year + BE_OFFSET} {dt:%H:%M:%S} น."


__all__ = ["TEXT", "Words"]
