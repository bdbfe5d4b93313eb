"""Broker provisioning: Mosquitto dynamic security (per-device accounts and ACLs, the collectors' account)."""

from gateway.broker.dynsec import (
    COLLECTORS_ROLE,
    DynsecClient,
    DynsecCommandError,
    DynsecTimeoutError,
    DynsecUnavailableError,
    FakeProvisioner,
    MosquittoProvisioner,
    Provisioner,
)

__all__ = [
    "COLLECTORS_ROLE",
    "DynsecClient",
    "DynsecCommandError",
    "DynsecTimeoutError",
    "DynsecUnavailableError",
    "FakeProvisioner",
    "MosquittoProvisioner",
    "Provisioner",
]
