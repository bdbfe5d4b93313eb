"""nakhon's configuration: one TOML file plus `NAKHON_<SECTION>__<KEY>` environment overrides.

Precedence (highest first): environment, the TOML file (`--config PATH`, else `./nakhon.toml` when present),
defaults. Validated strictly at start: unknown keys and bad values are errors naming the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from collectors.domain import DomainConfig

DEFAULT_CONFIG_FILE = Path("nakhon.toml")


class ConfigError(Exception):
    """The configuration is invalid; the message names each bad key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttUrl(Strict):
    """Parsed `mqtt://user:pass@host:port` (or `mqtts://`)."""

    scheme: Literal["mqtt", "mqtts"]
    host: str
    port: int
    username: str | None = None
    password: SecretStr | None = None

    @classmethod
    def parse(cls, url: str) -> MqttUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"must start with mqtt:// or mqtts://, got scheme {parts.scheme or '(none)'!r}")
        if not parts.hostname:
            raise ValueError("has no host")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"has a bad port: {exc}") from None
        return cls(
            scheme=parts.scheme,  # type: ignore[arg-type]
            host=parts.hostname,
            port=port or (8883 if parts.scheme == "mqtts" else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=SecretStr(unquote(parts.password)) if parts.password else None,
        )


# Query parameters that carry credentials (InfluxDB v1 takes `u`/`p`; tokens and keys elsewhere).
SECRET_QUERY_KEYS = frozenset({"p", "password", "pass", "pwd", "token", "access_token", "secret", "key", "api_key",
                               "apikey", "auth", "authorization", "sig", "signature"})
SECRET_KEY_WORDS = ("password", "token", "secret", "api_key", "apikey", "private_key")


def mask_url(url: str) -> str:
    """The URL with any password (userinfo or credential query parameter) replaced by ***, for printing."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***" if "@" in url else url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)  # keep the host exactly as written ([::1], case, port)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = parts.query
    if query:
        pairs = []
        for pair in query.split("&"):
            key, eq, _value = pair.partition("=")
            secret = unquote(key).lower() in SECRET_QUERY_KEYS and eq
            pairs.append(f"{key}=***" if secret else pair)
        query = "&".join(pairs)
    if netloc == parts.netloc and query == parts.query:
        return url
    return parts._replace(netloc=netloc, query=query).geturl()


def mask_secrets(value: Any, key: str = "") -> Any:
    """Every URL in a JSON-ready structure masked (`mask_url`), every value under a secret-sounding key ***."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if isinstance(value, str) and value:
        if any(word in key.lower() for word in SECRET_KEY_WORDS):
            return "***"
        if "://" in value or "@" in value:
            return mask_url(value)
    return value


class InputConfig(Strict):
    """One subscription and the payload format its messages are parsed with (Telegraf's data_format)."""

    topics: list[str] = Field(min_length=1)
    format: Literal["native", "ttn", "chirpstack", "senml", "lpp", "traccar"] = "native"
    options: dict[str, Any] = Field(default_factory=dict)


class MqttConfig(Strict):
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str = "nakhon-collector"
    topic_prefix: str = "city"
    shared_group: str = Field(
        default="", description="When set, collectors subscribe as $share/<group>/<topic> to split the load."
    )
    receive_maximum: int = Field(
        default=10_000, ge=1, le=65535, description="Unacknowledged messages in flight to us (bounds memory)."
    )
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    keepalive_s: int = Field(default=30, ge=5)
    reconnect_delay_s: float = Field(default=2.0, gt=0, description="First reconnect delay; doubles per failure.")
    reconnect_max_delay_s: float = Field(default=60.0, gt=0, description="Cap of the reconnect backoff.")
    max_payload_bytes: int = Field(
        default=256 * 1024, ge=1024,
        description="Larger payloads are quarantined `too_large` (truncated); MQTT 5 Maximum Packet Size is set "
        "64 KiB above it, so the broker discards anything far larger before it reaches us.",
    )
    inputs: list[InputConfig] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str) -> str:
        MqttUrl.parse(value)
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_a_level(cls, value: str) -> str:
        if not value or any(c in value for c in "/+#"):
            raise ValueError("must be one topic level without '/', '+' or '#'")
        return value

    def parsed_url(self) -> MqttUrl:
        return MqttUrl.parse(self.url)

    def effective_inputs(self) -> list[InputConfig]:
        return self.inputs or [InputConfig(topics=[f"{self.topic_prefix}/+/+/+"], format="native")]


class InfluxConfig(Strict):
    url: str = Field(default="", description="InfluxDB v1 API base URL; empty means the embedded SQLite store.")
    database: str = "nakhon"
    retention_policy: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    batch_points: int = Field(default=5000, ge=1, le=100_000)
    flush_interval_s: float = Field(default=0.25, gt=0, le=1.0)
    timeout_s: float = Field(default=10.0, gt=0)
    gzip: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL (the InfluxDB v1 /write API)")
        return value.rstrip("/")


class RegistryConfig(Strict):
    url: str = Field(default="", description="SQLAlchemy URL; empty means sqlite:///<data_dir>/registry.db")


class SpoolConfig(Strict):
    max_mb: float = Field(default=1024, gt=0)


class QuarantineConfig(Strict):
    """The quarantine is bounded: past any limit the oldest rows are dropped first (and counted)."""

    max_rows: int = Field(default=1_000_000, ge=1000)
    max_mb: float = Field(default=512, gt=0, description="Payloads, details and topics kept (the file is ~1.4×).")
    max_age_days: float = Field(default=90, gt=0)


class MetricsConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535, description="Prometheus /metrics and /healthz; 0 disables.")


class GatewayConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str = "http://127.0.0.1:8080"
    mqtt_admin_username: str | None = Field(default=None, description="Mosquitto dynamic-security admin account.")
    mqtt_admin_password: SecretStr | None = None
    mqtt_client_id: str = Field(
        default="nakhon-gateway",
        min_length=1,
        description="The MQTT client id of the gateway's admin connection; the admin account is pinned to it.",
    )


class RulesConfig(Strict):
    dir: str = Field(default="", description="Directory of rule YAML files; empty means the shipped defaults.")
    routes_file: str = Field(default="", description="Notification routing YAML; empty means log-only.")
    queue_size: int = Field(default=2_000, ge=1, description="Readings waiting for the rules engine (bounded).")
    show_pending_after_s: float = Field(
        default=60.0,
        ge=0,
        description="A `for:` rule's condition is stored and shown as a pending alert once it held this long "
        "(or fires); a shorter flap is only a candidate. 0: every pending alert is shown at once.",
    )
    ack_link_secret: SecretStr | None = Field(
        default=None,
        description="Signs one-click acknowledge links (at least 32 characters); "
        "unset: 32 random bytes kept in <data_dir>/ack-link.secret (mode 0600).",
    )
    ack_link_ttl_s: float = Field(default=7 * 86400, gt=0, description="How long an acknowledge link is valid.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NAKHON_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    data_dir: Path = Path("nakhon-data")
    city: str = Field(default="laem-chabang", description="Default city slug for the demo and simulator.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    influxdb: InfluxConfig = Field(default_factory=InfluxConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    quarantine: QuarantineConfig = Field(default_factory=QuarantineConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    domain: DomainConfig = Field(default_factory=DomainConfig)

    _toml_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _ACTIVE_TOML.get("path")
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @model_validator(mode="after")
    def _defaults_from_data_dir(self) -> Settings:
        if not self.registry.url:
            self.registry.url = f"sqlite:///{(self.data_dir / 'registry.db').as_posix()}"
        return self

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def quarantine_path(self) -> Path:
        return self.data_dir / "quarantine.db"

    @property
    def sqlite_store_path(self) -> Path:
        return self.data_dir / "timeseries.db"

    def masked(self) -> dict[str, Any]:
        """The effective configuration with secrets masked, for `nakhon config check`."""
        data = self.model_dump(mode="json")
        data["mqtt"]["url"] = mask_url(self.mqtt.url)
        data["registry"]["url"] = mask_url(self.registry.url)
        data = mask_secrets(data)  # every other URL too (InfluxDB included), and any secret-named key
        for section, key in (
            ("influxdb", "password"),
            ("influxdb", "token"),
            ("gateway", "mqtt_admin_password"),
        ):
            if data[section].get(key):
                data[section][key] = "***"
        return data


# The TOML path is chosen at load time; pydantic-settings reads sources from a classmethod.
_ACTIVE_TOML: dict[str, Path | None] = {"path": None}


def load_settings(config_path: Path | None = None, **overrides: Any) -> Settings:
    """Load and validate the configuration, raising ConfigError naming every bad key."""
    path = config_path
    if path is None and DEFAULT_CONFIG_FILE.exists():
        path = DEFAULT_CONFIG_FILE
    if path is not None and not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    _ACTIVE_TOML["path"] = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, path)) from None
    except ValueError as exc:  # TOML syntax errors surface as ValueError subclasses
        raise ConfigError(f"{path}: {exc}") from None
    finally:
        _ACTIVE_TOML["path"] = None


def format_validation_error(exc: ValidationError, path: Path | None) -> str:
    lines = [f"invalid configuration ({path or 'defaults and environment'}):"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        env_name = "NAKHON_" + "__".join(str(part).upper() for part in error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {key}: {message} (environment: {env_name})")
    return "\n".join(lines)


def env_for(section: str, key: str) -> str:
    return f"NAKHON_{section.upper()}__{key.upper()}"


__all__ = ["ConfigError", "MqttUrl", "Settings", "env_for", "load_settings", "mask_url", "os"]
