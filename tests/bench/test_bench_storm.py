"""`nakhon bench --scenario storm` small: every scenario drains its calm and storm backlogs losslessly, the storm
really changes alert states, and the alert store agrees with the `alerts` measurement afterwards.

Correctness only (counts, consistency): drain rates and the storm / calm ratio are the benchmark's business
(bench/README.md), never asserted by a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.storm import (
    SCENARIO_SPECS,
    alert_consistency,
    notify_wait_for,
    prefix_rate,
    seconds_to,
    summarise_runs,
)


@pytest.mark.slow
def test_storm_scenarios_small_are_lossless_and_the_alert_store_matches_the_measurement(tmp_path: Path) -> None:
    out = tmp_path / "storm.json"
    proc = subprocess.run(
        [sys.executable, "-m", "nakhon.cli", "bench", "--scenario", "storm", "--messages", "800", "--stations", "20",
         "--pace", "2000", "--notify-wait", "0", "--json-out", str(out)],
        capture_output=True, text=True, timeout=480,
    )
    assert proc.returncode == 0, f"nakhon bench exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert [s["scenario"] for s in result["scenarios"]] == ["haze", "flapping", "flood"]
    assert result["lost"] == 0 and result["duplicates"] == 0
    assert result["alerts_consistent"], result["alerts_consistency"]
    for s in result["scenarios"]:
        for phase in ("calm", "storm"):
            figures = s[phase]
            assert figures["drained"], (s["scenario"], phase, figures)
            assert figures["acknowledged_by_broker"] == figures["published"] == 800
            assert figures["evaluated"] >= 800 and figures["stored"] >= 800
            assert figures["collector_cpu_us_per_msg"] > 0
            assert isinstance(figures["full_gc_collections"], int) and figures["full_gc_collections"] >= 0
            assert figures["progress"][-1][1:] == [figures["received"], figures["stored"], figures["evaluated"]]
        assert s["lost"] == 0
        assert "calm" in s and "storm_to_calm" in s and "notifications_storm_phase" in s
    # haze and flood storms begin with a fifth of calm readings (800 / 5); every flapping reading is a storm one
    assert [(s["calm_prefix"] or {}).get("readings") for s in result["scenarios"]] == [160, None, 160]
    haze, flapping, flood = (s["alerts_of_storm_devices_by_state"] for s in result["scenarios"])
    assert haze == {"firing": 20}  # every station crossed AQI 100 and stayed past `for: 1h`
    # 40 readings per device ~38 s apart: each pair a flap shorter than show_pending_after_s (60 s), so a
    # candidate proposed and withdrawn, never an alert
    assert flapping == {}
    flaps = result["scenarios"][1]["storm"]["alert_candidates"]
    assert flaps["proposed"] >= 20 * 20 and flaps["withdrawn"] >= 20 * 19 and flaps["shown"] == 0
    assert flood.get("firing", 0) >= 2 * 20  # every gauge: high, then overbank


@pytest.mark.slow
def test_the_control_scenario_repeated_drains_two_calm_backlogs_per_run_and_summarises_the_runs(
        tmp_path: Path) -> None:
    """`--scenario control --repeat 2`: two independent runs, each a calm and a second calm backlog (no alert),
    and a summary listing both runs' ratios."""
    out = tmp_path / "control.json"
    proc = subprocess.run(
        [sys.executable, "-m", "nakhon.cli", "bench", "--scenario", "control", "--repeat", "2", "--messages", "200",
         "--stations", "10", "--pace", "2000", "--notify-wait", "0", "--json-out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"nakhon bench exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert len(result["runs"]) == 2 and result["lost"] == 0 and result["duplicates"] == 0
    assert result["alerts_consistent"]
    for run in result["runs"]:
        (control,) = run["scenarios"]
        assert control["scenario"] == "control"
        assert control["calm"]["drained"] and control["storm"]["drained"]
        assert control["alerts_of_storm_devices_by_state"] == {}
        assert control["storm"]["alert_candidates"]["proposed"] == 0
    summary = result["summary"]["control"]
    assert summary["runs"] == 2
    assert summary["storm_to_calm"] == [run["scenarios"][0]["storm_to_calm"] for run in result["runs"]]


def test_the_control_scenarios_second_backlog_is_the_calm_one() -> None:
    from nakhon.sim.city import City

    device = City().device("air", 0)
    control = SCENARIO_SPECS["control"]
    assert [control.storm(device, k, 100) for k in (0, 50, 99)] == [SCENARIO_SPECS["haze"].storm(device, 0, 100)] * 3


def test_the_summary_of_repeated_runs_gives_each_scenarios_ratios_median_and_worst() -> None:
    def run(haze: float, flood: float) -> dict[str, object]:
        def scenario(name: str, ratio: float) -> dict[str, object]:
            return {"scenario": name, "storm_to_calm": ratio, "storm_to_calm_cpu_per_msg": 1.0, "lost": 0,
                    "calm": {"msgs_per_s": 20000.0, "collector_peak_rss_mb": 200.0},
                    "storm": {"msgs_per_s": 20000.0 * ratio, "collector_peak_rss_mb": 210.0 + ratio}}
        return {"scenarios": [scenario("haze", haze), scenario("flood", flood)]}

    summary = summarise_runs([run(0.7, 1.1), run(0.9, 0.95), run(1.2, 0.85)])
    assert summary["haze"]["storm_to_calm"] == [0.7, 0.9, 1.2]
    assert summary["haze"]["storm_to_calm_median"] == 0.9
    assert (summary["haze"]["storm_to_calm_min"], summary["haze"]["storm_to_calm_max"]) == (0.7, 1.2)
    assert summary["haze"]["runs_ge_0.8"] == 2 and summary["flood"]["runs_ge_0.8"] == 3
    assert summary["haze"]["median_ge_0.8"] and summary["flood"]["median_ge_0.8"]
    assert not summarise_runs([run(0.7, 0.9), run(0.79, 0.9), run(1.2, 0.9)])["haze"]["median_ge_0.8"]
    assert summary["flood"]["storm_to_calm_median"] == 0.95
    assert summary["haze"]["storm_msgs_per_s_median"] == 18000.0
    assert summary["haze"]["collector_peak_rss_mb_max"] == 211.2


def test_the_time_to_a_count_is_interpolated_between_the_polls_around_it_and_waits_for_both_counters() -> None:
    # [s, received, stored, evaluated]: a reading counts once it is stored *and* evaluated
    progress = [[0.2, 3000, 1000, 2000], [0.4, 5000, 3000, 3000], [0.6, 7000, 5000, 4000], [0.8, 8000, 8000, 8000]]
    assert seconds_to(progress, 1000) == 0.2
    assert seconds_to(progress, 2000) == 0.2 + 0.2 * (2000 - 1000) / (3000 - 1000)
    assert seconds_to(progress, 4000) == 0.6  # stored 5000 but evaluated only 4000 at 0.6 s
    assert abs(seconds_to(progress, 6000) - (0.6 + 0.2 * 2000 / 4000)) < 1e-9
    assert seconds_to(progress, 9000) is None  # never reached
    assert prefix_rate({"progress": progress}, 4000) == round(4000 / 0.6, 1)
    assert prefix_rate({"progress": []}, 10) is None


def test_only_the_scenarios_whose_storm_begins_calm_have_a_calm_prefix_and_it_really_is_calm() -> None:
    from nakhon.sim.city import City

    city = City()
    for name, spec in SCENARIO_SPECS.items():
        device = city.device(spec.feeds[0], 0)
        calm = SCENARIO_SPECS["control"].storm(device, 0, 100)
        first_storm = next((k for k in range(100) if spec.storm(device, k, 100) != calm), 100)
        assert first_storm == int(100 * spec.calm_prefix), name  # haze, flood: 20; flapping: 0; control: 100


def test_the_default_notify_wait_outlasts_the_shipped_group_wait_of_each_scenarios_feeds() -> None:
    # shipped routing: air alerts wait 2 min before their group is sent, everything else 30 s
    assert notify_wait_for(SCENARIO_SPECS["haze"]) == 120 + 10
    assert notify_wait_for(SCENARIO_SPECS["flapping"]) == notify_wait_for(SCENARIO_SPECS["flood"]) == 30 + 10
    assert notify_wait_for(SCENARIO_SPECS["control"]) == 0  # a calm second backlog: nothing to notify


def test_alert_consistency_counts_every_kind_of_disagreement() -> None:
    store = {"a": "firing", "b": "resolved", "c": "pending"}
    points = {"a": (3, "firing"), "b": (5, "firing"), "d": (1, "pending")}
    assert alert_consistency(store, points) == {
        "alerts_in_store": 3,
        "alerts_in_measurement": 3,
        "missing_in_measurement": 1,
        "missing_in_store": 1,
        "state_mismatches": 1,
    }


def test_the_routing_without_quiet_hours_is_the_shipped_one_minus_only_its_quiet_hours(tmp_path: Path) -> None:
    """`--no-quiet-hours` (a run at night in Bangkok would otherwise count no message): the shipped routing
    still loads, every route keeps its receiver, grouping and waits, and no route keeps quiet hours."""
    import yaml

    from bench.storm import without_quiet_hours
    from rules.notify.routing import DEFAULT_ROUTING_FILE, load_routing

    shipped = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text(encoding="utf-8"))
    assert "quiet_hours" in shipped["route"]  # else this test attacks nothing
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(without_quiet_hours(shipped), allow_unicode=True), encoding="utf-8")
    loaded, original = load_routing(path), load_routing(DEFAULT_ROUTING_FILE)
    routes = [loaded.route, *loaded.route.routes]
    assert all(r.quiet_hours is None for r in routes)
    assert loaded.model_dump(exclude={"route"}) == original.model_dump(exclude={"route"})
    assert loaded.route.model_dump(exclude={"quiet_hours", "routes"}) == original.route.model_dump(
        exclude={"quiet_hours", "routes"})
    assert [r.model_dump(exclude={"quiet_hours"}) for r in loaded.route.routes] == [
        r.model_dump(exclude={"quiet_hours"}) for r in original.route.routes]
