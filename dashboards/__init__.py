"""nakhon's Grafana dashboards, maintained as code: `python -m dashboards.build` writes `dashboards/json/`."""
