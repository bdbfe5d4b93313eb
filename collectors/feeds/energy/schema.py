"""Energy meters: cumulative import register and instantaneous electrical values."""

from core.feeds import FeedModel, FeedSpec, Measure


class EnergyReading(FeedModel):
    energy_kwh: Measure(0, 1e12, "Cumulative import register, kWh")  # type: ignore[valid-type]
    power_kw: Measure(-1e6, 1e6, "Active power, kW (negative when exporting)")  # type: ignore[valid-type]
    voltage_v: Measure(0, 100_000, "Voltage, V")  # type: ignore[valid-type]
    current_a: Measure(0, 100_000, "Current, A")  # type: ignore[valid-type]
    power_factor: Measure(0, 1, "Power factor, 0–1")  # type: ignore[valid-type]


# "No value" as meters and loggers send it; not -1 (a real exported kW) and not 999999 (a real register).
SENTINELS = dict.fromkeys(("energy_kwh", "power_kw", "voltage_v", "current_a", "power_factor"), (-999.0, -9999.0))

SPEC = FeedSpec("energy", "energy", EnergyReading, "Energy meter", "มิเตอร์ไฟฟ้า", sentinels=SENTINELS)
