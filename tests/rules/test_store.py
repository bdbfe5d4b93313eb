from __future__ import annotations

import asyncio
import multiprocessing
import threading

from rules.check import load_rules_dir
from rules.engine import RulesEngine
from rules.lifecycle import AlertLifecycle
from rules.store import ALERT_FIELDS, Alert, AlertStore, alert_from_row, alert_row
from tests.rules.conftest import SIMPLE_ROUTING, T0, PointSink, device, make_pipeline, minutes, reading


def _open(store: AlertStore, t: int = T0):
    return store.open_alert(
        rule="r", device_id="d", city="c", district="x", feed="air", severity="warning", state="pending", t_ns=t
    )


def test_the_alert_record_is_its_row_and_back() -> None:
    """One record, one mapping: every field of `Alert` is a column of `rules_alerts` (plus the derived
    `open_key`), so a field added to one and not the other fails here, and a snapshot survives the round trip."""
    from rules.store import Base

    columns = {c.name for c in Base.metadata.tables["rules_alerts"].columns}
    assert columns == {*ALERT_FIELDS, "open_key"}
    alert = Alert.opened(rule="r", device_id="d", city="c", district="x", feed="air", severity="warning",
                         t_ns=T0, firing=False, value=1.5, labels={"team": "a"})
    row = alert_row(alert)
    assert row["open_key"] == "r|d" and alert_row(alert.resolved(T0 + 1))["open_key"] is None
    assert alert_from_row(row) == alert
    row["labels"]["team"] = "b"  # the row holds its own copy of the labels
    assert alert.labels == {"team": "a"}


def test_one_open_alert_per_rule_and_device(store: AlertStore) -> None:
    a, created = _open(store)
    b, created_again = _open(store, T0 + 1)
    assert created and not created_again and a.id == b.id
    assert store.resolve(a.id, T0 + 2) is not None
    c, created3 = _open(store, T0 + 3)  # a resolved alert frees the slot
    assert created3 and c.id != a.id
    assert store.resolve(a.id, T0 + 4) is None  # already resolved: no double transition


def test_lifecycle_transitions_and_ack_any_time(store: AlertStore) -> None:
    a, _ = _open(store)
    acked = store.ack(a.id, "somchai", "กำลังตรวจสอบ", T0 + 5)
    assert acked is not None and acked.state == "pending" and acked.ack_by == "somchai"
    assert acked.ack_comment == "กำลังตรวจสอบ" and acked.ack_ns == T0 + 5
    fired = store.fire(a.id, T0 + 10, value=3.0)
    assert fired is not None and fired.state == "firing" and fired.fired_ns == T0 + 10 and fired.value == 3.0
    assert store.fire(a.id, T0 + 11) is None  # not pending any more
    resolved = store.resolve(a.id, T0 + 20)
    assert resolved is not None and resolved.state == "resolved" and resolved.ack_by == "somchai"
    # the first acknowledgement stands; a later one is kept as a comment under it
    again = store.ack(a.id, "malee", "closed", T0 + 30)
    assert again is not None and again.ack_by == "somchai" and again.ack_ns == T0 + 5
    assert again.ack_comment is not None and again.ack_comment.startswith("กำลังตรวจสอบ\nmalee (")
    assert again.ack_comment.endswith("): closed")
    assert store.ack("nope", "x", "", T0) is None


def test_concurrent_threads_open_one_alert(db_url: str) -> None:
    url = db_url
    AlertStore(url).close()
    barrier = threading.Barrier(12)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        store = AlertStore(url, create=False)  # separate engines and connections, like separate evaluators
        try:
            barrier.wait()
            alert, _ = _open(store, T0 + i)
            results.append(alert.id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 12 and len(set(results)) == 1
    store = AlertStore(url)
    assert len(store.list_alerts()) == 1
    store.close()


def _process_worker(url: str, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = AlertStore(url, create=False)
    barrier.wait()
    alert, created = _open(store)
    out.put((alert.id, created))
    store.close()


def test_concurrent_processes_open_one_alert(db_url: str) -> None:
    url = db_url
    AlertStore(url).close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    out = ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(url, barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    got = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert len({aid for aid, _ in got}) == 1
    assert sum(1 for _, created in got if created) == 1


async def test_concurrent_engines_share_one_alert(db_url: str, clock) -> None:
    """Two engines (e.g. an overlap during a rolling restart) evaluate the same device at once."""
    url = db_url
    stores = [AlertStore(url), AlertStore(url)]
    sinks = [PointSink(), PointSink()]
    rules = load_rules_dir().subset(["flood_level_overbank"])
    engines = [RulesEngine(rules, s, None, k, clock=clock) for s, k in zip(stores, sinks, strict=True)]
    dev = device("g-1", "flood")
    await asyncio.gather(*(e.process(reading(dev, T0, level_pct_bank=130.0), dev) for e in engines))
    assert len(stores[0].list_alerts()) == 1
    assert sum(len(s.points) for s in sinks) == 1  # only the engine that created it reports the change
    assert (
        engines[0].open_alert("flood_level_overbank", "g-1").id
        == engines[1]
        .open_alert(  # type: ignore[union-attr]
            "flood_level_overbank", "g-1"
        )
        .id
    )
    for s in stores:
        s.close()


async def test_restart_keeps_firing_alerts_and_does_not_resend(db_url: str, clock) -> None:
    url = db_url
    rules = load_rules_dir().subset(["bus_child_left", "flood_level_overbank"])
    store1 = AlertStore(url)
    sink1 = PointSink()
    pipe1, mem1 = make_pipeline(store1, clock, SIMPLE_ROUTING)
    eng1 = RulesEngine(rules, store1, pipe1, sink1, clock=clock)
    bus, gauge = device("van-1", "bus"), device("g-1", "flood")
    await eng1.process(reading(bus, T0, ignition=False, occupancy=3), bus)
    await eng1.process(reading(gauge, T0, level_pct_bank=120.0), gauge)
    clock.set(T0 + minutes(5))
    await eng1.tick()
    await pipe1.drain()
    assert len(mem1["ops"].sent) == 2  # two groups (rule, device): both alerts notified once
    await pipe1.stop()
    store1.close()

    # a new process: same database, fresh memory
    store2 = AlertStore(url)
    sink2 = PointSink()
    pipe2, mem2 = make_pipeline(store2, clock, SIMPLE_ROUTING)
    eng2 = RulesEngine(rules, store2, pipe2, sink2, clock=clock)
    await eng2.start()
    assert eng2.open_alert("bus_child_left", "van-1").state == "firing"  # type: ignore[union-attr]
    assert eng2.open_alert("flood_level_overbank", "g-1").state == "firing"  # type: ignore[union-attr]
    clock.set(T0 + minutes(7))
    await eng2.tick()
    await eng2.process(reading(bus, T0 + minutes(7), ignition=False, occupancy=3), bus)  # still true
    await pipe2.drain()
    assert mem2["ops"].sent == []  # nothing re-sent
    assert sink2.points == []  # no duplicate state change either
    await eng2.process(reading(bus, T0 + minutes(8), ignition=True, occupancy=0), bus)
    clock.set(T0 + minutes(9))
    await eng2.tick()
    await pipe2.drain()
    assert sink2.states == [("bus_child_left", "van-1", "resolved")]
    assert [m.kind for m in mem2["ops"].sent] == ["resolved"]
    await pipe2.stop()
    store2.close()


async def test_lifecycle_ack_via_helper(store: AlertStore) -> None:
    lc = AlertLifecycle(store)
    alert, changes = await lc.open(
        rule="r",
        severity="info",
        device=device(),
        t_ns=T0,
        firing=True,
        value=1.0,
        threshold=None,
        message_th="ท",
        message_en="e",
        labels={},
    )
    assert changes and changes[0].state == "firing"
    acked = await lc.ack(alert.id, "op", "ok", T0 + 1)
    assert acked is not None and acked.acknowledged


def test_postgres_url_is_accepted_lazily() -> None:
    s = AlertStore("postgresql+psycopg://u:p@127.0.0.1:1/none", create=False)
    assert s.engine.dialect.name == "postgresql"
    s.close()


def test_fired_resolved_and_flapped_snapshots_keep_every_other_field_as_dataclasses_replace_would() -> None:
    # `Alert._next` copies the fields positionally (a flapping storm makes two snapshots per reading): a field
    # added to `Alert` and forgotten there, or two fields swapped, changes what these compare.
    import dataclasses

    alert = Alert(id="a1", rule="r", device_id="d", city="c", district="di", feed="flood", severity="warning",
                  state="pending", value=1.5, threshold=2.5, message_th="th", message_en="en", labels={"k": "v"},
                  started_ns=10, fired_ns=None, resolved_ns=None, updated_ns=11, ack_by="somchai", ack_ns=12,
                  ack_comment="seen", flap_count=3)
    assert alert.fired(20, 3.5, 4.5, "th2", "en2") == dataclasses.replace(
        alert, state="firing", fired_ns=20, updated_ns=20, value=3.5, threshold=4.5, message_th="th2",
        message_en="en2")
    assert alert.fired(20) == dataclasses.replace(alert, state="firing", fired_ns=20, updated_ns=20)
    fired = alert.fired(20)
    assert fired.resolved(30, 0.5) == dataclasses.replace(fired, state="resolved", resolved_ns=30, updated_ns=30,
                                                          value=0.5)
    assert fired.resolved(30) == dataclasses.replace(fired, state="resolved", resolved_ns=30, updated_ns=30)
    assert fired.flapped(25) == dataclasses.replace(fired, flap_count=4, updated_ns=25)
