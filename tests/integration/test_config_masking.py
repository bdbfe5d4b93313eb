"""`nakhon config check` shows no secret: every URL (MQTT, registry, InfluxDB, any other) and every
secret-named key is masked, wherever the credential sits in the URL."""

from __future__ import annotations

import json

import pytest

from nakhon.config import Settings, mask_url

SECRETS = ("mqtt-secret", "db-secret", "influx-secret", "influx-p", "tok-secret", "admin-secret", "ack-secret-" * 4)


def test_config_check_output_contains_no_credential_from_any_url_or_key() -> None:
    settings = Settings.model_validate(
        {
            "mqtt": {"url": "mqtts://collector:mqtt-secret@broker.example:8883"},
            "registry": {"url": "postgresql+psycopg://nakhon:db-secret@[::1]:5432/nakhon"},
            "influxdb": {
                "url": "https://reader:influx-secret@influx.example:8086?u=reader&p=influx-p",
                "password": "influx-secret",
                "token": "tok-secret",
            },
            "gateway": {"mqtt_admin_username": "nakhon-admin", "mqtt_admin_password": "admin-secret"},
            "rules": {"ack_link_secret": "ack-secret-" * 4},
        }
    )
    shown = json.dumps(settings.masked(), ensure_ascii=False)
    for secret in SECRETS:
        assert secret not in shown, secret
    masked = settings.masked()
    assert masked["influxdb"]["url"] == "https://reader:***@influx.example:8086?u=reader&p=***"
    assert masked["registry"]["url"] == "postgresql+psycopg://nakhon:***@[::1]:5432/nakhon"
    assert masked["mqtt"]["url"] == "mqtts://collector:***@broker.example:8883"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://influx:8086", "http://influx:8086"),
        ("http://u:pw@Influx.Example:8086/x", "http://u:***@Influx.Example:8086/x"),
        ("http://influx:8086/write?db=n&token=abc", "http://influx:8086/write?db=n&token=***"),
        ("https://user:p%40ss@h/?apikey=k1&x=1", "https://user:***@h/?apikey=***&x=1"),
        ("sqlite:///data/registry.db", "sqlite:///data/registry.db"),
    ],
)
def test_mask_url_hides_userinfo_passwords_and_credential_parameters(url: str, expected: str) -> None:
    assert mask_url(url) == expected
