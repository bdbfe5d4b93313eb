"""Pending alerts not shown yet (`AlertCandidate`): a `for:` rule's condition is a narrow durable row until it
has held for `show_pending_after_s`, then the pending alert it stands for (from when it began), then firing at
its `for:`.

Each test attacks one promise: a flap shorter than the delay leaves no alert, point or message; a condition
that holds is shown from when it began, not from when it was shown; a `for:` shorter than the delay still
fires on time; a restart in the middle of a `for:` does not start it again; time alone (a tick) shows and
fires it; a batch applied twice ends the same."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from rules.check import load_rules_dir
from rules.engine import RulesEngine
from rules.store import AlertCandidate, AlertStore
from tests.rules.conftest import T0, PointSink, device, make_pipeline, minutes, reading

SECOND = 1_000_000_000


def engine_for(names: list[str], store: Any, sink: PointSink, clock: Any, pipeline: Any = None,
               show_pending_after_s: float = 60.0) -> RulesEngine:
    return RulesEngine(load_rules_dir().subset(names), store, pipeline, sink, clock=clock,
                       show_pending_after_s=show_pending_after_s)


def candidates_counted(rule: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("nakhon_alert_candidates_total", {"rule": rule, "outcome": outcome}) or 0.0


async def test_flaps_shorter_than_the_delay_leave_no_alert_no_point_and_no_message(store, clock, sink) -> None:
    """The storm's worst case: every reading crosses the threshold or its clear level, 15 s apart."""
    pipeline, mem = make_pipeline(store, clock)
    eng = engine_for(["flood_level_high"], store, sink, clock, pipeline)
    dev = device("gauge-1", "flood")
    proposed = candidates_counted("flood_level_high", "proposed")
    withdrawn = candidates_counted("flood_level_high", "withdrawn")
    try:
        for i in range(40):
            level = 75.0 if i % 2 == 0 else 60.0
            await eng.process(reading(dev, T0 + 15 * SECOND * i, level_pct_bank=level), dev)
            if i % 2 == 0:  # the condition holds: durable as a candidate from this reading on
                assert [c.key for c in store.candidates()] == [("flood_level_high", "gauge-1")]
        await pipeline.drain()
        assert store.list_alerts(limit=None) == []
        assert sink.points == [] and mem["ops"].sent == []
        assert store.candidates() == []  # the last reading cleared it
        assert candidates_counted("flood_level_high", "proposed") - proposed == 20
        assert candidates_counted("flood_level_high", "withdrawn") - withdrawn == 20
    finally:
        await pipeline.stop()


async def test_a_condition_that_holds_past_the_delay_is_shown_from_when_it_began_then_fires(
    store, clock, sink
) -> None:
    eng = engine_for(["flood_level_high"], store, sink, clock)
    dev = device("gauge-2", "flood")
    await eng.process(reading(dev, T0, level_pct_bank=71.0), dev)
    await eng.process(reading(dev, T0 + 30 * SECOND, level_pct_bank=72.0), dev)
    assert store.list_alerts(limit=None) == [] and sink.points == []  # held 30 s < 60 s: not shown yet
    await eng.process(reading(dev, T0 + 60 * SECOND, level_pct_bank=73.0), dev)
    shown = store.get_open("flood_level_high", "gauge-2")
    assert shown is not None and shown.state == "pending"
    assert (shown.started_ns, shown.value) == (T0, 71.0)  # from the reading that began it, with its evidence
    assert "71" in shown.message_en
    assert store.candidates() == []  # one or the other, never both
    assert [(p.time_ns, p.fields["state"]) for p in sink.points] == [(T0, "pending")]
    await eng.process(reading(dev, T0 + minutes(5), level_pct_bank=74.0), dev)  # `for: 5m` from T0
    fired = store.get_open("flood_level_high", "gauge-2")
    assert fired is not None and fired.id == shown.id and fired.state == "firing"
    assert fired.fired_ns == T0 + minutes(5)
    assert [(p.time_ns, p.fields["state"]) for p in sink.points] == [(T0, "pending"), (T0 + minutes(5), "firing")]


async def test_a_for_shorter_than_the_delay_fires_on_time_and_notifies_once(store, clock, sink) -> None:
    pipeline, mem = make_pipeline(store, clock)
    eng = engine_for(["flood_level_overbank"], store, sink, clock, pipeline, show_pending_after_s=300)
    dev = device("gauge-3", "flood")
    try:
        for i, level in enumerate([104.0, 105.0, 106.0]):  # `for: 2m`, delay 5 min
            await eng.process(reading(dev, T0 + minutes(i), level_pct_bank=level), dev)
        await pipeline.drain()
        (alert,) = store.list_alerts(limit=None)
        assert (alert.state, alert.started_ns, alert.fired_ns) == ("firing", T0, T0 + minutes(2))
        assert [(p.time_ns, p.fields["state"]) for p in sink.points] == [(T0, "pending"),
                                                                         (T0 + minutes(2), "firing")]
        assert [m.alert_ids for m in mem["ops"].sent] == [[alert.id]]
    finally:
        await pipeline.stop()


async def test_a_restart_in_the_middle_of_for_does_not_start_it_again(store, clock, sink) -> None:
    dev = device("gauge-4", "flood")
    before = engine_for(["flood_level_high"], store, sink, clock)
    await before.process(reading(dev, T0, level_pct_bank=71.0), dev)
    # the process dies here; the next one resumes from what is stored
    after = engine_for(["flood_level_high"], store, sink, clock)
    await after.start()
    await after.process(reading(dev, T0 + minutes(5), level_pct_bank=72.0), dev)
    alert = store.get_open("flood_level_high", "gauge-4")
    assert alert is not None and alert.state == "firing"  # 5 minutes since T0, not since the restart
    assert (alert.started_ns, alert.fired_ns) == (T0, T0 + minutes(5))
    assert store.candidates() == []


async def test_a_removed_rules_candidate_is_discarded_and_not_shown_when_the_rule_comes_back(
    store, clock, sink
) -> None:
    """The rule goes from the config while its condition holds; weeks later it comes back. Without a reading
    saying so, nothing may appear as pending since weeks ago (nor fire on the first tick)."""
    dev = device("gauge-9", "flood")
    before = engine_for(["flood_level_high"], store, sink, clock)
    await before.process(reading(dev, T0, level_pct_bank=71.0), dev)
    assert [c.key for c in store.candidates()] == [("flood_level_high", "gauge-9")]
    discarded = candidates_counted("flood_level_high", "discarded")
    without = engine_for(["flood_level_overbank"], store, sink, clock)  # the rule removed
    await without.start()
    assert store.candidates() == []
    assert candidates_counted("flood_level_high", "discarded") - discarded == 1
    back = engine_for(["flood_level_high"], store, sink, clock)
    await back.start()
    await back.tick(T0 + minutes(60 * 24 * 21))
    assert store.list_alerts(limit=None) == [] and sink.points == []


async def test_time_alone_shows_and_fires_a_candidate(store, clock, sink) -> None:
    eng = engine_for(["flood_level_high"], store, sink, clock)
    dev = device("gauge-5", "flood")
    await eng.process(reading(dev, T0, level_pct_bank=71.0), dev)
    await eng.tick(T0 + 59 * SECOND)
    assert store.list_alerts(limit=None) == []
    await eng.tick(T0 + 61 * SECOND)
    shown = store.get_open("flood_level_high", "gauge-5")
    assert shown is not None and (shown.state, shown.started_ns) == ("pending", T0)
    await eng.tick(T0 + minutes(5))
    fired = store.get_open("flood_level_high", "gauge-5")
    assert fired is not None and fired.state == "firing" and fired.id == shown.id


async def test_a_candidate_cleared_while_unknown_readings_come_stays_until_a_clear_one(store, clock, sink) -> None:
    """A reading without the field (unknown) neither clears nor confirms the condition: the candidate stays."""
    eng = engine_for(["flood_level_high"], store, sink, clock)
    dev = device("gauge-6", "flood")
    await eng.process(reading(dev, T0, level_pct_bank=71.0), dev)
    await eng.process(reading(dev, T0 + 30 * SECOND, battery_pct=80.0), dev)
    assert [c.since_ns for c in store.candidates()] == [T0]
    await eng.process(reading(dev, T0 + 40 * SECOND, level_pct_bank=50.0), dev)
    assert store.candidates() == [] and store.list_alerts(limit=None) == []


def test_a_candidate_batch_applied_again_ends_the_same(store: AlertStore) -> None:
    """A commit whose outcome was lost is retried: deleting and inserting the same candidates twice is no
    failure and leaves one row per (rule, device). SQLite and PostgreSQL."""
    a = AlertCandidate("r", "d1", T0, 71.0, 70.0)
    b = AlertCandidate("r", "d2", T0 + 1)
    proposed = {a.key: a, b.key: b}
    assert store.apply_batch([], proposed) == set()
    assert store.apply_batch(store.prepare([], proposed)) == set()
    assert sorted(store.candidates(), key=lambda c: c.device_id) == [a, b]
    later = AlertCandidate("r", "d1", T0 + 5)
    changed: dict[tuple[str, str], AlertCandidate | None] = {a.key: later, b.key: None}
    assert store.apply_batch([], changed) == set()
    assert store.apply_batch([], changed) == set()
    assert store.candidates() == [later]


@pytest.mark.parametrize("delay", [-1.0, "soon"])
def test_a_bad_delay_is_refused_naming_the_setting(tmp_path, delay: object) -> None:
    from nakhon.config import ConfigError, load_settings

    with pytest.raises((ConfigError, ValueError), match="show_pending_after_s"):
        load_settings(data_dir=tmp_path, rules={"show_pending_after_s": delay})


async def test_a_flap_within_one_batch_writes_nothing_but_is_counted(store, clock, sink) -> None:
    """Proposed and withdrawn before the batch commits: no row to write, yet both outcomes are counted."""
    eng = engine_for(["flood_level_high"], store, sink, clock)
    dev = device("gauge-7", "flood")
    proposed = candidates_counted("flood_level_high", "proposed")
    withdrawn = candidates_counted("flood_level_high", "withdrawn")
    await eng.process_batch([(reading(dev, T0 + 15 * SECOND * i, level_pct_bank=75.0 if i % 2 == 0 else 60.0), dev)
                             for i in range(6)])
    assert store.candidates() == [] and store.list_alerts(limit=None) == [] and sink.points == []
    assert candidates_counted("flood_level_high", "proposed") - proposed == 3
    assert candidates_counted("flood_level_high", "withdrawn") - withdrawn == 3
