"""Broker provisioning: Mosquitto dynamic security (per-device accounts and ACLs, the collectors' account)."""

from gateway.broker.dynsec import (
    COLLECTORS_ROLE,
    DEVICE_ACCOUNT_PREFIX,
    BrokerAccountNotOwnedError,
    DeviceAccount,
    DynsecClient,
    DynsecCommandError,
    DynsecTimeoutError,
    DynsecUnavailableError,
    FakeProvisioner,
    MosquittoProvisioner,
    Provisioner,
    ServiceAccountNameError,
    device_account,
)

__all__ = [
    "COLLECTORS_ROLE",
    "DEVICE_ACCOUNT_PREFIX",
    "BrokerAccountNotOwnedError",
    "DeviceAccount",
    "DynsecClient",
    "DynsecCommandError",
    "DynsecTimeoutError",
    "DynsecUnavailableError",
    "FakeProvisioner",
    "MosquittoProvisioner",
    "Provisioner",
    "ServiceAccountNameError",
    "device_account",
]
