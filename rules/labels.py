"""The words for alerts in Thai and English (severities, states, message kinds, feeds), and where the message
templates live: shared by the notification renderer (rules/notify/render.py), the acknowledgement page
(rules/acklink.py) and the console, so none of them imports another for a dictionary."""

from __future__ import annotations

from pathlib import Path

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

SEVERITY_TH = {"info": "ข้อมูล", "warning": "เฝ้าระวัง", "critical": "วิกฤต"}
STATE_TH = {"pending": "รอยืนยัน", "firing": "เกิดเหตุ", "resolved": "คลี่คลายแล้ว"}
KIND_TH = {
    "firing": "แจ้งเตือน",
    "resolved": "คลี่คลายแล้ว",
    "reminder": "เตือนซ้ำ (ยังไม่มีผู้รับทราบ)",
    "escalation": "ยกระดับ (ยังไม่มีผู้รับทราบ)",
}
KIND_EN = {
    "firing": "Alert",
    "resolved": "Resolved",
    "reminder": "Reminder (not acknowledged)",
    "escalation": "Escalation (not acknowledged)",
}
FEED_TH = {"air": "คุณภาพอากาศ", "flood": "ระดับน้ำ", "energy": "พลังงานไฟฟ้า", "bus": "รถรับส่งนักเรียน"}
FEED_EN = {"air": "air quality", "flood": "water level", "energy": "energy", "bus": "school bus"}
SEVERITY_EN = {"info": "Info", "warning": "Warning", "critical": "Critical"}

__all__ = ["FEED_EN", "FEED_TH", "KIND_EN", "KIND_TH", "SEVERITY_EN", "SEVERITY_TH", "STATE_TH", "TEMPLATES_DIR"]
