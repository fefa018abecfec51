"""Typed, frozen settings built once at startup and passed in explicitly.

Sources, later ones winning: built-in defaults, the YAML file (``switchyard.yaml`` or ``--config``),
then ``SWITCHYARD_*`` environment variables, where ``__`` separates nesting levels
(``SWITCHYARD_LOGGING__LEVEL=debug``, ``SWITCHYARD_NATS__SERVERS='["tls://n1:4222"]'``). Values from
the environment are parsed as JSON when they look like JSON, else taken as strings and converted
to the field's type. Every problem is reported as a :class:`~switchyard.errors.ConfigError` that
names the field and the fix. This is the only module that reads the environment.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from switchyard.errors import ConfigError
from switchyard.schemas.routing import (
    Deployment,
    Provider,
    Route,
    RouteTable,
    Timeouts,
    route_table_problems,
)

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
Count = Annotated[int, msgspec.Meta(ge=0)]
ENV_PREFIX = "SWITCHYARD_"
# Variables read by the CLI itself rather than mapped onto fields.
CLI_ENV = frozenset({"SWITCHYARD_CONFIG"})
DEFAULT_CONFIG_FILE = "switchyard.yaml"


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every settings section: immutable, keyword-only, typos rejected."""


class NatsSettings(_Section, frozen=True):
    """How components reach NATS.

    Attributes:
        servers: server URLs; empty means the local stack's server on ``stack.nats_port``.
        connect_timeout_s: give up a connection attempt after this long.
        reconnect_wait_s: pause between reconnect attempts (attempts are unlimited).
        response_threshold_s: idle time after which the server drops a reply mapping; must exceed
            the worst provider silence (keep-alives are sent every ``modelproxy.keepalive_s``).
        internal_clients: extra CLIENT-zone identities allowed to call the LLM API over NATS
            (issue their certificates with ``switchyard certs issue NAME``).
        stream_replicas: JetStream replicas for streams and KV (1 locally, 3 in a cluster).
    """

    servers: tuple[str, ...] = ()
    connect_timeout_s: Seconds = 5.0
    reconnect_wait_s: Seconds = 0.25
    response_threshold_s: Seconds = 300.0
    internal_clients: tuple[
        Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9-]{0,62}$")], ...
    ] = ()
    stream_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1


class CertSettings(_Section, frozen=True):
    """Identity certificates.

    Attributes:
        dir: where the CA and identity certificates live (default ``<home>/certs``).
        organization: the ``O=`` of every subject DN; part of each NATS user name.
        validity_days: lifetime of issued certificates.
    """

    dir: str | None = None
    organization: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9 _-]{1,64}$")] = "Switchyard"
    validity_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 825


class OpenBaoSettings(_Section, frozen=True):
    """How the secrets service reaches Vault/OpenBao.

    Attributes:
        addr: Vault/OpenBao URL; empty means the local stack's (``https://127.0.0.1:<port>``).
        mount: the KV v2 mount holding provider keys.
        auth: ``approle`` (production) or ``token`` (development).
        role_id_file / secret_id_file: AppRole credentials (default under ``<home>/openbao``).
        token_file: a token, for ``auth: token``.
        ca_file: CA bundle to verify the server (default: the project's CA).
        timeout_s: per-call timeout.
    """

    addr: str | None = None
    mount: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,62}$")] = "switchyard"
    auth: Literal["approle", "token"] = "approle"
    role_id_file: str | None = None
    secret_id_file: str | None = None
    token_file: str | None = None
    ca_file: str | None = None
    timeout_s: Seconds = 5.0


class RedisSettings(_Section, frozen=True):
    """Shared counters (rate limits, spend) in Redis/Valkey.

    Attributes:
        url: ``redis://host:port/db``; empty means the local stack's Valkey.
        password_dir: directory of ``<role>.password`` files (default ``<home>/valkey``); each
            component logs in as its role's ACL user.
        on_unavailable: ``fail_closed`` refuses requests with 503 when Redis is down;
            ``fail_open`` lets them through without limits.
        timeout_s: per-command timeout.
    """

    url: str | None = None
    password_dir: str | None = None
    on_unavailable: Literal["fail_closed", "fail_open"] = "fail_closed"
    timeout_s: Seconds = 0.5


class StackSettings(_Section, frozen=True):
    """The local runtime started by ``switchyard up``.

    Attributes:
        nats_port / nats_monitor_port / openbao_port / valkey_port: loopback ports (0 = pick free).
            OpenBao also uses ``openbao_port + 1`` for its (raft) cluster address.
        heads / modelproxies: how many replicas of each worker to run.
        nats_cpus: cores nats-server may use (its ``GOMAXPROCS``; 0 = all). One core serves
            far more than a local stack needs, and stops Go's idle scheduler threads spinning
            on CPUs the Python workers need (measured: -30% nats-server CPU per request).
        start_timeout_s: how long a process may take to become healthy.
        stop_timeout_s: grace period after SIGTERM before SIGKILL.
    """

    nats_port: Port = 4222
    nats_monitor_port: Port = 8222
    openbao_port: Port = 8200
    valkey_port: Port = 6379
    nats_cpus: Annotated[int, msgspec.Meta(ge=0, le=256)] = 1
    heads: Annotated[int, msgspec.Meta(ge=1, le=32)] = 2
    modelproxies: Annotated[int, msgspec.Meta(ge=1, le=32)] = 2
    start_timeout_s: Seconds = 60.0
    stop_timeout_s: Seconds = 10.0


class Listen(_Section, frozen=True, kw_only=True):
    """An HTTP listener."""

    host: str = "127.0.0.1"
    port: Port


class IngressSettings(_Section, frozen=True):
    """The OpenAI-compatible HTTP edges (tail and gateway).

    Attributes:
        tail / gateway: where each listens.
        max_body_bytes: larger request bodies are refused with 413.
        default_deadline_s: deadline for a request that sets none (``X-Request-Timeout`` header).
        max_deadline_s: upper bound on a client-supplied deadline.
        retry_attempts: attempts per request when the reply path breaks (NATS failover).
    """

    tail: Listen = Listen(port=8080)
    gateway: Listen = Listen(port=8081)
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 4 * 1024 * 1024
    default_deadline_s: Seconds = 600.0
    max_deadline_s: Seconds = 3600.0
    retry_attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3


class HeadSettings(_Section, frozen=True):
    """The routing workers.

    Attributes:
        publish_timeout_s: wait this long for JetStream to confirm a dispatch publish.
        publish_retries: retries of that publish (deduplicated by ``Nats-Msg-Id``).
        max_in_flight: requests one head handles at once.
    """

    publish_timeout_s: Seconds = 2.0
    publish_retries: Count = 8
    max_in_flight: Annotated[int, msgspec.Meta(ge=1)] = 1024


class RoutingSettings(_Section, frozen=True):
    """How heads retry, fall back and cool deployments down.

    Attributes:
        cooldown_s: how long a deployment that failed (5xx, timeout, unreachable) is skipped by
            every head; a 429's ``Retry-After`` overrides it.
        max_attempts: deployments tried per request (across fallbacks) before giving up.
        backoff_s / backoff_max_s: jittered exponential pause before each retry.
    """

    cooldown_s: Seconds = 5.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 4
    backoff_s: Annotated[float, msgspec.Meta(ge=0)] = 0.05
    backoff_max_s: Annotated[float, msgspec.Meta(ge=0)] = 1.0


class AdminSettings(_Section, frozen=True):
    """The management API on the gateway (``/admin/v1``).

    Attributes:
        token_file: the bootstrap admin credential (``Authorization: Bearer <token>``);
            default ``<home>/admin-token``, created by ``switchyard up``. Without it the
            management API answers 503.
    """

    token_file: str | None = None


class ModelProxySettings(_Section, frozen=True):
    """The provider-calling workers.

    Attributes:
        keepalive_s: send a keep-alive to the caller after this much provider silence.
        ack_wait_s: JetStream redelivers an unacknowledged request after this long; workers
            signal progress every ``ack_wait_s / 3`` during long calls.
        secret_ttl_s: how long a cached provider key is used without hearing from the secrets
            service (it is refreshed earlier, and dropped at once on a change event).
        max_deliver: deliveries of one request before it is given up (worker crash loops).
        max_workers_per_deployment: pull loops per deployment in one process (at most the
            deployment's concurrency).
    """

    keepalive_s: Seconds = 5.0
    ack_wait_s: Seconds = 30.0
    secret_ttl_s: Seconds = 300.0
    max_deliver: Annotated[int, msgspec.Meta(ge=1)] = 3
    max_workers_per_deployment: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 128


class StreamSettings(_Section, frozen=True):
    """JetStream streams, provisioned by the provisioner identity.

    Attributes:
        dispatch_queue_limit: requests held per deployment (queued plus in flight); beyond it a
            new request is refused at once with 503 ``queue_full`` (discard-new per subject).
        dispatch_max_age_s: a queued request older than this is dropped by the server.
        duplicate_window_s: JetStream deduplicates re-published requests and usage events
            within this window (``Nats-Msg-Id``).
        usage_max_age_s: how long usage events are kept in the stream.
    """

    dispatch_queue_limit: Annotated[int, msgspec.Meta(ge=1)] = 1000
    dispatch_max_age_s: Seconds = 3600.0
    duplicate_window_s: Seconds = 120.0
    usage_max_age_s: Seconds = 7 * 86400.0


class LoggingSettings(_Section, frozen=True):
    """Logs go to stderr, one line per event."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class TelemetrySettings(_Section, frozen=True):
    """OpenTelemetry tracing; off unless an OTLP endpoint is set."""

    otlp_endpoint: str | None = None
    service_namespace: str = "switchyard"


class Settings(_Section, frozen=True):
    """Everything a Switchyard process needs to know, built once.

    Attributes:
        home: the local state directory (certs, server data, logs, runtime files).
        providers / routes: the initial route table (seeded into NATS KV on first start).
        demo_model: add the built-in offline ``demo`` provider and route (unless you define
            your own under that name), so a fresh install answers its first request.
    """

    home: str = ".switchyard"
    nats: NatsSettings = NatsSettings()
    certs: CertSettings = CertSettings()
    openbao: OpenBaoSettings = OpenBaoSettings()
    redis: RedisSettings = RedisSettings()
    stack: StackSettings = StackSettings()
    ingress: IngressSettings = IngressSettings()
    head: HeadSettings = HeadSettings()
    routing: RoutingSettings = RoutingSettings()
    admin: AdminSettings = AdminSettings()
    modelproxy: ModelProxySettings = ModelProxySettings()
    streams: StreamSettings = StreamSettings()
    logging: LoggingSettings = LoggingSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    providers: dict[str, Provider] = {}
    routes: dict[str, Route] = {}
    demo_model: bool = True

    # ---- derived values: computed, never stored twice ----

    @property
    def home_dir(self) -> Path:
        return Path(self.home).resolve()

    @property
    def certs_dir(self) -> Path:
        return Path(self.certs.dir).resolve() if self.certs.dir else self.home_dir / "certs"

    @property
    def nats_servers(self) -> tuple[str, ...]:
        return self.nats.servers or (f"tls://127.0.0.1:{self.stack.nats_port}",)

    @property
    def openbao_addr(self) -> str:
        return self.openbao.addr or f"https://127.0.0.1:{self.stack.openbao_port}"

    @property
    def redis_url(self) -> str:
        return self.redis.url or f"redis://127.0.0.1:{self.stack.valkey_port}/0"

    @property
    def redis_password_dir(self) -> Path:
        if self.redis.password_dir:
            return Path(self.redis.password_dir).resolve()
        return self.home_dir / "valkey"

    @property
    def admin_token_file(self) -> Path:
        return (
            Path(self.admin.token_file).resolve()
            if self.admin.token_file
            else self.home_dir / "admin-token"
        )

    def openbao_file(self, configured: str | None, default_name: str) -> Path:
        """A credential file path: the configured one, else ``<home>/openbao/<default_name>``."""
        return (
            Path(configured).resolve() if configured else self.home_dir / "openbao" / default_name
        )

    @property
    def route_table(self) -> RouteTable:
        providers, routes = dict(self.providers), dict(self.routes)
        if self.demo_model:
            providers.setdefault("demo", Provider(kind="demo", concurrency=256))
            routes.setdefault(
                "demo",
                Route(
                    deployments=(Deployment(provider="demo", model="demo"),),
                    description="built-in offline model: answers locally, word by word",
                ),
            )
        return RouteTable(providers=providers, routes=routes)


# Field names that mean someone pasted a provider key into the config.
_LITERAL_KEY_FIELDS = ("api_key", "apikey", "key", "token", "api_token", "secret_key")
_AT_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def load_settings(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from a YAML file, the environment and explicit overrides.

    Args:
        path: the YAML file. ``None`` uses ``$SWITCHYARD_CONFIG`` or ``./switchyard.yaml`` when it
            exists, else defaults only. An explicit path that does not exist is an error.
        env: the environment (default ``os.environ``); only ``SWITCHYARD_*`` names are read.
        overrides: dotted-path values applied last (CLI flags such as ``--home``).

    Raises:
        ConfigError: the file cannot be read or parsed, or any field is invalid.
    """
    env = os.environ if env is None else env
    source = "defaults"
    raw: dict[str, Any] = {}
    file = _config_path(path, env)
    if file is not None:
        raw = _read_yaml(file)
        source = str(file)
    if _apply_env(raw, env):
        source = "environment" if file is None else f"{file} and the environment"
    for dotted, value in (overrides or {}).items():
        _set_path(raw, dotted.split("."), value)
    _reject_literal_keys(raw)
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise _config_error(exc, source) from None
    problems = route_table_problems(settings.route_table)
    if problems:
        first = problems[0]
        more = "".join(f"\n  also `{p.field}`: {p.problem}" for p in problems[1:])
        raise ConfigError(first.field, first.problem + more, first.hint)
    return settings


def prepare_litellm_environment() -> None:
    """Set what litellm reads at import time; call before importing it.

    Without ``LITELLM_LOCAL_MODEL_COST_MAP`` litellm fetches its price map over the network on
    import (DESIGN §8): we use the copy bundled with the package instead.
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def read_env_secret(name: str) -> str | None:
    """A key a migration names by environment variable (``os.environ/NAME`` in LiteLLM).

    Only ``switchyard import ... --secrets-from-env`` calls this, to copy such keys into the
    secrets service once; nothing reads provider keys from the environment at run time.
    """
    return os.environ.get(name) or None


def config_file_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The config path named by ``$SWITCHYARD_CONFIG``, if any."""
    return (os.environ if env is None else env).get("SWITCHYARD_CONFIG") or None


def _config_path(path: str | Path | None, env: Mapping[str, str]) -> Path | None:
    if path is None:
        named = env.get("SWITCHYARD_CONFIG")
        if named:
            path = named
        elif Path(DEFAULT_CONFIG_FILE).is_file():
            return Path(DEFAULT_CONFIG_FILE)
        else:
            return None
    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            "config file",
            f"{file} does not exist",
            "pass an existing file with --config, or copy switchyard.example.yaml to it",
        )
    return file


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(str(file), f"not valid YAML: {exc}", "fix the YAML syntax") from None
    except OSError as exc:
        raise ConfigError(str(file), f"cannot be read: {exc.strerror}", "check the path") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            str(file), "the top level must be a mapping", "start with keys like `nats:`"
        )
    return data


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> bool:
    """Apply ``SWITCHYARD_*`` variables onto the raw config; True if any applied."""
    applied = False
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name in CLI_ENV:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts) or (parts[0] not in Settings.__struct_fields__):
            valid = ", ".join(f"{ENV_PREFIX}{f.upper()}" for f in Settings.__struct_fields__)
            raise ConfigError(
                name,
                "not a Switchyard setting",
                f"remove it, or use one of {valid} (with __ between nested names)",
            )
        _set_path(raw, parts, _parse_env_value(value))
        applied = True
    return applied


def _parse_env_value(value: str) -> Any:
    text = value.strip()
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value
    return value


def _set_path(raw: dict[str, Any], parts: list[str], value: Any) -> None:
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _reject_literal_keys(raw: dict[str, Any]) -> None:
    providers = raw.get("providers")
    if not isinstance(providers, dict):
        return
    for name, provider in providers.items():
        if not isinstance(provider, dict):
            continue
        for field in _LITERAL_KEY_FIELDS:
            if field in provider:
                raise ConfigError(
                    f"providers.{name}.{field}",
                    "provider keys never go in the config file",
                    f"store it with `switchyard secrets put {name}` and set "
                    f"`secret: {name}` on the provider instead",
                )


def _config_error(exc: msgspec.ValidationError, source: str) -> ConfigError:
    text = str(exc)
    match = _AT_PATH.search(text)
    path = match.group("path").lstrip(".") if match else ""
    problem = text[: match.start()] if match else text
    problem = problem.replace("`", "")
    field = path.replace("[...]", ".<key>") or "(top level)"
    hint = f"see switchyard.example.yaml for the expected shape (read from {source})"
    if problem.startswith(("Expected float", "Expected int")):
        hint = f"use a number here (read from {source})"
    if problem.startswith("Object contains unknown field"):
        valid = _valid_fields(path)
        if valid:
            hint = f"valid fields here: {', '.join(valid)} (read from {source})"
    return ConfigError(field, problem, hint)


def _valid_fields(path: str) -> list[str]:
    """Field names of the struct at a msgspec error path, for "did you mean" hints."""
    struct: Any = Settings
    for part in [p for p in re.split(r"\.|\[", path) if p]:
        if part.endswith("]"):  # a list index or dict key: step into the element type
            struct = _element_struct(struct)
            continue
        fields = dict(zip(struct.__struct_fields__, msgspec.structs.fields(struct), strict=True))
        field = fields.get(part)
        if field is None:
            return []
        struct = _struct_of(field.type)
        if struct is None:
            return []
    return list(getattr(struct, "__struct_fields__", ()))


def _struct_of(tp: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp
    for arg in getattr(tp, "__args__", ()):
        found = _struct_of(arg)
        if found is not None:
            return found
    return None


def _element_struct(tp: Any) -> Any:
    return _struct_of(tp)


__all__ = [
    "AdminSettings",
    "CertSettings",
    "HeadSettings",
    "IngressSettings",
    "Listen",
    "LoggingSettings",
    "ModelProxySettings",
    "NatsSettings",
    "OpenBaoSettings",
    "RedisSettings",
    "RoutingSettings",
    "Settings",
    "StackSettings",
    "StreamSettings",
    "TelemetrySettings",
    "Timeouts",
    "load_settings",
]
