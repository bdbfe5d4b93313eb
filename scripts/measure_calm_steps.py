"""Calm backlog drains of several versions of the collector's code, on the same servers, in one session.

    git archive <rev> | tar -x -C /tmp/base      # one tree per step
    cd /tmp && /path/to/.venv/bin/python /path/to/scripts/measure_calm_steps.py \
        --variants base=/tmp/base,new= --rounds 2 --messages 100000 --out calm.json

Run it from a directory without a `collectors/` or `nakhon/` package: `python -m nakhon.cli` puts the current
directory first on sys.path, before the PYTHONPATH that selects a variant (an empty path: the installed tree).
Per round and variant (alternating): a fresh set of `--stations` air stations gets a calm backlog (PM2.5 10) of
`--messages` readings queued for the collector's offline session, the collector starts with that variant's code
and drains it (`bench.storm.drain`: until every point is stored and every reading evaluated). Besides the
drain rate it reports `drain_cpu_us_per_msg`: collector CPU from its TCP connection to the broker to the end
of the drain, per reading (start-up excluded): the figure that stays comparable on a shared machine.
`--pyspy variant:round` records a py-spy profile (raw format) of that drain.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.ingest import (
    ProcessSampler,
    _import_devices,
    _servers,
    _start_collector,
    _stop_collector,
    _wait_healthy,
    _write_config,
)
from bench.storm import SCENARIO_SPECS, _calm, _cpu_s, _messages, drain, publish_backlog
from nakhon.sim.city import City


def _collector_cpu_s(pid: int) -> float:
    cpu = _cpu_s(pid)
    if cpu is None:
        raise RuntimeError(f"collector {pid} ended before its CPU time could be read")
    return cpu


def _on_connect(pid: int, port: int, then: Any) -> None:
    """In a thread: call `then(process)` once process `pid` has a TCP connection to `port`."""

    def watch() -> None:
        proc = psutil.Process(pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if any(c.raddr and c.raddr.port == port for c in proc.net_connections(kind="tcp")):
                    then(proc)
                    return
            except psutil.Error:
                return
            time.sleep(0.01)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="new=", help="name=PYTHONPATH,... (empty path: the installed tree)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--stations", type=int, default=1000)
    ap.add_argument("--pyspy", default="", help="variant:round to profile")
    ap.add_argument("--pyspy-s", type=int, default=10)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    variants = [tuple(v.split("=", 1)) for v in args.variants.split(",")]
    servers = _servers()
    root = Path(tempfile.mkdtemp(prefix="nakhon-calm-steps-"))
    city = City()
    sets = [[city.device("air", k * args.stations + i) for i in range(args.stations)]
            for k in range(args.rounds * len(variants))]
    broker, influx = servers.MosquittoServer(root), servers.InfluxServer(root)
    http = httpx.Client(timeout=30)
    results: list[dict[str, Any]] = []
    try:
        broker.start()
        influx.start()
        metrics_port, gateway_port = servers.free_port(), servers.free_port()
        config = _write_config(root, broker.url, influx.url, metrics_port, gateway_port)
        _import_devices(config, [d for s in sets for d in s])
        log_path = root / "collector.log"
        assert broker.proc is not None and influx.proc is not None
        groups = {"mosquitto": [broker.proc.pid], "influxd": [influx.proc.pid]}
        first = _start_collector(config, log_path)  # the persistent session the backlogs are queued for
        _wait_healthy(http, first, metrics_port, log_path)
        _stop_collector(first)
        for k, (r, (name, path)) in enumerate((r, v) for r in range(args.rounds) for v in variants):
            devices = sets[k]
            per_device = max(1, args.messages // len(devices))
            backlog = publish_backlog(broker.port, _messages(devices, per_device, SCENARIO_SPECS["haze"].span_s,
                                                             lambda d, _k, _n: _calm(d)), 6000.0)
            at_connect: list[float] = []
            profile = args.pyspy == f"{name}:{r}"

            def start(path: str = path, profile: bool = profile, name: str = name, r: int = r,
                      at_connect: list[float] = at_connect) -> Any:
                env = dict(os.environ)
                os.environ.pop("PYTHONPATH", None)
                if path:
                    os.environ["PYTHONPATH"] = path
                try:
                    proc = _start_collector(config, log_path)
                finally:
                    os.environ.clear()
                    os.environ.update(env)

                def connected(p: psutil.Process) -> None:
                    at_connect.append(_collector_cpu_s(p.pid))
                    if profile:
                        subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                                          str(p.pid), "-d", str(args.pyspy_s), "-r", "200", "-f", "raw", "-o",
                                          str(root / f"prof-{name}-{r}.txt")], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)

                _on_connect(proc.pid, broker.port, connected)
                return proc

            proc, sampler, fig = drain(http, start, lambda pid: ProcessSampler(groups, pid), metrics_port,
                                       broker.port, len(backlog.acked), 600)
            cpu_end = _collector_cpu_s(proc.pid)
            sampler.stop()
            _stop_collector(proc)
            if at_connect:
                fig["drain_cpu_us_per_msg"] = round((cpu_end - at_connect[0]) / len(backlog.acked) * 1e6, 1)
            fig.update({"variant": name, "round": r, "acked": len(backlog.acked),
                        "load_average": [round(x, 2) for x in os.getloadavg()],
                        "collector_peak_rss_mb": round(sampler.peak_rss / 2**20, 1)})
            print(json.dumps(fig), flush=True)
            results.append(fig)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
        print(f"work dir (profiles): {root}", flush=True)
    finally:
        http.close()
        influx.stop()
        broker.stop()


if __name__ == "__main__":
    main()
