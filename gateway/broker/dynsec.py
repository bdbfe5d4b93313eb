"""Mosquitto dynamic-security provisioning: per-device MQTT accounts that may publish to one topic only.

Commands are JSON published to `$CONTROL/dynamic-security/v1`; Mosquitto answers on
`$CONTROL/dynamic-security/v1/response` with one entry per command carrying back our `correlationData`,
which is how each awaiting caller gets its own answer. The admin account needs the `admin` role that
`mosquitto_ctrl dynsec init` creates.

Per device:
- client `username = device.{device_id}`, pinned to the same MQTT client id (dynsec `clientid`: a CONNECT
  with this account and any other client id is refused, so a device can never take over another client's
  session), a random password, role `device-{device_id}`;
- the role allows `publishClientSend` on `city/{city}/{feed}/{device_id}` and nothing else
  (the plugin's default ACL access denies publishing and subscribing).
Namespaces: device accounts always carry the `device.` prefix and service accounts (the admin, the collectors)
may not, so no device id can name a service account. Before changing or deleting a device's client the
gateway reads it back and checks that it is the device account it made (textname and role); anything else is
`BrokerAccountNotOwnedError` (409), never adopted.
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

from gateway.errors import ConflictError, ProvisioningError
from gateway.registry.schemas import topic_for

log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"
COLLECTORS_ROLE = "collectors"
SHARE_GROUP = "nakhon"
# What the collectors read: native topics and the LoRaWAN network servers' (TTN v3 `v3/...`, ChirpStack
# `application/...`). A role allowed `city/#` is refused `$share/nakhon/city/#`, so each filter is granted twice.
COLLECTOR_FILTERS = ("city/#", "v3/#", "application/#")


# Device ids match `[A-Za-z0-9][A-Za-z0-9_.-]*`; every device account is this prefix + the id, and no service
# account may start with it: the two namespaces cannot meet.
DEVICE_ACCOUNT_PREFIX = "device."
COLLECTORS_TEXTNAME = "nakhon collectors"


def device_role(device_id: str) -> str:
    return f"device-{device_id}"


def device_account(device_id: str) -> str:
    """The MQTT username and client id of a device (the same string: the account is pinned to it)."""
    return f"{DEVICE_ACCOUNT_PREFIX}{device_id}"


def device_textname(device_id: str) -> str:
    return f"nakhon device {device_id}"


def is_device_account(username: str) -> bool:
    return username.startswith(DEVICE_ACCOUNT_PREFIX)


class BrokerAccountNotOwnedError(ConflictError):
    """A broker client or role with the name the gateway wants exists but was not made by it for that device."""

    code = "broker_account_not_owned"
    message_th = "บัญชีนี้ในโบรกเกอร์ MQTT ไม่ได้สร้างโดยระบบสำหรับอุปกรณ์นี้ จึงไม่แก้ไขให้"


class ServiceAccountNameError(ProvisioningError):
    """A service account (collectors, gateway) named like a device account: refused, namespaces stay apart."""

    code = "service_account_name_reserved"
    status_code = 400


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

    async def create_device_client(self, device_id: str, password: str, *, city: str, feed: str) -> str:
        """Create the device's pinned account; returns its username (= client id). "already exists" raises."""
        ...

    async def set_device_password(self, device_id: str, password: str, *, username: str | None = None) -> None: ...

    async def update_device_topic(self, device_id: str, *, old_topic: str, new_topic: str) -> None: ...

    async def revoke_device_client(
        self, device_id: str, *, username: str | None = None, keep_role: bool = False
    ) -> None:
        """Delete the device's account (and its role, unless `keep_role`: another account of it still uses it)."""
        ...

    async def ensure_collector_account(self, username: str, password: str, *, client_id: str | None = None) -> None: ...

    async def device_accounts(self) -> dict[str, DeviceAccount]:
        """Every device account on the broker (prefixed or made by an older gateway), by username."""
        ...

    async def pin_client(self, username: str, client_id: str) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DeviceAccount:
    """A device client as the broker has it: what `nakhon devices reconcile` compares with the registry."""

    username: str
    device_id: str
    client_id: str | None
    topics: tuple[str, ...]
    disabled: bool = False


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
            stale, self._client = self._client, None
            if stale is not None:
                with contextlib.suppress(Exception):
                    await stale.disconnect()
            client = gmqtt.Client(self.client_id)
            client.set_auth_credentials(self.username, self._password)
            client.on_message = self._on_message
            client.on_disconnect = self._on_disconnect
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

    def _on_disconnect(self, client: Any, _packet: Any = None, _exc: Any = None) -> None:
        """Lost the admin connection (e.g. another gateway process connected with the pinned client id, which
        Mosquitto answers by closing this one): fail what waits, and reconnect only on the next command, never
        in the background, so that two processes sharing the account never kick each other in a loop."""
        if self._client is not client:
            return
        lost: Any = client
        self._client = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(
                    DynsecUnavailableError(
                        f"the broker closed the gateway's admin connection (client id {self.client_id!r}; is another "
                        "gateway process using it?); the command may or may not have been applied",
                        host=self.host,
                        port=self.port,
                    )
                )
        self._pending.clear()
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(lost.disconnect())  # stops gmqtt's own reconnect loop

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

    def __init__(
        self,
        host: str,
        port: int,
        admin_username: str,
        admin_password: str,
        *,
        timeout_s: float = 10.0,
        client_id: str | None = None,
    ):
        """`client_id`: the one the admin account is pinned to (`pin_admin_account()`); None: a random one."""
        self.client = DynsecClient(host, port, admin_username, admin_password, timeout_s=timeout_s, client_id=client_id)

    def __repr__(self) -> str:
        return f"MosquittoProvisioner({self.client.host}:{self.client.port})"

    async def get_client(self, username: str) -> dict[str, Any] | None:
        answers = await self.client.execute([{"command": "getClient", "username": username}], tolerate=("not found",))
        if answers[0].get("error"):
            return None
        client: dict[str, Any] = answers[0].get("data", {}).get("client", {})
        return client

    async def _owned_device_client(self, device_id: str, username: str) -> bool:
        """True if `username` is the device account this gateway made for `device_id`; False if there is none.
        Anything else by that name raises: the gateway never touches a client it did not create for the device."""
        client = await self.get_client(username)
        if client is None:
            return False
        roles = [r.get("rolename") for r in client.get("roles", [])]
        if client.get("textname") != device_textname(device_id) or roles != [device_role(device_id)]:
            raise BrokerAccountNotOwnedError(
                f"the broker client {username!r} exists but is not the MQTT account of device {device_id!r}; "
                "it is left alone",
                device_id=device_id,
                username=username,
            )
        return True

    async def _owned_device_role(self, device_id: str) -> bool:
        role = device_role(device_id)
        answers = await self.client.execute([{"command": "getRole", "rolename": role}], tolerate=("not found",))
        if answers[0].get("error"):
            return False
        data = answers[0].get("data", {}).get("role", {})
        textname = str(data.get("textname", ""))
        acls = data.get("acls", [])
        if not textname.startswith("publish city/") or any(a.get("acltype") != "publishClientSend" for a in acls):
            raise BrokerAccountNotOwnedError(
                f"the broker role {role!r} exists but was not made by nakhon for device {device_id!r}",
                device_id=device_id,
                rolename=role,
            )
        return True

    async def create_device_client(self, device_id: str, password: str, *, city: str, feed: str) -> str:
        role = device_role(device_id)
        username = device_account(device_id)
        topic = topic_for(city, feed, device_id)
        # A half-provisioned device (a role left by an earlier failure) is completed, but only a role that is
        # ours; an existing client is never adopted ("already exists" raises, the caller answers 409).
        if await self._owned_device_role(device_id):
            stale = [t for t in await self._role_topics(role) if t != topic]
            if stale:
                await self.client.execute(
                    [
                        {"command": "removeRoleACL", "rolename": role, "acltype": "publishClientSend", "topic": t}
                        for t in stale
                    ],
                    tolerate=("not found",),
                )
        else:
            await self.client.execute(
                [{"command": "createRole", "rolename": role, "textname": f"publish {topic} only"}],
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
                    "username": username,
                    "clientid": username,
                    "password": password,
                    "textname": device_textname(device_id),
                    "roles": [{"rolename": role, "priority": 0}],
                }
            ]
        )
        return username

    async def _role_topics(self, role: str) -> list[str]:
        answers = await self.client.execute([{"command": "getRole", "rolename": role}], tolerate=("not found",))
        acls = answers[0].get("data", {}).get("role", {}).get("acls", [])
        return [str(a.get("topic")) for a in acls if a.get("acltype") == "publishClientSend"]

    async def set_device_password(self, device_id: str, password: str, *, username: str | None = None) -> None:
        username = username or device_account(device_id)
        if not await self._owned_device_client(device_id, username):
            raise DynsecCommandError("setClientPassword", "Client not found", username=username)
        await self.client.execute([{"command": "setClientPassword", "username": username, "password": password}])
        # Sessions that authenticated with the old password stay connected unless kicked: disabling the client
        # disconnects them, and enabling it again lets the device reconnect with its new password.
        await self.client.execute(
            [{"command": "disableClient", "username": username}, {"command": "enableClient", "username": username}]
        )

    async def update_device_topic(self, device_id: str, *, old_topic: str, new_topic: str) -> None:
        if old_topic == new_topic:
            return
        role = device_role(device_id)
        if not await self._owned_device_role(device_id):
            raise DynsecCommandError("addRoleACL", "Role not found", rolename=role)
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

    async def revoke_device_client(
        self, device_id: str, *, username: str | None = None, keep_role: bool = False
    ) -> None:
        # deleteClient disconnects live sessions of that username; a missing client is already revoked.
        # (A role must not be deleted while a client still names it: Mosquitto 2.0 then fails every listClients.)
        username = username or device_account(device_id)
        commands: list[dict[str, Any]] = []
        if await self._owned_device_client(device_id, username):
            commands.append({"command": "deleteClient", "username": username})
        if not keep_role and await self._owned_device_role(device_id):
            commands.append({"command": "deleteRole", "rolename": device_role(device_id)})
        if commands:
            await self.client.execute(commands, tolerate=("not found",))

    async def ensure_collector_account(self, username: str, password: str, *, client_id: str | None = None) -> None:
        """The collectors' account: subscribe (also as shared-subscription members) to every device topic,
        pinned to the collectors' client id so that no other account can take over their session."""
        if is_device_account(username) or username == self.client.username:
            raise ServiceAccountNameError(
                f"the collectors' MQTT username {username!r} is reserved (device accounts start with "
                f"{DEVICE_ACCOUNT_PREFIX!r}; the admin account is the gateway's): choose another",
                username=username,
            )
        if client_id is not None and is_device_account(client_id):
            raise ServiceAccountNameError(
                f"the collectors' MQTT client id {client_id!r} starts with {DEVICE_ACCOUNT_PREFIX!r}, "
                "which is reserved for devices",
                client_id=client_id,
            )
        existing = await self.get_client(username)
        if existing is not None:
            roles = [r.get("rolename") for r in existing.get("roles", [])]
            if existing.get("textname") != COLLECTORS_TEXTNAME or roles != [COLLECTORS_ROLE]:
                raise BrokerAccountNotOwnedError(
                    f"the broker client {username!r} exists but is not the collectors' account; it is left alone",
                    username=username,
                )
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
        pin = {"clientid": client_id} if client_id else {}
        if existing is None:
            await self.client.execute(
                [
                    {
                        "command": "createClient",
                        "username": username,
                        "password": password,
                        "textname": COLLECTORS_TEXTNAME,
                        "roles": [{"rolename": COLLECTORS_ROLE, "priority": 0}],
                        **pin,
                    }
                ]
            )
            return
        # It existed: make the given password the one that works and (re)pin it. Both only when changed, as
        # modifying a client disconnects its live sessions.
        if pin and existing.get("clientid") != client_id:
            await self.client.execute([{"command": "modifyClient", "username": username, **pin}])
        await self.client.execute([{"command": "setClientPassword", "username": username, "password": password}])

    async def pin_client(self, username: str, client_id: str) -> None:
        """Pin an existing client to one client id (modifying a client disconnects its live sessions)."""
        await self.client.execute([{"command": "modifyClient", "username": username, "clientid": client_id}])

    async def pin_admin_account(self) -> bool:
        """Pin the gateway's own admin account to the client id it connects with; True if it was changed.
        (Mosquitto then drops this very connection; the next command reconnects.)"""
        client = await self.get_client(self.client.username)
        if client is None or client.get("clientid") == self.client.client_id:
            return False
        # The broker may close our connection as it applies the pin: that answer is expected.
        with contextlib.suppress(DynsecUnavailableError):
            await self.pin_client(self.client.username, self.client.client_id)
        return True

    async def device_accounts(self) -> dict[str, DeviceAccount]:
        answers = await self.client.execute(
            [{"command": "listClients", "verbose": True}, {"command": "listRoles", "verbose": True}]
        )
        clients = answers[0].get("data", {}).get("clients", [])
        role_topics: dict[str, tuple[str, ...]] = {}
        for role in answers[1].get("data", {}).get("roles", []):
            role_topics[str(role.get("rolename"))] = tuple(
                str(a.get("topic")) for a in role.get("acls", []) if a.get("acltype") == "publishClientSend"
            )
        accounts: dict[str, DeviceAccount] = {}
        for client in clients:
            username = str(client.get("username", ""))
            textname = str(client.get("textname", ""))
            if not textname.startswith("nakhon device "):
                continue
            device_id = textname[len("nakhon device ") :]
            roles = [str(r.get("rolename")) for r in client.get("roles", [])]
            topics = tuple(t for r in roles for t in role_topics.get(r, ()))
            accounts[username] = DeviceAccount(
                username=username,
                device_id=device_id,
                client_id=client.get("clientid"),
                topics=topics,
                disabled=bool(client.get("disabled", False)),
            )
        return accounts

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

    async def create_device_client(self, device_id: str, password: str, *, city: str, feed: str) -> str:
        self._record("create_device_client", device_id=device_id, password=password, city=city, feed=feed)
        username = device_account(device_id)
        if username in self.clients:
            raise DynsecCommandError("createClient", "Client already exists", username=username)
        self.clients[username] = {
            "password": password,
            "topic": topic_for(city, feed, device_id),
            "device_id": device_id,
            "clientid": username,
        }
        return username

    def _owned(self, device_id: str, username: str) -> bool:
        client = self.clients.get(username)
        if client is None:
            return False
        if client.get("device_id") != device_id:
            raise BrokerAccountNotOwnedError(f"the broker client {username!r} is not device {device_id!r}'s")
        return True

    async def set_device_password(self, device_id: str, password: str, *, username: str | None = None) -> None:
        username = username or device_account(device_id)
        self._record("set_device_password", device_id=device_id, password=password, username=username)
        if not self._owned(device_id, username):
            raise DynsecCommandError("setClientPassword", "Client not found", username=username)
        self.clients[username]["password"] = password

    async def update_device_topic(self, device_id: str, *, old_topic: str, new_topic: str) -> None:
        self._record("update_device_topic", device_id=device_id, old_topic=old_topic, new_topic=new_topic)
        for client in self.clients.values():
            if client.get("device_id") == device_id:
                client["topic"] = new_topic

    async def revoke_device_client(
        self, device_id: str, *, username: str | None = None, keep_role: bool = False
    ) -> None:
        username = username or device_account(device_id)
        self._record("revoke_device_client", device_id=device_id, username=username, keep_role=keep_role)
        if self._owned(device_id, username):
            self.clients.pop(username, None)

    async def ensure_collector_account(self, username: str, password: str, *, client_id: str | None = None) -> None:
        self._record("ensure_collector_account", username=username, password=password, client_id=client_id)
        self.clients[username] = {"password": password, "role": COLLECTORS_ROLE, "clientid": client_id}

    async def pin_client(self, username: str, client_id: str) -> None:
        self._record("pin_client", username=username, client_id=client_id)
        self.clients.setdefault(username, {})["clientid"] = client_id

    async def device_accounts(self) -> dict[str, DeviceAccount]:
        self._record("device_accounts")
        return {
            name: DeviceAccount(name, c["device_id"], c.get("clientid"), (c["topic"],), bool(c.get("disabled")))
            for name, c in self.clients.items()
            if "device_id" in c
        }

    async def close(self) -> None:
        self._record("close")

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]
