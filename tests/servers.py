"""Real servers for tests: see `nakhon.localservers` (shared with `nakhon bench`)."""

from nakhon.localservers import (
    InfluxServer,
    MosquittoServer,
    PrometheusServer,
    free_port,
    require_binary,
    wait_for_port,
)

__all__ = ["InfluxServer", "MosquittoServer", "PrometheusServer", "free_port", "require_binary", "wait_for_port"]
