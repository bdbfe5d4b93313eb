"""Mosquitto dynamic-security provisioning: per-device MQTT accounts that may publish to one topic only.

Commands are JSON published to `$CONTROL/dynamic-security/v1`; Mosquitto answers on
`$CONTROL/dynamic-security/v1/response` with one entry per command carrying back our `correlationData`,
which is how each awaiting caller gets its own answer. The admin account needs the `admin` role that
`mosquitto_ctrl dynsec init` creates.

Per device:
- client `username = device_id`, a random password, role `device-{device_id}`;
- the role allows `publishClientSend` on `city/{city}/{feed}/{device_id}` and nothing else
  (the plugin's default ACL access denies publishing and subscribing).
Retiring deletes the client (Mosquitto then disconnects any session using it); rotation sets a new password
and kicks live sessions by disabling and re-enabling the client, so the old password stops working at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import gmqtt

from gateway.errors import ProvisioningError
from gateway.registry.schemas import topic_for

log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"
COLLECTORS_ROLE = "collectors"
SHARE_GROUP = "nakhon"
# What the collectors read: native topics and the LoRaWAN network servers' (TTN v3 `v3/...`, ChirpStack
# `application/...`). A role allowed `city/#` is refused `$share/nakhon/city/#`, so each filter is granted twice.
COLLECTOR_FILTERS = ("city/#", "v3/#", "application/#")


def device_role(device_id: str) -> str:
    return f"device-{device_id}"


class DynsecCommandError(ProvisioningError):
    """Mosquitto refused one command; `command` names it, `error` is Mosquitto's own text."""

    code = "broker_command_refused"

    def __init__(self, command: str, error: str, **context: Any) -> None:
        super().__init__(f"Mosquitto refused {command}: {error}", command=command, broker_error=error, **context)
        self.command = command
        self.error = error


class DynsecTimeoutError(ProvisioningError):
    code = "broker_timeout"


class DynsecUnavailableError(ProvisioningError):
    code = "broker_unavailable"


class Provisioner(Protocol):
    """What the API and CLI need from the broker. Every method takes effect at once on the broker."""

    async def create_device_client(self, device_id: str, password: str, *, city: str, feed: str) -> None: ...

    async def set_device_password(self, device_id: str, password: str) -> None: ...

    async def update_device_topic(self, device_id: str, *, old_topic: str, new_topic: str) -> None: ...

    async def revoke_device_client(self, device_id: str) -> None: ...

    async def ensure_collector_account(self, username: str, password: str) -> None: ...

    async def close(self) -> None: ...


def _strip_secrets(command: dict[str, Any]) -> dict[str, Any]:
    return {k: ("***" if k == "password" else v) for k, v in command.items()}


class DynsecClient:
    """One admin MQTT connection to the broker; `execute()` sends commands and awaits their answers."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        timeout_s: float = 10.0,
        client_id: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.timeout_s = timeout_s
        self.client_id = client_id or f"nakhon-gateway-{uuid.uuid4().hex[:12]}"
        self._client: gmqtt.Client | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._subscribed: asyncio.Event | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._ids = itertools.count(1)

    def __repr__(self) -> str:  # never show the password
        return f"DynsecClient({self.host}:{self.port}, user={self.username!r})"

    async def connect(self) -> None:
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._client is not None and self._client.is_connected:
                return
            client = gmqtt.Client(self.client_id)
            client.set_auth_credentials(self.username, self._password)
            client.on_message = self._on_message
            self._subscribed = asyncio.Event()
            client.on_subscribe = lambda *_args: self._subscribed.set() if self._subscribed else None
            try:
                await asyncio.wait_for(
                    client.connect(self.host, self.port, version=gmqtt.constants.MQTTv311), self.timeout_s
                )
            except TimeoutError as exc:
                raise DynsecTimeoutError(
                    f"no answer from the MQTT broker at {self.host}:{self.port} within {self.timeout_s:g}s",
                    host=self.host,
                    port=self.port,
                ) from exc
            except Exception as exc:  # refused credentials (CONNACK 5/135), connection refused, DNS ...
                raise DynsecUnavailableError(
                    f"cannot connect to the MQTT broker at {self.host}:{self.port} as {self.username!r}: {exc}",
                    host=self.host,
                    port=self.port,
                ) from exc
            client.subscribe(RESPONSE_TOPIC, qos=1)
            try:
                await asyncio.wait_for(self._subscribed.wait(), self.timeout_s)
            except TimeoutError as exc:
                await client.disconnect()
                raise DynsecTimeoutError("the broker did not confirm the dynamic-security subscription") from exc
            self._client = client

    def _on_message(self, _client: Any, topic: str, payload: bytes, _qos: int, _props: Any) -> int:
        if topic != RESPONSE_TOPIC:
            return 0
        try:
            responses = json.loads(payload).get("responses", [])
        except (ValueError, AttributeError):
            log.warning("unreadable dynamic-security response ignored")
            return 0
        for response in responses:
            future = self._pending.pop(str(response.get("correlationData")), None)
            if future is not None and not future.done():
                future.set_result(response)
        return 0

    async def execute(
        self, commands: Sequence[dict[str, Any]], *, tolerate: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """Send commands in one message and return Mosquitto's answers, in order.

        An answer with an `error` raises `DynsecCommandError`, unless its text contains one of `tolerate`
        (e.g. "already exists" when making something idempotently).
        """
        await self.connect()
        assert self._client is not None
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[dict[str, Any]]] = []
        sent = []
        for command in commands:
            correlation = f"{self.client_id}-{next(self._ids)}"
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._pending[correlation] = future
            futures.append(future)
            sent.append({**command, "correlationData": correlation})
        self._client.publish(CONTROL_TOPIC, json.dumps({"commands": sent}), qos=1)
        try:
            responses = await asyncio.wait_for(asyncio.gather(*futures), self.timeout_s)
        except TimeoutError as exc:
            for command in sent:
                self._pending.pop(command["correlationData"], None)
            names = ", ".join(c["command"] for c in commands)
            raise DynsecTimeoutError(
                f"the broker did not answer {names} within {self.timeout_s:g}s (is dynamic security loaded?)",
                commands=[_strip_secrets(c) for c in commands],
            ) from exc
        for command, response in zip(commands, responses, strict=True):
            error = response.get("error")
            if error and not any(t in error for t in tolerate):
                context = {k: v for k, v in command.items() if k in ("username", "rolename", "acltype", "topic")}
                raise DynsecCommandError(command["command"], error, **context)
        return list(responses)

    async def close(self) -> None:
        client, self._client = self._client, None
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        self._pending.clear()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.disconnect()


class MosquittoProvisioner:
    """The real provisioner: dynamic-security commands over one lazily opened admin connection."""

    def __init__(self, host: str, port: int, admin_username: str, admin_password: str, *, timeout_s: float = 10.0):
        self.client = DynsecClient(host, port, admin_username, admin_password, timeout_s=timeout_s)

    def __repr__(self) -> str:
        return f"MosquittoProvisioner({self.client.host}:{self.client.port})"

    async def create_device_client(self, device_id: str, password: str, *, city: str, feed: str) -> None:
        role = device_role(device_id)
        topic = topic_for(city, feed, device_id)
        # Roles and the client are created in order; a half-provisioned device (from an earlier failure) is
        # completed rather than refused, hence the tolerated "already exists" on the role.
        await self.client.execute(
            [{"command": "createRole", "rolename": role, "textname": f"publish {topic} only"}],
            tolerate=("already exists",),
        )
        await self.client.execute(
            [
                {
                    "command": "addRoleACL",
                    "rolename": role,
                    "acltype": "publishClientSend",
                    "topic": topic,
                    "priority": 0,
                    "allow": True,
                }
            ],
            tolerate=("already exists",),
        )
        await self.client.execute(
            [
                {
                    "command": "createClient",
                    "username": device_id,
                    "password": password,
                    "textname": f"nakhon device {device_id}",
                    "roles": [{"rolename": role, "priority": 0}],
                }
            ]
        )

    async def set_device_password(self, device_id: str, password: str) -> None:
        await self.client.execute([{"command": "setClientPassword", "username": device_id, "password": password}])
        # Sessions that authenticated with the old password stay connected unless kicked: disabling the client
        # disconnects them, and enabling it again lets the device reconnect with its new password.
        await self.client.execute(
            [{"command": "disableClient", "username": device_id}, {"command": "enableClient", "username": device_id}]
        )

    async def update_device_topic(self, device_id: str, *, old_topic: str, new_topic: str) -> None:
        if old_topic == new_topic:
            return
        role = device_role(device_id)
        await self.client.execute(
            [
                {
                    "command": "addRoleACL",
                    "rolename": role,
                    "acltype": "publishClientSend",
                    "topic": new_topic,
                    "priority": 0,
                    "allow": True,
                }
            ],
            tolerate=("already exists",),
        )
        await self.client.execute(
            [{"command": "removeRoleACL", "rolename": role, "acltype": "publishClientSend", "topic": old_topic}],
            tolerate=("not found",),
        )

    async def revoke_device_client(self, device_id: str) -> None:
        # deleteClient disconnects live sessions of that username; a missing client is already revoked.
        await self.client.execute(
            [
                {"command": "deleteClient", "username": device_id},
                {"command": "deleteRole", "rolename": device_role(device_id)},
            ],
            tolerate=("not found",),
        )

    async def ensure_collector_account(self, username: str, password: str) -> None:
        """The collectors' account: subscribe (also as shared-subscription members) to every device topic."""
        await self.client.execute(
            [{"command": "createRole", "rolename": COLLECTORS_ROLE, "textname": "nakhon collectors"}],
            tolerate=("already exists",),
        )
        acls: list[dict[str, Any]] = []
        for topic_filter in COLLECTOR_FILTERS:
            for pattern in (topic_filter, f"$share/{SHARE_GROUP}/{topic_filter}"):
                acls.append(
                    {
                        "command": "addRoleACL",
                        "rolename": COLLECTORS_ROLE,
                        "acltype": "subscribePattern",
                        "topic": pattern,
                        "priority": 0,
                        "allow": True,
                    }
                )
            acls.append(
                {
                    "command": "addRoleACL",
                    "rolename": COLLECTORS_ROLE,
                    "acltype": "publishClientReceive",
                    "topic": topic_filter,
                    "priority": 0,
                    "allow": True,
                }
            )
        await self.client.execute(acls, tolerate=("already exists",))
        answers = await self.client.execute(
            [
                {
                    "command": "createClient",
                    "username": username,
                    "password": password,
                    "textname": "nakhon collectors",
                    "roles": [{"rolename": COLLECTORS_ROLE, "priority": 0}],
                }
            ],
            tolerate=("already exists",),
        )
        if answers[0].get("error"):  # it existed: make the given password the one that works
            await self.client.execute(
                [
                    {"command": "setClientPassword", "username": username, "password": password},
                    {"command": "addClientRole", "username": username, "rolename": COLLECTORS_ROLE, "priority": 0},
                ],
                tolerate=("already",),
            )

    async def close(self) -> None:
        await self.client.close()


@dataclass
class FakeProvisioner:
    """In-process stand-in for unit tests: records every call (passwords masked) and keeps the accounts."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    clients: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_with: Exception | None = None

    def _record(self, name: str, **args: Any) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.calls.append((name, _strip_secrets(args)))

    async def create_device_client(self, device_id: str, password: str, *, city: str, feed: str) -> None:
        self._record("create_device_client", device_id=device_id, password=password, city=city, feed=feed)
        if device_id in self.clients:
            raise DynsecCommandError("createClient", "Client already exists", username=device_id)
        self.clients[device_id] = {"password": password, "topic": topic_for(city, feed, device_id)}

    async def set_device_password(self, device_id: str, password: str) -> None:
        self._record("set_device_password", device_id=device_id, password=password)
        if device_id not in self.clients:
            raise DynsecCommandError("setClientPassword", "Client not found", username=device_id)
        self.clients[device_id]["password"] = password

    async def update_device_topic(self, device_id: str, *, old_topic: str, new_topic: str) -> None:
        self._record("update_device_topic", device_id=device_id, old_topic=old_topic, new_topic=new_topic)
        if device_id in self.clients:
            self.clients[device_id]["topic"] = new_topic

    async def revoke_device_client(self, device_id: str) -> None:
        self._record("revoke_device_client", device_id=device_id)
        self.clients.pop(device_id, None)

    async def ensure_collector_account(self, username: str, password: str) -> None:
        self._record("ensure_collector_account", username=username, password=password)
        self.clients[username] = {"password": password, "role": COLLECTORS_ROLE}

    async def close(self) -> None:
        self._record("close")

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]
