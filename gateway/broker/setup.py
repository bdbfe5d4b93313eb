"""Write a Mosquitto configuration with the dynamic-security plugin, and its initial `dynamic-security.json`.

Used by the tests (a throwaway broker) and as the source of `deploy/mosquitto/mosquitto.conf`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import GatewayError

DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
BROKER_USER = "mosquitto"


class BrokerSetupError(GatewayError):
    code = "broker_setup_failed"
    message_th = "ตั้งค่าโบรกเกอร์ MQTT ไม่สำเร็จ"


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    config: Path
    dynsec: Path


# The largest MQTT packet the broker accepts from any client (topic + payload + headers). Device readings are
# well under 4 KiB, LoRaWAN envelopes and SenML packs a few KiB; 256 KiB leaves room and bounds what one
# device can make the broker and the collectors hold. A bigger packet: the client is disconnected.
MAX_PACKET_BYTES = 256 * 1024


def limit_conf_lines(*, max_packet_bytes: int = MAX_PACKET_BYTES) -> str:
    """What devices may not do, whatever their ACL says: oversized packets and retained messages."""
    return (
        "# A device cannot leave retained messages behind (nothing in nakhon needs them: the collectors' persistent\n"
        "# session keeps what they have not read); an MQTT 5 client that tries is disconnected (0x9A).\n"
        "retain_available false\n"
        f"max_packet_size {max_packet_bytes}\n"
    )


def dynsec_conf_lines(dynsec_path: Path, *, plugin_path: str = DYNSEC_PLUGIN) -> str:
    """The lines that load the plugin (what `tests.servers.MosquittoServer(extra_conf=...)` takes)."""
    return f"plugin {plugin_path}\nplugin_opt_config_file {dynsec_path}\n"


def mosquitto_conf_text(
    dynsec_path: Path,
    *,
    port: int = 1883,
    bind_address: str = "0.0.0.0",
    persistence_dir: Path | None = None,
    plugin_path: str = DYNSEC_PLUGIN,
) -> str:
    persistence = (
        f"persistence true\npersistence_location {persistence_dir}/\n" if persistence_dir else "persistence false\n"
    )
    return (
        "# nakhon broker: every client authenticates; who may publish/subscribe what is in dynamic-security.json,\n"
        "# managed at runtime by the gateway (devices publish only to city/{city}/{feed}/{device_id}).\n"
        f"listener {port} {bind_address}\n"
        "allow_anonymous false\n"
        f"{persistence}"
        "# Mosquitto's default keeps only 1000 queued QoS 1 messages per client and drops the rest silently.\n"
        "# The collectors' persistent session must survive a restart or a slow sink without losing readings,\n"
        "# so the queue is bounded by memory instead of by a message count.\n"
        "max_queued_messages 1000000\n"
        "max_queued_bytes 0\n"
        "max_inflight_messages 0\n"
        "set_tcp_nodelay true\n" + limit_conf_lines() + dynsec_conf_lines(dynsec_path, plugin_path=plugin_path)
    )


def init_dynsec_file(path: Path, admin_username: str, admin_password: str) -> Path:
    """Create `dynamic-security.json` with one admin client allowed to send dynamic-security commands."""
    ctrl = shutil.which("mosquitto_ctrl")
    if ctrl is None:
        raise BrokerSetupError("mosquitto_ctrl is not installed (apt-get install mosquitto-clients)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    # mosquitto_ctrl takes the password as an argument (it would otherwise prompt on a terminal); the file it
    # writes holds only a salted PBKDF2 hash.
    result = subprocess.run(
        [ctrl, "dynsec", "init", str(path), admin_username, admin_password],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not path.exists():
        detail = (result.stderr or result.stdout).replace(admin_password, "***").strip()
        raise BrokerSetupError(f"mosquitto_ctrl dynsec init failed: {detail}", path=str(path))
    return path


def hand_to_broker_user(*paths: Path) -> None:
    """Mosquitto started as root drops to the `mosquitto` user, which must be able to rewrite its dynsec file."""
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam(BROKER_USER)
    except KeyError:
        return
    for path in paths:
        os.chown(path, user.pw_uid, user.pw_gid)


def write_broker_files(
    directory: Path,
    *,
    admin_username: str,
    admin_password: str,
    port: int = 1883,
    bind_address: str = "0.0.0.0",
) -> BrokerFiles:
    directory.mkdir(parents=True, exist_ok=True)
    dynsec = init_dynsec_file(directory / "dynamic-security.json", admin_username, admin_password)
    config = directory / "mosquitto.conf"
    config.write_text(mosquitto_conf_text(dynsec, port=port, bind_address=bind_address, persistence_dir=directory))
    hand_to_broker_user(directory, dynsec)
    return BrokerFiles(config=config, dynsec=dynsec)
