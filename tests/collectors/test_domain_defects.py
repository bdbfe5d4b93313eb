"""One test per defect of issue 13, each attacking the guarantee through the real pipeline where it can.

Every test here failed on main before the fix (time, units, meters, tariffs, trips, Traccar, sentinels).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from collectors.directory import StaticDirectory
from collectors.domain import default_enrichers
from collectors.formats import make_format
from collectors.mapping import FieldMapper
from collectors.mapping.profiles import builtin_profiles
from collectors.pipeline import Input, Pipeline
from collectors.quarantine import QuarantineStore
from collectors.sinks.memory import MemorySink
from collectors.sinks.writer import BatchWriter
from core.model import DeviceInfo, Point

NS = 1_000_000_000
RECEIVED_NS = 1_795_825_300 * NS  # 2026-11-28T00:21:40Z
CITY = "laem-chabang"

DEVICES = [
    DeviceInfo("air-1", "air", CITY, "บ่อวิน"),
    DeviceInfo("air-lora", "air", CITY, "บ่อวิน", profile="air-generic-lora"),
    DeviceInfo("meter-1", "energy", CITY, "บ่อวิน", site={"contracted_kw": 100.0}),
    DeviceInfo("meter-wh", "energy", CITY, "บ่อวิน", profile="energy-wh-meter"),
    DeviceInfo("bus-1", "bus", CITY, "ศรีราชา"),
    DeviceInfo("bus-traccar", "bus", CITY, "ศรีราชา"),
]


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.sink = MemorySink()
        self.writer = BatchWriter(self.sink, None, flush_interval_s=0.01)
        # public samples keep their original receive times (2022-2023): no age retention drops them here
        self.quarantine = QuarantineStore(tmp_path / "q.db", flush_interval_s=0.01, max_age_s=100 * 365 * 86400)
        self.pipeline = Pipeline(
            inputs=[
                Input(["city/+/+/+"], make_format("native", prefix="city")),
                Input(["senml/+"], make_format("senml")),
            ],
            directory=StaticDirectory(DEVICES),
            writer=self.writer,
            quarantine=self.quarantine,
            mapper=FieldMapper(),
            profiles=dict(builtin_profiles()),
            enrichers=default_enrichers(),
        )

    async def send(self, topic: str, payload: object, received_ns: int = RECEIVED_NS) -> None:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        await asyncio.wait_for(self.pipeline.handle(topic, data, received_ns), 5)

    def stored(self) -> list[Point]:
        return [p for batch in self.sink.batches for p in batch]

    def reasons(self) -> list[tuple[str, str]]:
        return [(row.reason, row.detail) for row in self.quarantine.list()]


@pytest.fixture
async def harness(tmp_path: Path):
    h = Harness(tmp_path)
    await h.writer.start()
    yield h
    await h.writer.close()
    await h.quarantine.close()


# -- 1. time --------------------------------------------------------------------------------------------------


async def test_future_dated_reading_is_bad_time_and_does_not_switch_off_derived_values(harness: Harness) -> None:
    await harness.send("city/laem-chabang/air/air-1", {"ts": "2100-01-01T00:00:00Z", "pm25_ugm3": 10})
    await harness.send("city/laem-chabang/air/air-1", {"ts": "2026-11-28T00:20:00Z", "pm25_ugm3": 10})
    [point] = harness.stored()
    assert point.fields["aqi_th"] >= 0 and "aqi_us" in point.fields and "pm25_24h_ugm3" in point.fields
    [(reason, detail)] = harness.reasons()
    assert reason == "bad_time" and "future" in detail and "2100-01-01" in detail


async def test_reading_a_few_minutes_ahead_of_the_receive_clock_is_accepted(harness: Harness) -> None:
    await harness.send("city/laem-chabang/air/air-1", {"ts": RECEIVED_NS // NS + 300, "pm25_ugm3": 10})
    assert len(harness.stored()) == 1 and harness.reasons() == []


async def test_1970_is_bad_time_not_replaced_by_receive_time(harness: Harness) -> None:
    await harness.send("city/laem-chabang/air/air-1", {"ts": "1970-01-01T00:00:00Z", "pm25_ugm3": 10})
    assert harness.stored() == []
    [(reason, detail)] = harness.reasons()
    assert reason == "bad_time" and "1970-01-01" in detail


async def test_time_influxdb_cannot_store_is_bad_time_not_sink_rejected(harness: Harness) -> None:
    from collectors.timecheck import TimePolicy

    harness.pipeline.time_policy = TimePolicy(max_future_s=None)
    await harness.send("city/laem-chabang/air/air-1", {"ts": 9223372036854775807, "pm25_ugm3": 10})
    assert harness.stored() == []
    [(reason, detail)] = harness.reasons()
    assert reason == "bad_time" and "InfluxDB" in detail


async def test_future_dated_energy_reading_does_not_stop_interval_energy(harness: Harness) -> None:
    t0 = RECEIVED_NS // NS - 1800
    await harness.send("city/laem-chabang/energy/meter-1", {"ts": t0, "energy_kwh": 100.0})
    await harness.send("city/laem-chabang/energy/meter-1", {"ts": "2100-01-01T00:00:00Z", "energy_kwh": 101.0})
    await harness.send("city/laem-chabang/energy/meter-1", {"ts": t0 + 900, "energy_kwh": 110.0})
    assert [p.fields.get("interval_kwh") for p in harness.stored()] == [None, pytest.approx(10.0)]


async def test_future_dated_bus_reading_does_not_stop_child_left_timer(harness: Harness) -> None:
    t0 = RECEIVED_NS // NS - 600
    await harness.send("city/laem-chabang/bus/bus-1", {"ts": t0, "ignition": False, "occupancy": 2})
    await harness.send("city/laem-chabang/bus/bus-1", {"ts": "2100-01-01T00:00:00Z", "ignition": False})
    await harness.send("city/laem-chabang/bus/bus-1", {"ts": t0 + 120, "ignition": False})
    assert harness.stored()[-1].fields["child_left_s"] == pytest.approx(120.0)


# -- 2. units -------------------------------------------------------------------------------------------------


async def test_senml_declared_kwh_wins_over_the_profiles_wh(harness: Harness) -> None:
    pack = [{"bn": "meter-wh:", "bt": RECEIVED_NS / NS - 60, "n": "energy", "u": "kWh", "v": 12.5}]
    await harness.send("senml/meter-wh", pack)
    [point] = harness.stored()
    assert point.fields["energy_kwh"] == pytest.approx(12.5)


async def test_senml_fahrenheit_is_converted_not_stored_as_celsius(harness: Harness) -> None:
    pack = [{"bn": "air-lora:", "bt": RECEIVED_NS / NS - 60, "n": "temperature", "u": "degF", "v": 60}]
    await harness.send("senml/air-lora", pack)
    [point] = harness.stored()
    assert point.fields["temperature_c"] == pytest.approx((60 - 32) * 5 / 9)


async def test_unit_that_cannot_convert_is_invalid_field_naming_both_units(harness: Harness) -> None:
    pack = [{"bn": "meter-wh:", "bt": RECEIVED_NS / NS - 60, "n": "energy", "u": "Cel", "v": 12.5}]
    await harness.send("senml/meter-wh", pack)
    assert harness.stored() == []
    [row] = harness.quarantine.list()
    assert row.reason == "invalid_field" and "Cel" in row.detail and "kWh" in row.detail
    assert (row.device_id, row.feed) == ("meter-wh", "energy")


# -- 3. meters ------------------------------------------------------------------------------------------------


async def test_meter_replacement_is_not_taken_for_a_rollover(harness: Harness) -> None:
    t0 = RECEIVED_NS // NS - 3600
    await harness.send("city/laem-chabang/energy/meter-1", {"ts": t0, "energy_kwh": 950_000.0})
    await harness.send("city/laem-chabang/energy/meter-1", {"ts": t0 + 900, "energy_kwh": 0.5})
    await harness.send("city/laem-chabang/energy/meter-1", {"ts": t0 + 1800, "energy_kwh": 10.5})
    fields = [p.fields for p in harness.stored()]
    assert "interval_kwh" not in fields[1] and "co2e_kg" not in fields[1] and "demand_15min_kw" not in fields[1]
    assert fields[2]["interval_kwh"] == pytest.approx(10.0)


async def test_true_rollover_near_the_register_end_is_counted(harness: Harness) -> None:
    t0 = RECEIVED_NS // NS - 3600
    await harness.send("city/laem-chabang/energy/meter-1", {"ts": t0, "energy_kwh": 999_990.0})
    await harness.send("city/laem-chabang/energy/meter-1", {"ts": t0 + 900, "energy_kwh": 5.0})
    assert harness.stored()[1].fields["interval_kwh"] == pytest.approx(15.0)


async def test_upward_jump_beyond_the_contract_is_quarantined_not_billed(harness: Harness) -> None:
    t0 = RECEIVED_NS // NS - 3600
    await harness.send("city/laem-chabang/energy/meter-1", {"ts": t0, "energy_kwh": 8.2})
    await harness.send("city/laem-chabang/energy/meter-1", {"ts": t0 + 900, "energy_kwh": 999_990.0})
    await harness.send("city/laem-chabang/energy/meter-1", {"ts": t0 + 1800, "energy_kwh": 1_000_000.0})
    stored = harness.stored()
    assert [p.fields["energy_kwh"] for p in stored] == [8.2, 1_000_000.0]
    assert stored[1].fields["interval_kwh"] == pytest.approx(10.0)  # counting resumed from the new register
    [(reason, detail)] = harness.reasons()
    assert reason == "implausible_interval" and "contracted" in detail


# -- 4. tariffs -----------------------------------------------------------------------------------------------


async def test_substitution_days_are_on_peak(harness: Harness) -> None:
    from collectors.domain.energy import tou_period

    # Mon 7 Dec 2026 (for Sat 5 Dec) and Mon 1 Jun 2026 (for Visakha Bucha on Sun 31 May), 10:00 Bangkok
    for day in ("2026-12-07", "2026-06-01"):
        from datetime import datetime

        ns = int(datetime.fromisoformat(f"{day}T10:00:00+07:00").timestamp()) * NS
        assert tou_period(ns) == "on_peak", day


async def test_interval_across_the_on_peak_start_is_split_pro_rata(harness: Harness) -> None:
    from datetime import datetime

    start = int(datetime.fromisoformat("2026-11-27T08:45:00+07:00").timestamp())  # a Friday
    await harness.send("city/laem-chabang/energy/meter-1", {"ts": start, "energy_kwh": 100.0})
    await harness.send("city/laem-chabang/energy/meter-1", {"ts": start + 1800, "energy_kwh": 110.0})
    point = harness.stored()[1]
    assert point.fields["interval_off_peak_kwh"] == pytest.approx(5.0)
    assert point.fields["interval_on_peak_kwh"] == pytest.approx(5.0)


def test_energy_used_just_before_nine_is_off_peak() -> None:
    from datetime import datetime

    from collectors.domain.energy import EnergyEnricher
    from core.model import Reading

    nine = int(datetime.fromisoformat("2026-11-27T09:00:00+07:00").timestamp()) * NS
    enricher = EnergyEnricher()
    device = DeviceInfo("m", "energy", CITY, "d")
    first = Reading("m", "energy", CITY, "d", nine - NS, {"energy_kwh": 1.0})
    second = Reading("m", "energy", CITY, "d", nine, {"energy_kwh": 1.001})
    enricher.enrich(first, device)
    enricher.enrich(second, device)
    assert second.tags["tou"] == "off_peak"
    assert second.fields["interval_off_peak_kwh"] == pytest.approx(0.001)
    assert second.fields.get("interval_on_peak_kwh", 0.0) == 0.0


def test_demand_is_the_block_integral_when_no_reading_falls_on_a_boundary() -> None:
    from collectors.domain.energy import EnergyEnricher
    from core.model import Reading

    enricher = EnergyEnricher()
    device = DeviceInfo("m", "energy", CITY, "d")
    base = 1_795_730_400  # 2026-11-26T22:00:00Z, a quarter-hour boundary
    register, demands = 0.0, []
    for minute in range(2, 62, 5):  # constant 100 kW read at :02, :07, :12, ...
        t = base + minute * 60
        register = 100.0 * (t - (base + 120)) / 3600
        reading = Reading("m", "energy", CITY, "d", t * NS, {"energy_kwh": register})
        enricher.enrich(reading, device)
        if "demand_15min_kw" in reading.fields:
            demands.append(reading.fields["demand_15min_kw"])
    assert demands and max(demands) == pytest.approx(100.0)
    assert min(demands) == pytest.approx(100.0)


# -- 5. trips -------------------------------------------------------------------------------------------------


async def test_trip_starts_at_its_first_fix(harness: Harness) -> None:
    t0 = RECEIVED_NS // NS - 36_000
    await harness.send("city/laem-chabang/bus/bus-1", {"ts": t0, "ignition": False, "lat": 13.10, "lon": 100.90})
    # next morning the bus starts 84 km away (towed, or a GPS jump overnight)
    topic = "city/laem-chabang/bus/bus-1"
    await harness.send(topic, {"ts": t0 + 30_000, "ignition": True, "lat": 13.85, "lon": 100.70})
    await harness.send(topic, {"ts": t0 + 30_060, "ignition": True, "lat": 13.851, "lon": 100.70})
    start, moved = harness.stored()[1:]
    assert start.fields["trip_distance_km"] == 0.0
    assert moved.fields["trip_distance_km"] == pytest.approx(0.111, abs=0.001)


# -- 6. Traccar and sentinels ---------------------------------------------------------------------------------


async def test_traccar_forwarder_payload_is_stored_with_fix_time_and_kmh(harness: Harness) -> None:
    payload = {
        "position": {
            "id": 1, "deviceId": 7, "protocol": "osmand", "serverTime": "2026-11-28T00:21:00.000+00:00",
            "deviceTime": "2026-11-28T00:20:30.000+00:00", "fixTime": "2026-11-28T00:20:00.000+00:00",
            "valid": True, "latitude": 13.1, "longitude": 100.9, "speed": 10.0, "course": 90.0,
            "attributes": {"ignition": True},
        },
        "device": {"id": 7, "name": "Bus 1", "uniqueId": "bus-traccar", "status": "online"},
    }
    harness.pipeline.inputs.append(Input(["traccar/+"], make_format("traccar")))
    await harness.send("traccar/bus-traccar", payload)
    [point] = harness.stored()
    assert point.tags["device_id"] == "bus-traccar"
    assert point.time_ns == 1_795_825_200 * NS  # fixTime, not deviceTime or serverTime
    assert point.fields["speed_kmh"] == pytest.approx(18.52)
    assert point.fields["ignition"] is True


async def test_native_sentinels_are_missing_values_not_readings(harness: Harness) -> None:
    ts = RECEIVED_NS // NS - 60
    await harness.send("city/laem-chabang/energy/meter-1", {"ts": ts, "power_kw": -999, "energy_kwh": 5.0})
    await harness.send("city/laem-chabang/bus/bus-1", {"ts": ts, "lat": -1, "lon": -1, "speed_kmh": 12.0})
    meter, bus = harness.stored()
    assert "power_kw" not in meter.fields and meter.fields["energy_kwh"] == 5.0
    assert "lat" not in bus.fields and "lon" not in bus.fields and bus.fields["speed_kmh"] == 12.0


async def test_public_traccar_sample_with_impossible_latitude_is_quarantined_naming_lat(tmp_path: Path) -> None:
    # gamebeast2k/docker_traccar2mqtt forward_data/forward.json: latitude 99.45 (anonymised) cannot be stored
    sample = Path(__file__).parents[2] / "collectors/formats/traccar/testdata/forward_gamebeast2k.json"
    h = Harness(tmp_path)
    h.pipeline.directory = StaticDirectory([DeviceInfo("305975", "bus", CITY, "ศรีราชา")])
    h.pipeline.inputs.append(Input(["traccar/+"], make_format("traccar")))
    await h.writer.start()
    try:
        await h.send("traccar/positions", sample.read_bytes(), received_ns=1_648_578_400 * NS)
        assert h.stored() == []
        [(reason, detail)] = h.reasons()
        assert reason == "invalid_field" and "lat" in detail and "99.45" in detail
    finally:
        await h.writer.close()
        await h.quarantine.close()


# -- 8. public LoRaWAN samples: Milesight AM103 through The Things Stack and ChirpStack v4 ----------------------

FORMATS_DIR = Path(__file__).parents[2] / "collectors" / "formats"
AM103 = DeviceInfo("am103-1", "air", CITY, "บ่อวิน", dev_eui="1000000000000001", profile="air-milesight-am103")
TTS_AM103_NS = 1_684_474_415_848_446_463  # received_at 2023-05-19T05:33:35.848446463Z
CS_AM103_NS = 1_684_741_625_404_859_000  # time 2023-05-22T07:47:05.404859+00:00


async def _am103(tmp_path: Path, topic: str, sample: str, received_ns: int) -> tuple[list[Point], list]:
    """Stored points and quarantine rows after one public AM103 uplink through the real parsers."""
    h = Harness(tmp_path)
    h.pipeline.directory = StaticDirectory([AM103])
    h.pipeline.inputs = [
        Input(["v3/+/devices/+/up"], make_format("ttn")),
        Input(["application/+/device/+/event/up"], make_format("chirpstack")),
    ]
    await h.writer.start()
    try:
        await h.send(topic, (FORMATS_DIR / sample).read_bytes(), received_ns=received_ns + NS)
        return h.stored(), h.quarantine.list()
    finally:
        await h.writer.close()
        await h.quarantine.close()


# (topic, the format's testdata folder, the envelope's time): The Things Stack, then ChirpStack v4
AM103_UPLINKS = [
    ("v3/application-tts-name@ttn/devices/eui-1000000000000001/up", "ttn", TTS_AM103_NS),
    ("application/ca739e26/device/1000000000000001/event/up", "chirpstack", CS_AM103_NS),
]


@pytest.mark.parametrize(("topic", "fmt", "time_ns"), AM103_UPLINKS)
async def test_milesight_am103_uplink_with_its_decoder_is_stored(
    tmp_path: Path, topic: str, fmt: str, time_ns: int
) -> None:
    stored, _ = await _am103(tmp_path, topic, f"{fmt}/testdata/milesight_am103_decoded.json", time_ns)
    [point] = stored
    assert point.tags["device_id"] == "am103-1" and point.time_ns == time_ns
    assert point.fields == {"temperature_c": 28.0, "humidity_pct": 54.5}


@pytest.mark.parametrize(("topic", "fmt", "time_ns"), AM103_UPLINKS)
async def test_milesight_am103_raw_frame_is_not_misread_as_cayenne_lpp(
    tmp_path: Path, topic: str, fmt: str, time_ns: int
) -> None:
    # 03 67 18 01 is 28.0 °C little-endian (Milesight) but 614.5 °C read as big-endian LPP
    stored, rows = await _am103(tmp_path, topic, f"{fmt}/testdata/milesight_am103_raw.json", time_ns)
    assert stored == []
    [row] = rows
    # named by the envelope's label (TTS device_id / ChirpStack deviceName): the frame never reached the registry
    assert row.reason == "bad_payload" and row.device_id and "0x75" in row.detail
