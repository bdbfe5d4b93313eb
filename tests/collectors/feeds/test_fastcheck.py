"""The feed schemas' fast path (`collectors.feeds.fastcheck`) decides exactly as pydantic does, or not at all.

For any values: when the fast path answers, pydantic accepts the same values and dumps the same fields (same
keys, same order, same values and types); when pydantic rejects, the fast path never answers. Through the
pipeline: the same messages give the same stored points and the same quarantine rows (reason and detail), with
the fast path on and off.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
from pathlib import Path
from typing import Annotated, Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field, ValidationError, field_validator

from collectors.directory import StaticDirectory
from collectors.domain import default_enrichers
from collectors.feeds import FEED_SPECS
from collectors.feeds.fastcheck import FastCheck
from collectors.formats import make_format
from collectors.mapping import FieldMapper
from collectors.mapping.profiles import builtin_profiles
from collectors.pipeline import Input, Pipeline
from collectors.quarantine import QuarantineStore
from collectors.sinks.memory import MemorySink
from collectors.sinks.writer import BatchWriter
from core.feeds import FeedModel, Measure
from core.model import DeviceInfo, Point

MODELS = {feed: spec.model for feed, spec in FEED_SPECS.items()}


def general(model: type[FeedModel], values: dict[str, Any]) -> dict[str, Any] | ValidationError:
    try:
        return model.model_validate(values).model_dump(exclude_none=True)
    except ValidationError as exc:
        return exc


def typed(fields: dict[str, Any]) -> list[tuple[str, type, Any]]:
    """Keys in order with each value's exact type (12 == 12.0 == True must not hide a difference)."""
    return [(k, type(v), "nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in fields.items()]


def bounds(model: type[FeedModel], name: str) -> tuple[float, float]:
    lo = hi = None
    for item in model.model_fields[name].metadata:
        lo = getattr(item, "ge", lo)
        hi = getattr(item, "le", hi)
    return (-1e300 if lo is None else lo), (1e300 if hi is None else hi)


def any_value(model: type[FeedModel], name: str) -> st.SearchStrategy[Any]:
    """Values in and around the field's range, of every JSON type (and a few no parser produces)."""
    lo, hi = bounds(model, name) if name in model.model_fields else (-1e6, 1e6)
    return st.one_of(
        st.floats(min_value=lo, max_value=hi),
        st.sampled_from([lo, hi, -0.0, 0.0, float("nan"), float("inf"), float("-inf")]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=int(max(lo, -2**62)) - 2, max_value=int(min(hi, 2**62)) + 2),
        st.sampled_from([2**53, 2**53 + 1, -(2**53) - 1, 10**400, -(10**30)]),
        st.booleans(),
        st.none(),
        st.text(max_size=4),
        st.sampled_from(["12", "12.5", "NaN", "1e3", ""]),
        st.lists(st.integers(-1000, 1000), max_size=2),
        st.dictionaries(st.text(max_size=2), st.integers(-1000, 1000), max_size=1),
    )


@st.composite
def feed_values(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    feed = draw(st.sampled_from(sorted(MODELS)))
    model = MODELS[feed]
    names = draw(st.lists(st.sampled_from([*model.model_fields, "ts", "extra", "pm25", "Level_m"]), max_size=8))
    return feed, {name: draw(any_value(model, name)) for name in names}


@settings(max_examples=2000, deadline=None)
@given(feed_values())
def test_fast_path_answers_only_as_pydantic_does(case: tuple[str, dict[str, Any]]) -> None:
    feed, values = case
    fast = FastCheck(MODELS[feed]).fields(values)
    slow = general(MODELS[feed], values)
    if isinstance(slow, ValidationError):
        assert fast is None, f"fast path accepted what pydantic rejects: {slow}"
    elif fast is not None:
        assert typed(fast) == typed(slow)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_well_formed_values_take_the_fast_path(data: st.DataObject) -> None:
    """Not a dead branch: in-range numbers (floats, exact ints) and bools are decided fast, equal to pydantic's."""
    feed = data.draw(st.sampled_from(sorted(MODELS)))
    model = MODELS[feed]
    values: dict[str, Any] = {}
    for name in data.draw(st.lists(st.sampled_from(list(model.model_fields)), min_size=1, unique=True)):
        annotation = str(model.model_fields[name].annotation)
        lo, hi = bounds(model, name)
        if "bool" in annotation:
            values[name] = data.draw(st.booleans())
        elif "int" in annotation:
            values[name] = data.draw(st.integers(min_value=int(lo), max_value=int(hi)))
        else:
            values[name] = data.draw(st.one_of(st.floats(min_value=lo, max_value=hi),
                                               st.integers(min_value=int(max(lo, -2**53)),
                                                           max_value=int(min(hi, 2**53)))))
    fast = FastCheck(model).fields(values)
    assert fast is not None
    assert typed(fast) == typed(general(model, values))  # type: ignore[arg-type]


@pytest.mark.parametrize(("feed", "values"), [
    ("air", {"pm25_ugm3": float("nan")}),
    ("air", {"pm25_ugm3": float("inf")}),
    ("air", {"pm25_ugm3": 1000.0000001}),
    ("air", {"pm25_ugm3": -0.5}),
    ("air", {"pm25_ugm3": True}),
    ("air", {"pm25_ugm3": "12"}),
    ("air", {"pm25_ugm3": [12]}),
    ("air", {"pm25_ugm3": 10**400}),
    ("air", {"temperature_c": 71}),
    ("flood", {"level_m": 1.0, "battery_pct": 101.0}),
    ("bus", {"occupancy": 3.0}),
    ("bus", {"occupancy": True}),
    ("bus", {"occupancy": 201}),
    ("bus", {"ignition": 1}),
    ("bus", {"ignition": "true"}),
])
def test_malformed_values_are_left_to_pydantic_which_rejects_them(feed: str, values: dict[str, Any]) -> None:
    assert FastCheck(MODELS[feed]).fields(values) is None
    assert isinstance(general(MODELS[feed], values), ValidationError)


def test_field_order_is_the_models_not_the_payloads() -> None:
    values = {"power_factor": 0.9, "voltage_v": 230, "power_kw": 10.0, "unknown": "x", "current_a": None}
    fast = FastCheck(MODELS["energy"]).fields(values)
    assert fast is not None and list(fast) == ["power_kw", "voltage_v", "power_factor"]
    assert typed(fast) == typed(general(MODELS["energy"], values))  # type: ignore[arg-type]


class _Validated(FeedModel):
    x: Measure(0, 1, "x")  # type: ignore[valid-type]

    @field_validator("x")
    @classmethod
    def _half(cls, v: float | None) -> float | None:
        return None if v is None else v / 2


class _Exclusive(FeedModel):
    x: Annotated[float | None, Field(default=None, gt=0, strict=True)]


class _Lax(FeedModel):
    x: Annotated[float | None, Field(default=None, ge=0)]


@pytest.mark.parametrize("model", [_Validated, _Exclusive, _Lax])
def test_a_model_the_fast_path_does_not_understand_gets_none(model: type[FeedModel]) -> None:
    check = FastCheck(model)
    assert not check.enabled
    assert check.fields({"x": 0.5}) is None


# ------------------------------------------------------------------------------------------- the pipeline

DEVICES = [
    DeviceInfo("air-1", "air", "c", "d"),
    DeviceInfo("flood-1", "flood", "c", "d", site={"bank_level_m": 3.0, "ground_level_m": 0.0}),
    DeviceInfo("energy-1", "energy", "c", "d", site={"contracted_kw": 100.0},
               calibration={"power_kw": {"scale": 2.0, "offset": 1.0}}),
    DeviceInfo("bus-1", "bus", "c", "d"),
]
RECEIVED_NS = 1_795_741_300_000_000_000


async def _outcomes(fast_paths: bool, messages: list[tuple[str, bytes]], tmp: Path) -> tuple[list[Any], list[Any]]:
    sink = MemorySink()
    writer = BatchWriter(sink, None, flush_interval_s=0.01)
    quarantine = QuarantineStore(tmp / f"q-{fast_paths}.db", flush_interval_s=0.01)
    pipeline = Pipeline(inputs=[Input(["city/+/+/+"], make_format("native", prefix="city"))],
                        directory=StaticDirectory(DEVICES), writer=writer, quarantine=quarantine,
                        mapper=FieldMapper(), profiles=dict(builtin_profiles()), enrichers=default_enrichers(),
                        fast_paths=fast_paths)
    try:
        for i, (topic, payload) in enumerate(messages):
            await asyncio.wait_for(pipeline.handle(topic, payload, RECEIVED_NS + i), 5)
    finally:
        await writer.close()
        await quarantine.close()
    points: list[Point] = [p for batch in sink.batches for p in batch]
    stored = [(p.measurement, sorted(p.tags.items()), typed(p.fields), p.time_ns) for p in points]
    rows = [(q.topic, q.payload, q.reason, q.detail, q.device_id, q.feed)
            for q in reversed(QuarantineStore(tmp / f"q-{fast_paths}.db").list(limit=10_000))]
    return stored, rows


@st.composite
def messages(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    out = []
    for k in range(draw(st.integers(min_value=1, max_value=12))):
        device = draw(st.sampled_from(DEVICES))
        model = MODELS[device.feed]
        names = draw(st.lists(st.sampled_from([*model.model_fields, "extra"]), min_size=1, max_size=5))
        doc: dict[str, Any] = {"ts": 1_795_741_200_000 + k * 1000}
        for name in names:
            value = draw(any_value(model, name).filter(lambda v: not (isinstance(v, float) and not math.isfinite(v))
                                                      and not (isinstance(v, int) and abs(v) >= 2**63)))
            doc[name] = value
        out.append((f"city/c/{device.feed}/{device.device_id}", orjson.dumps(doc)))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_the_pipeline_stores_and_quarantines_the_same_with_and_without_the_fast_path(
    batch: list[tuple[str, bytes]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fast = asyncio.run(_outcomes(True, batch, Path(tmp)))
        general_only = asyncio.run(_outcomes(False, batch, Path(tmp)))
    assert fast == general_only


def test_a_malformed_message_is_quarantined_with_pydantics_reason_on_the_fast_path(tmp_path: Path) -> None:
    """The values a too-eager fast path would take (bool and numeric text for a number, out of range, an int
    for a bool, a float for an int) are quarantined `invalid_field`, with pydantic's words, and nothing is stored."""
    docs: list[dict[str, Any]] = [
        {"pm25_ugm3": True}, {"pm25_ugm3": "12"}, {"pm25_ugm3": 1000.5}, {"humidity_pct": -1e-9},
    ]
    bus: list[dict[str, Any]] = [{"ignition": 1}, {"occupancy": 2.0}, {"occupancy": 201}]
    batch = [("city/c/air/air-1", orjson.dumps({"ts": 1_795_741_200_000, **d})) for d in docs]
    batch += [("city/c/bus/bus-1", orjson.dumps({"ts": 1_795_741_200_000, **d})) for d in bus]
    stored, rows = asyncio.run(_outcomes(True, batch, tmp_path))
    assert stored == []
    assert [r[2] for r in rows] == ["invalid_field"] * len(batch)
    assert rows[0][3] == "pm25_ugm3: Input should be a valid number (got True)"
    assert rows[1][3] == "pm25_ugm3: Input should be a valid number (got '12')"
    assert rows[2][3].startswith("pm25_ugm3: Input should be less than or equal to 1000")
    assert rows[5][3] == "occupancy: Input should be a valid integer (got 2.0)"
    (tmp_path / "general").mkdir()
    assert (stored, rows) == asyncio.run(_outcomes(False, batch, tmp_path / "general"))
