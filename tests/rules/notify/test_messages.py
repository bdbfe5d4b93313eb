"""Every shipped rule × language × state renders as a duty officer reads it: no fallback, no empty or "-"
placeholder, the evidence (counts, values with units) of the moment, subjects in the receiver's language.

Readings go through the collectors' real enrichers (so derived fields are the real ones) and are spaced wider
than the engine's tick, so every `for:` runs out on a tick, between readings — where the child count was lost.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from jinja2 import StrictUndefined

from collectors.domain import default_enrichers
from core.model import DeviceInfo, Reading
from core.time import NS
from rules.acklink import AckPages
from rules.check import load_rules_dir
from rules.engine import RulesEngine
from rules.notify.render import Renderer
from rules.store import AlertStore
from rules.timeutil import FakeClock
from tests.rules.conftest import T0, PointSink, make_pipeline

ROUTING = """
receivers:
  - {name: duty-th, language: th}
  - {name: duty-en, language: en}
  - {name: duty-both, language: both}
route:
  receiver: duty-th
  group_by: [rule, device_id]
  group_wait: 0s
  group_interval: 0s
  repeat_interval: 20m
  escalate: [{after: 30m, receiver: duty-en}]
  routes:
    - {receiver: duty-en, continue: true}
    - {receiver: duty-both, continue: true}
    - {receiver: duty-th, continue: true}
"""

CITY_NAMES = {"laem-chabang": ("แหลมฉบัง", "Laem Chabang")}


def _dev(device_id: str, feed: str, name: str, **kw: Any) -> DeviceInfo:
    return DeviceInfo(device_id, feed, "laem-chabang", "บางละมุง", name=name, **kw)


@dataclass
class Scenario:
    rule: str
    device: DeviceInfo
    steps: list[tuple[float, dict[str, Any]]]  # (seconds after T0, canonical fields)
    evidence_th: list[str] = field(default_factory=list)  # what the firing message must show
    evidence_en: list[str] = field(default_factory=list)
    end_s: float | None = None  # tick until here (heartbeat rules)


def _every(start_s: float, stop_s: float, step_s: float, fields: dict[str, Any]) -> list[tuple[float, dict[str, Any]]]:
    out, t = [], start_s
    while t < stop_s:
        out.append((t, dict(fields)))
        t += step_s
    return out


GAUGE = _dev("lcb-wl-003", "flood", "สถานีวัดระดับน้ำ คลอง บางละมุง 03", site={"ground_level_m": 1.0, "bank_level_m": 3.0})
AIR = _dev("lcb-air-007", "air", "สถานีตรวจวัดคุณภาพอากาศ ริมถนน บางละมุง 07")
METER = _dev("lcb-em-002", "energy", "มิเตอร์ไฟฟ้า โรงงาน บางละมุง 02", site={"contracted_kw": 100.0})
VAN = _dev("lcb-bus-004", "bus", "รถรับส่งนักเรียน (รถตู้) 12-3456 ชลบุรี → โรงเรียนบางละมุงวิทยา")
POS = {"lat": 13.05, "lon": 100.93, "heading_deg": 90.0}


def _energy(
    start_kwh: float, per_5min_kwh: float, pf: float, n: int, t0: float = 0
) -> list[tuple[float, dict[str, Any]]]:
    return [
        (
            t0 + i * 300,
            {
                "energy_kwh": start_kwh + i * per_5min_kwh,
                "power_kw": per_5min_kwh * 12,
                "power_factor": pf,
                "voltage_v": 229.0,
                "current_a": 100.0,
            },
        )
        for i in range(n)
    ]


SCENARIOS = [
    Scenario(
        "air_aqi_th_unhealthy",
        AIR,
        _every(0, 2.5 * 3600, 1200, {"pm25_ugm3": 120.0, "pm10_ugm3": 150.0, "humidity_pct": 70.0})
        + _every(30 * 3600, 31 * 3600, 1200, {"pm25_ugm3": 5.0, "pm10_ugm3": 10.0, "humidity_pct": 70.0}),
        ["ระดับสีแดง (มีผลกระทบต่อสุขภาพ)", "ต่อเนื่อง 1 ชั่วโมง", "PM2.5 120 µg/m³"],
        ["red (affects health)", "for 1 h", "PM2.5 120 µg/m³"],
    ),
    Scenario(
        "flood_level_high",
        GAUGE,
        _every(0, 1200, 400, {"level_m": 2.6, "rain_mm": 4.0, "battery_pct": 80.0})
        + _every(1200, 3600, 400, {"level_m": 2.0, "rain_mm": 0.0, "battery_pct": 80.0}),
        ["80% ของความสูงตลิ่ง", "ระดับน้ำ 2.6 ม.", "เกณฑ์ 70%"],
        ["80% of the bank", "level 2.6 m"],
    ),
    Scenario(
        "flood_level_overbank",
        GAUGE,
        _every(0, 900, 300, {"level_m": 3.2, "rain_mm": 9.0, "battery_pct": 80.0})
        + _every(900, 3000, 300, {"level_m": 2.0, "rain_mm": 0.0, "battery_pct": 80.0}),
        ["น้ำล้นตลิ่ง", "110% ของความสูงตลิ่ง", "ระดับน้ำ 3.2 ม."],
        ["Overbank", "110% of the bank", "level 3.2 m"],
    ),
    Scenario(
        "flood_rising_fast",
        GAUGE,
        [(i * 300.0, {"level_m": round(1.5 + 0.1 * i, 2), "rain_mm": 6.0, "battery_pct": 80.0}) for i in range(12)]
        + _every(3600, 3600 + 4800, 300, {"level_m": 2.6, "rain_mm": 0.0, "battery_pct": 80.0}),
        ["ต่อ 10 นาที", "ซม."],
        ["per 10 min", " cm "],
    ),
    Scenario(
        "energy_demand_over_contract",
        METER,
        _energy(5000.0, 15.0, 0.95, 3) + _energy(5045.0, 1.0, 0.95, 4, 900),
        ["กิโลวัตต์", "เกินที่ทำสัญญาไว้ 100 กิโลวัตต์"],
        ["kW above the contracted 100 kW"],
    ),
    Scenario(
        "energy_power_factor_low",
        METER,
        _energy(5000.0, 2.0, 0.8, 6) + _energy(5012.0, 2.0, 0.9, 3, 1800),
        ["PF", "0.8", "ต่อเนื่อง 15 นาที"],
        ["0.8", "for 15 min"],
    ),
    Scenario(
        "bus_over_speed",
        VAN,
        _every(0, 180, 60, {**POS, "speed_kmh": 82.0, "ignition": True, "door_open": False, "occupancy": 9})
        + _every(180, 480, 60, {**POS, "speed_kmh": 40.0, "ignition": True, "door_open": False, "occupancy": 9}),
        ["82 / 60 กม./ชม.", "ต่อเนื่อง 30 วินาที"],
        ["82 / 60 km/h"],
    ),
    Scenario(
        "bus_child_left",
        VAN,
        _every(0, 900, 180, {**POS, "speed_kmh": 0.0, "ignition": False, "door_open": False, "occupancy": 2})
        + _every(900, 1200, 180, {**POS, "speed_kmh": 0.0, "ignition": False, "door_open": False, "occupancy": 0}),
        ["ยังนับได้ 2 คน", "นานกว่า 5 นาที"],
        ["2 children still on board", "for over 5 min"],
    ),
    Scenario(
        "air_device_silent",
        AIR,
        [(0, {"pm25_ugm3": 10.0}), (3 * 3600, {"pm25_ugm3": 10.0})],
        ["มา 2 ชั่วโมง", "ปกติส่งทุก 2 ชั่วโมง"],
        ["for 2 h", "expected every 2 h"],
    ),
    Scenario(
        "flood_device_silent",
        GAUGE,
        [(0, {"level_m": 2.0}), (3600, {"level_m": 2.0})],
        ["ปกติส่งทุก 30 นาที"],
        ["expected every 30 min"],
    ),
    Scenario(
        "energy_device_silent",
        METER,
        [(0, {"energy_kwh": 5000.0}), (3600, {"energy_kwh": 5001.0})],
        ["ปกติส่งทุก 30 นาที"],
        ["expected every 30 min"],
    ),
    Scenario(
        "bus_device_silent",
        VAN,
        [(0, {**POS, "speed_kmh": 0.0}), (1500, {**POS, "speed_kmh": 0.0})],
        ["ปกติส่งทุก 10 นาที"],
        ["expected every 10 min"],
    ),
]

TICK_S = 60  # the engine ticks every minute; readings are further apart than that
THAI = re.compile(r"[\u0E00-\u0E7F]")


def test_every_shipped_rule_has_a_scenario() -> None:
    assert {s.rule for s in SCENARIOS} == {r.name for r in load_rules_dir().rules}


class StrictRenderer(Renderer):
    """The shipped renderer, but a name the context lacks is an error (the engine logs it and falls back)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__("https://nakhon.example.go.th", **kw)
        self._summary_envs = {lang: env.overlay(undefined=StrictUndefined) for lang, env in self.envs.items()}


def _placeholder_problems(text: str) -> list[str]:
    problems = []
    if re.search(r"(^|\s)-(\s|$|\))", text) or "None" in text or "{{" in text:
        problems.append("placeholder")
    if re.search(r"\S  +\S", text):
        problems.append("an empty value left a double space")
    if "= " in text and re.search(r"\w+: [\w.-]+ = ", text):
        problems.append("fallback text")
    return problems


async def _run(scenario: Scenario, db: str) -> tuple[PointSink, dict[str, Any], AlertStore, Renderer]:
    store = AlertStore(db)
    clock = FakeClock(T0)
    renderer = StrictRenderer(city_names=CITY_NAMES.get)
    pipeline, mem = make_pipeline(store, clock, ROUTING, renderer=renderer)
    sink = PointSink()
    ruleset = load_rules_dir().subset([scenario.rule])
    dev = scenario.device
    engine = RulesEngine(ruleset, store, pipeline, sink, clock=clock, devices=lambda: [dev], renderer=renderer)
    enricher = default_enrichers()[dev.feed]
    await engine.start()
    steps = sorted(scenario.steps, key=lambda s: s[0])
    t = 0.0
    for at_s, fields in steps:
        while t + TICK_S < at_s:
            t += TICK_S
            clock.set(T0 + int(t * NS))
            await engine.tick()
        t = at_s
        now = T0 + int(at_s * NS)
        clock.set(now)
        r = Reading(dev.device_id, dev.feed, dev.city, dev.district, now, dict(fields))
        enricher.enrich(r, dev)
        await engine.process(r, dev)
        await engine.tick()
    await pipeline.drain()
    await pipeline.stop()
    return sink, mem, store, renderer


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.rule for s in SCENARIOS])
async def test_every_rule_language_and_state_renders_with_the_evidence(
    scenario: Scenario, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rules.engine")
    sink, mem, store, _renderer = await _run(scenario, f"sqlite:///{tmp_path / 'a.db'}")
    assert not [r for r in caplog.records if "template" in r.getMessage()], "a summary template fell back"
    states = [s for _, _, s in sink.states]
    assert "firing" in states and states[-1] == "resolved", states
    for point in sink.points:
        for key in ("message_th", "message_en"):
            text = str(point.fields[key])
            assert not _placeholder_problems(text), (point.fields["state"], key, text, _placeholder_problems(text))
    firing = next(p for p in sink.points if p.fields["state"] == "firing")
    for needle in scenario.evidence_th:
        assert needle in str(firing.fields["message_th"]), (needle, firing.fields["message_th"])
    for needle in scenario.evidence_en:
        assert needle in str(firing.fields["message_en"]), (needle, firing.fields["message_en"])
    assert scenario.device.name in str(firing.fields["message_th"])
    assert "สถานีวัดระดับน้ำ สถานีวัดระดับน้ำ" not in str(firing.fields["message_th"])  # names as given

    kinds = {receiver: {m.kind for m in n.sent} for receiver, n in mem.items()}
    assert {"firing", "resolved"} <= kinds["duty-th"] and {"firing", "resolved"} <= kinds["duty-both"], kinds
    for receiver, notifier in mem.items():
        for m in notifier.sent:
            assert not _placeholder_problems(m.title), (receiver, m.title)
            for line in m.body.splitlines():
                assert not _placeholder_problems(line), (receiver, m.kind, line)
            if receiver == "duty-th":  # Thai only: no English words of ours in the subject or the body
                assert m.title.startswith("[") and THAI.search(m.title)
                assert not re.search(
                    r"\b(Alert|Resolved|Reminder|Escalation|Warning|Critical|Info)\b", m.title + m.body
                )
                assert "แหลมฉบัง" in m.body and "laem-chabang" not in m.body
            elif receiver == "duty-en":
                assert re.match(r"\[(Info|Warning|Critical)\] (Alert|Resolved|Reminder|Escalation)", m.title), m.title
                ours = m.body.replace(scenario.device.name, "").replace(scenario.device.district, "")
                assert "Laem Chabang" in m.body and not THAI.search(ours), ours  # Thai only in names as given
            else:
                assert "———" in m.body and "แหลมฉบัง" in m.body and "Laem Chabang" in m.body

    page = AckPages().render("confirm", store.get(str(firing.fields["alert_id"])), receiver="duty-th", exp=1, sig="x")
    for needle in scenario.evidence_th[:1]:
        assert needle in page
    store.close()


async def test_reminders_and_escalations_render_too(tmp_path: Any) -> None:
    """The child-left alert is left unacknowledged long enough for reminders and an escalation."""
    base = next(s for s in SCENARIOS if s.rule == "bus_child_left")
    long = Scenario(
        base.rule,
        base.device,
        [*_every(0, 3600, 180, dict(base.steps[0][1])), (3600, {**POS, "ignition": False, "occupancy": 0})],
    )
    _sink, mem, store, _ = await _run(long, f"sqlite:///{tmp_path / 'a.db'}")
    kinds = [m.kind for m in mem["duty-th"].sent]
    assert "reminder" in kinds, kinds
    assert "escalation" in [m.kind for m in mem["duty-en"].sent]
    for m in mem["duty-th"].sent + mem["duty-en"].sent:
        assert "2 คน" in m.body or "2 children" in m.body, m.body
        assert not [ln for ln in m.body.splitlines() if _placeholder_problems(ln)], m.body
    reminder = next(m for m in mem["duty-th"].sent if m.kind == "reminder")
    assert reminder.title.startswith("[วิกฤต] เตือนซ้ำ") and "ยังนับได้ 2 คน" in reminder.title
    store.close()
