"""forcelink.yaml: one configuration file, validated on load.

The file is parsed with line numbers kept, checked against the dataclasses
below, and every error names the file, the line and the dotted key, e.g.::

    forcelink.yaml:7: eventlog.backend: must be one of embedded, kafka (got 'kafak')

Any scalar setting may come from the environment instead: the dotted key in
upper case with ``_`` for ``.``, prefixed by ``FORCELINK_``. So
``eventlog.kafka.bootstrap_servers`` is ``FORCELINK_EVENTLOG_KAFKA_BOOTSTRAP_SERVERS``.
The environment wins over the file; a value from the environment that does not
fit is reported with the variable's name.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from forcelink.errors import ConfigError

DEFAULT_FILE = "forcelink.yaml"
ENV_PREFIX = "FORCELINK_"


@dataclass
class DatabaseConfig:
    url: str = "postgresql://forcelink@localhost:54320/forcelink"
    """Where the mapped tables and forcelink's bookkeeping live."""


@dataclass
class KafkaConfig:
    bootstrap_servers: str = "localhost:9092"
    partitions: int = 6
    replication_factor: int = 1
    topic_prefix: str = ""
    """Put in front of every topic name on the broker, for shared clusters."""


@dataclass
class EmbeddedLogConfig:
    partitions: int = 6
    retention_seconds: int = 7 * 24 * 3600


@dataclass
class EventLogConfig:
    backend: Literal["embedded", "kafka"] = "embedded"
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    embedded: EmbeddedLogConfig = field(default_factory=EmbeddedLogConfig)


@dataclass
class OrgConfig:
    name: str = ""
    connection_file: str | None = None
    """A connection.json written by ``forcelink emulator`` (fills the rest)."""
    login_url: str | None = None
    client_id: str | None = None
    username: str | None = None
    private_key_file: str | None = None
    ca_file: str | None = None
    api_version: str = "60.0"
    client_tag: str = "forcelink"
    """Sent as ``Sforce-Call-Options: client=<tag>`` so echoes can be dropped."""


@dataclass
class S3Config:
    bucket: str = "forcelink-images"
    prefix: str = "images/"
    endpoint_url: str | None = None
    region: str = "us-east-1"


@dataclass
class ImagesConfig:
    backend: Literal["local", "s3"] = "local"
    local_dir: str = ".forcelink/images"
    s3: S3Config = field(default_factory=S3Config)
    max_upload_bytes: int = 25 * 1024 * 1024
    thumbnail_sizes: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    presigned_redirect: bool = False
    presigned_ttl_seconds: int = 300
    max_image_pixels: int = 40_000_000
    """Width x height above which an upload is refused (decompression bombs)."""


@dataclass
class ApiConfig:
    listen: str = "127.0.0.1:8080"
    token_issuer: str = "forcelink"
    token_audience: str = "forcelink-api"
    keys_dir: str = ".forcelink/keys"
    public_url: str = ""
    """Base URL written into Image_URL__c; empty means the request's own URL."""
    purge_interval_seconds: int = 60
    """How often images deleted on the Salesforce side lose their bytes."""
    orgs: list[ApiOrgConfig] = field(default_factory=list)


@dataclass
class ApiOrgConfig:
    """Per-org settings of the image API (an org not listed gets the defaults)."""

    name: str = ""
    photo_table: str = "salesforce.site_photo__c"
    """The mapped table of this org's Site_Photo__c mapping."""
    watermark_text: str = ""
    """When not empty, thumbnails and other derived images carry this text."""


@dataclass
class MetricsConfig:
    listen: str = "127.0.0.1:9400"


@dataclass
class LoggingConfig:
    level: str = "INFO"
    json: bool = False


@dataclass
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    eventlog: EventLogConfig = field(default_factory=EventLogConfig)
    orgs: list[OrgConfig] = field(default_factory=list)
    mappings: list[str] = field(default_factory=lambda: ["mappings/*.yaml"])
    images: ImagesConfig = field(default_factory=ImagesConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str | None = None
    """The file this configuration came from (not a setting)."""

    def org(self, name: str) -> OrgConfig:
        for org in self.orgs:
            if org.name == name:
                return org
        known = ", ".join(o.name for o in self.orgs) or "none configured"
        raise ConfigError(f"no org named {name!r} (known: {known})", file=self.source)


def load(
    path: str | os.PathLike[str] | None = None,
    environ: typing.Mapping[str, str] | None = None,
) -> Config:
    """Read, validate and return the configuration.

    ``path`` defaults to ``$FORCELINK_CONFIG`` then ``./forcelink.yaml``; a
    missing default file means "all defaults", a missing named file is an
    error.
    """
    env = os.environ if environ is None else environ
    explicit = path or env.get("FORCELINK_CONFIG")
    file = Path(explicit or DEFAULT_FILE)
    node: yaml.Node | None = None
    if file.exists():
        node = _compose(file)
    elif explicit:
        raise ConfigError("file not found", file=str(file))
    config: Config = _build(Config, node, "", str(file))
    _apply_env(config, env, "")
    config.source = str(file)
    return config


def _compose(file: Path) -> yaml.Node | None:
    try:
        return yaml.compose(file.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        line = error.problem_mark.line + 1 if error.problem_mark else None
        raise ConfigError(
            f"YAML syntax error: {error.problem}", file=str(file), line=line
        ) from error


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _build(cls: type[Any], node: yaml.Node | None, prefix: str, file: str) -> Any:
    """Turn a YAML mapping node into an instance of the dataclass ``cls``."""
    instance = cls()
    if node is None or (isinstance(node, yaml.ScalarNode) and node.value == ""):
        return instance
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(
            "must be a mapping", file=file, line=_line(node), key=prefix or "(top)"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
    for key_node, value_node in node.value:
        key = str(key_node.value)
        dotted = f"{prefix}{key}"
        if key not in names:
            guess = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {guess[0]!r}?)" if guess else ""
            raise ConfigError(
                f"unknown key{hint}", file=file, line=_line(key_node), key=dotted
            )
        value = _convert(hints[key], value_node, dotted, file)
        setattr(instance, key, value)
    _check_required(instance, node, prefix, file)
    return instance


def _check_required(instance: Any, node: yaml.Node, prefix: str, file: str) -> None:
    if isinstance(instance, OrgConfig):
        if not instance.name:
            raise ConfigError(
                "missing required value",
                file=file,
                line=_line(node),
                key=f"{prefix}name",
            )
        if not instance.connection_file and not (
            instance.login_url and instance.client_id and instance.username
        ):
            raise ConfigError(
                "an org needs connection_file, or login_url + client_id + username "
                "+ private_key_file",
                file=file,
                line=_line(node),
                key=prefix.rstrip("."),
            )


def _convert(hint: Any, node: yaml.Node, key: str, file: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, node, f"{key}.", file)
    if origin in (typing.Union, types.UnionType):
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return None
        real = [a for a in args if a is not type(None)]
        return _convert(real[0], node, key, file)
    if origin is list:
        if not isinstance(node, yaml.SequenceNode):
            raise ConfigError("must be a list", file=file, line=_line(node), key=key)
        return [
            _convert(args[0], item, f"{key}[{i}]", file)
            for i, item in enumerate(node.value)
        ]
    if not isinstance(node, yaml.ScalarNode):
        raise ConfigError(
            f"must be a single value ({_describe(hint)})",
            file=file,
            line=_line(node),
            key=key,
        )
    value = yaml.safe_load(yaml.serialize(node))
    try:
        return _scalar(hint, value)
    except ValueError as error:
        raise ConfigError(str(error), file=file, line=_line(node), key=key) from None


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint))


def _scalar(hint: Any, value: Any) -> Any:
    """Check one scalar against its type; raise ValueError saying what fits."""
    if typing.get_origin(hint) is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ValueError(f"must be {_describe(hint)} (got {value!r})")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise ValueError(f"must be true or false (got {value!r})")
    if hint is int:
        if isinstance(value, bool):
            raise ValueError(f"must be a whole number (got {value!r})")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be a whole number (got {value!r})") from None
    if hint is str:
        if value is None or isinstance(value, dict | list):
            raise ValueError(f"must be text (got {value!r})")
        return str(value)
    return value


def _apply_env(instance: Any, env: typing.Mapping[str, str], prefix: str) -> None:
    """Override scalar settings from FORCELINK_* variables."""
    hints = typing.get_type_hints(type(instance))
    for f in dataclasses.fields(instance):
        if f.name == "source":
            continue
        hint = hints[f.name]
        dotted = f"{prefix}{f.name}"
        current = getattr(instance, f.name)
        if dataclasses.is_dataclass(current):
            _apply_env(current, env, f"{dotted}.")
            continue
        name = ENV_PREFIX + dotted.upper().replace(".", "_")
        if name not in env:
            continue
        raw = env[name]
        real = _optional_inner(hint)
        if _is_dataclass_list(real):
            raise ConfigError(
                f"{dotted} is a list of blocks and can only be set in the file",
                file=f"${name}",
            )
        if typing.get_origin(real) is list:
            parts = [p.strip() for p in raw.split(",") if p.strip()]
            inner = typing.get_args(real)[0]
            try:
                setattr(instance, f.name, [_scalar(inner, p) for p in parts])
            except ValueError as error:
                raise ConfigError(str(error), file=f"${name}") from None
            continue
        try:
            setattr(instance, f.name, _scalar(real, yaml.safe_load(raw)))
        except (ValueError, yaml.YAMLError) as error:
            raise ConfigError(str(error), file=f"${name}") from None


def _is_dataclass_list(hint: Any) -> bool:
    args = typing.get_args(hint)
    return typing.get_origin(hint) is list and dataclasses.is_dataclass(args[0])


def _optional_inner(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        real = [a for a in typing.get_args(hint) if a is not type(None)]
        return real[0]
    return hint


def reference() -> list[tuple[str, str, str]]:
    """Every scalar setting as (dotted key, environment variable, default).

    The README's configuration table is this list; a test keeps them equal.
    """
    rows: list[tuple[str, str, str]] = []

    def walk(obj: Any, prefix: str, env_ok: bool) -> None:
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            if f.name == "source":
                continue
            value = getattr(obj, f.name)
            dotted = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(value, f"{dotted}.", env_ok)
                continue
            if _is_dataclass_list(hints[f.name]):
                walk(typing.get_args(hints[f.name])[0](), f"{dotted}[].", False)
                continue
            env = ENV_PREFIX + dotted.upper().replace(".", "_") if env_ok else "-"
            rows.append((dotted, env, repr(value)))

    walk(Config(), "", True)
    return rows
