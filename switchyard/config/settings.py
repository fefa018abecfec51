"""The settings types: one frozen struct per section, every field documented.

Defaults run the local stack; ``switchyard.example.yaml`` shows every field. Derived values
(paths under ``home``, the local stack's URLs) are properties, computed, never stored twice.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from switchyard.config import upstream_patterns
from switchyard.config.backing_settings import CertSettings, OpenBaoSettings, RedisSettings
from switchyard.config.queue_settings import BatchSettings, StreamSettings
from switchyard.config.section import Count, Port, Seconds, Section
from switchyard.errors import ConfigError
from switchyard.schemas.routing import (
    Deployment,
    Provider,
    Route,
    RouteTable,
)


class ServiceName(enum.StrEnum):
    """The names of Switchyard's own NATS identities: the one list of them.

    ``switchyard.bus.identities`` builds one identity (its zone and purpose) per name here; the
    names live in the config layer, below the bus, so the settings can refuse an internal
    client named like a service when they load.
    """

    TAIL = "tail"
    GATEWAY = "gateway"
    ADMIN = "admin"
    HEAD = "head"
    MODELPROXY = "modelproxy"
    SECRETS = "secrets"
    ACCOUNTING = "accounting"
    PROVISIONER = "provisioner"
    CONTROL = "control"
    BATCH = "batch"


SERVICE_NAMES = frozenset(name.value for name in ServiceName)
# Certificate files named like an identity's that no identity may take: the CA's, the one
# nats-server and OpenBao present, the one cluster nodes present to each other. An internal
# client named so would have `certs init` write its leaf over them (the CA's key lost).
CERT_FILE_NAMES = frozenset({"ca", "server", "route"})


class NatsSettings(Section, frozen=True):
    """How components reach NATS.

    Attributes:
        servers: server URLs; empty means the local stack's server on ``stack.nats_port``.
        connect_timeout_s: give up a connection attempt after this long.
        reconnect_wait_s: pause between reconnect attempts (attempts are unlimited).
        response_threshold_s: idle time after which the server drops a reply mapping; must exceed
            the worst provider silence (keep-alives are sent every ``modelproxy.keepalive_s``).
        internal_clients: extra identities (the INTERNAL account) allowed to call the LLM API
            over NATS (issue their certificates with ``switchyard certs issue NAME``); never a
            service's name (:data:`SERVICE_NAMES`).
        stream_replicas: JetStream replicas for streams and KV; 0 (default) means one per
            NATS node up to 3 (the URLs in ``servers``, else ``stack.nats_nodes``).
    """

    servers: tuple[str, ...] = ()
    connect_timeout_s: Seconds = 5.0
    reconnect_wait_s: Seconds = 0.25
    response_threshold_s: Seconds = 300.0
    internal_clients: tuple[
        Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9-]{0,62}$(?!\n)")], ...
    ] = ()
    stream_replicas: Annotated[int, msgspec.Meta(ge=0, le=5)] = 0

    def __post_init__(self) -> None:
        """Refuse an internal client named like a service, however the settings are built.

        Its certificate's DN would be that service's (or clash with it when issued), and the
        head and model-proxies trust some services by name: refused when the settings load,
        so every command (``config``, ``up``, ``certs``...) says so, not only those that
        render the NATS config or issue certificates.

        Raises:
            ConfigError: one of ``internal_clients`` is a service's name.
        """
        taken = [n for n in self.internal_clients if n in SERVICE_NAMES | CERT_FILE_NAMES]
        if taken:
            raise ConfigError(
                "nats.internal_clients",
                f"`{taken[0]}` is the name of a Switchyard service identity or certificate "
                f"({', '.join(sorted(SERVICE_NAMES | CERT_FILE_NAMES))})",
                f"rename the internal client (e.g. `{taken[0]}-client`) in "
                "nats.internal_clients and issue its certificate under the new name "
                "(`switchyard certs issue NAME`)",
            )


class StackSettings(Section, frozen=True):
    """The local runtime started by ``switchyard up``.

    Attributes:
        nats_port / nats_monitor_port / openbao_port / valkey_port: loopback ports (0 = pick free).
            OpenBao also uses ``openbao_port + 1`` for its (raft) cluster address.
        nats_nodes: nats-servers to run: 1, or a 3-node cluster (TLS routes, R3 streams and KV)
            that keeps serving when one node is lost. Node ``n`` (from 1) listens on
            ``nats_port + n - 1``, ``nats_monitor_port + n - 1`` and ``nats_cluster_port + n - 1``.
        nats_cluster_port: first route port of a cluster (0 = pick free).
        heads / modelproxies: how many replicas of each worker to run.
        nats_cpus: cores nats-server may use (its ``GOMAXPROCS``; 0 = all). One core serves
            far more than a local stack needs, and stops Go's idle scheduler threads spinning
            on CPUs the Python workers need (measured: -30% nats-server CPU per request).
        free_ports: the first and last port ``up`` picks from when it chooses one (every
            worker's health port, and any port above set to 0). Default: from 20000 up to the
            kernel's ephemeral range. Give two stacks started on one machine at the same time
            disjoint ranges, and neither can take a port the other has planned but not yet
            bound.
        start_timeout_s: how long a process may take to become healthy.
        stop_timeout_s: grace period after SIGTERM before SIGKILL.
        log_max_mb: the size at which a process's log file in ``<home>/logs``, or OpenBao's
            audit log, is rotated (copied to ``<name>.log.1`` and emptied; checked every 30 s).
        log_keep: how many rotated copies of each log file are kept (older ones are deleted).
    """

    nats_port: Port = 4222
    nats_monitor_port: Port = 8222
    openbao_port: Port = 8200
    valkey_port: Port = 6379
    nats_nodes: Literal[1, 3] = 1
    nats_cluster_port: Port = 6222
    nats_cpus: Annotated[int, msgspec.Meta(ge=0, le=256)] = 1
    heads: Annotated[int, msgspec.Meta(ge=1, le=32)] = 2
    modelproxies: Annotated[int, msgspec.Meta(ge=1, le=32)] = 2
    free_ports: tuple[Port, Port] | None = None
    start_timeout_s: Seconds = 60.0
    stop_timeout_s: Seconds = 10.0
    log_max_mb: Annotated[float, msgspec.Meta(ge=0.001, le=1_000_000)] = 50.0
    log_keep: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3

    def __post_init__(self) -> None:
        """Refuse a free-port range that is backwards or reaches into privileged ports.

        Raises:
            ConfigError: ``free_ports`` is not ``[first, last]`` with 1024 <= first <= last.
        """
        if self.free_ports is not None and not 1024 <= self.free_ports[0] <= self.free_ports[1]:
            raise ConfigError(
                "stack.free_ports",
                f"must be [first, last] with 1024 <= first <= last, not {list(self.free_ports)}",
            )


class HealthSettings(Section, frozen=True):
    """Workers' ``/health``, ``/ready`` and ``/metrics`` endpoint (``serve --health-port``).

    Attributes:
        host: its listen address: loopback locally; ``0.0.0.0`` in containers, so the
            orchestrator's probes and metrics scrapers reach it (zones keep the client side out).
    """

    host: str = "127.0.0.1"


class Listen(Section, frozen=True, kw_only=True):
    """An HTTP listener; an edge's ``root_path``: the path prefix a reverse proxy serves it
    under (``/sy``), for the URLs it writes back (web app, batch results); "": the root."""

    host: str = "127.0.0.1"
    port: Port
    root_path: str = ""


class IngressSettings(Section, frozen=True):
    """The OpenAI-compatible HTTP edges (tail and gateway).

    Attributes:
        tail / gateway: where each listens.
        max_body_bytes: larger request bodies are refused with 413.
        default_deadline_s: deadline for a request that sets none (``X-Request-Timeout`` header).
        max_deadline_s: upper bound on a client-supplied deadline.
        retry_attempts: attempts per request when the reply path breaks (NATS failover).
        max_header_bytes / max_headers: a larger request head is refused with 431.
        header_timeout_s: a request head must arrive within this (408); idle connections
            that never send one are closed after it.
        body_timeout_s: a request body must arrive within this after its head (408).
        write_timeout_s: a client that reads nothing of an answer for this long is dropped.
        max_unread_bytes: a streamed answer's bytes the edge may hold for one request,
            received and not yet written to its client; past it a client that reads slowly (a
            byte a second is never dropped by ``write_timeout_s``) gets the stream's error
            event ``reader_too_slow`` and its provider call is stopped.
        max_answer_bytes: the largest whole answer taken, past one bus message in parts held
            here until whole (docs/nats-api.md, "Answers in parts"), else a 413. 0 (default:
            parts are opt-in, docs/nats-api.md, "Answers in parts"): one message (8 MiB).
        keepalive_s: an idle keep-alive connection is closed after this.
        stream_start_s: a stream whose first content has not come after this long starts
            without it (status 200 and an SSE comment, another every as many seconds until
            it comes), so a proxy's read timeout does not cut a long first-token wait; an
            error after that is the stream's error event, not an HTTP status. 0: a stream
            starts only with its first content.
        max_connections: open connections per edge process; more are closed at once.
        failed_auth_limit / failed_auth_window_s: an address that presents this many unknown
            keys within the window gets 429 for keys that fail until the window has passed;
            valid keys from it still pass (see docs/security.md).
        trusted_proxies / forwarded_header: addresses and CIDR networks of reverse proxies
            whose forwarding header (the one named, never the other) names the client (its
            right-most untrusted entry) for the failed-key and sign-in guards and audit
            entries; empty: the TCP peer is the client.
        cors_origins: web origins (``https://app.example.com``) whose pages may call the LLM
            API from a browser (CORS on ``/v1/...``; never the admin API or web app); ``*``
            lets any site's pages call it; empty: no CORS (browsers refuse every
            cross-origin call).
    """

    tail: Listen = Listen(port=8080)
    gateway: Listen = Listen(port=8081)
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 4 * 1024 * 1024
    default_deadline_s: Seconds = 600.0
    max_deadline_s: Seconds = 3600.0
    retry_attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 32 * 1024
    max_headers: Annotated[int, msgspec.Meta(ge=8)] = 100
    header_timeout_s: Seconds = 10.0
    body_timeout_s: Seconds = 60.0
    write_timeout_s: Seconds = 60.0
    max_unread_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024)] = 8 * 1024 * 1024
    max_answer_bytes: Annotated[int, msgspec.Meta(ge=0, le=999_999_999)] = 0
    keepalive_s: Seconds = 30.0
    stream_start_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 4096
    failed_auth_limit: Annotated[int, msgspec.Meta(ge=1)] = 20
    failed_auth_window_s: Seconds = 60.0
    trusted_proxies: tuple[str, ...] = ()
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Raises ConfigError naming a ``trusted_proxies`` entry that is not an address or
        a network (a network with host bits set: ``10.0.0.1/8`` means which?), a
        ``cors_origins`` entry no browser sends (see :func:`_check_origin`), or a
        ``stream_start_s`` under a second (a late stream would get a comment that often)."""
        for index, origin in enumerate(self.cors_origins):
            _check_origin(index, origin)
        for edge, listen in (("tail", self.tail), ("gateway", self.gateway)):
            if listen.root_path and not _ROOT_PATH.fullmatch(listen.root_path):
                raise ConfigError(
                    f"ingress.{edge}.root_path",
                    f"`{listen.root_path}` is not a path prefix",
                    "give one like /sy or /llm/switchyard: a leading /, no trailing /, no query",
                )
        if 0 < self.stream_start_s < 1:
            raise ConfigError(
                "ingress.stream_start_s",
                f"{self.stream_start_s:g} s would send a late stream a comment that often",
                "use 0 (off) or at least 1 second (the default is 10)",
            )
        for index, entry in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(entry.strip(), strict=True)
            except ValueError as exc:
                raise ConfigError(
                    f"ingress.trusted_proxies[{index}]",
                    f"`{entry}` is not an IP address or CIDR network: {exc}",
                    "give addresses (10.0.0.5, 2001:db8::5) or networks with no host bits set "
                    "(10.0.0.0/8, not 10.0.0.1/8; fd00::/8)",
                ) from None


# A path prefix: segments of URL-safe characters, each after a "/", none "." or "..".
_ROOT_PATH = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._~-]+)+")
# An origin as browsers send it: a lowercase scheme and host, a port if not the default, no
# path, no trailing slash (RFC 6454 6.1).
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[a-z0-9.:\[\]_-]+")


def _check_origin(index: int, origin: str) -> None:
    """Raises ConfigError for ``cors_origins[index]`` when no browser sends it as an Origin
    (it would never match, silently): not ``*`` nor ``scheme://host[:port]`` in lowercase."""
    if origin.endswith((":80", ":443")) and origin.startswith(("http://", "https://")):
        default = origin.rsplit(":", 1)[0]  # browsers leave the scheme's own port out
        raise ConfigError(
            f"ingress.cors_origins[{index}]",
            f"`{origin}` names its scheme's default port, which browsers leave out",
            f"write it as {default}" if _ORIGIN.fullmatch(default) else "leave the port out",
        )
    if origin == "*" or _ORIGIN.fullmatch(origin):
        return
    if origin == "null":  # sent by sandboxed frames and file:// pages: any page can be one
        raise ConfigError(
            f"ingress.cors_origins[{index}]", "`null` would let any sandboxed page in", "remove it"
        )
    raise ConfigError(
        f"ingress.cors_origins[{index}]",
        f"`{origin}` is not an origin as browsers send it",
        "write scheme://host[:port] in lowercase, with no path or trailing slash "
        "(https://app.example.com, http://localhost:3000), or * for any origin",
    )


class HeadSettings(Section, frozen=True):
    """The routing workers.

    Attributes:
        publish_timeout_s: wait this long for JetStream to confirm a dispatch publish.
        publish_retries: retries of that publish (deduplicated by ``Nats-Msg-Id``), paced
            0.25 s, 0.5 s, ... up to 1 s apart: 20 ride out a stream leader election of ~18 s
            (2-5 s is usual; a loaded 2-core machine measured over 6 s).
        max_in_flight: requests one head handles at once.
    """

    publish_timeout_s: Seconds = 2.0
    publish_retries: Count = 20
    max_in_flight: Annotated[int, msgspec.Meta(ge=1)] = 1024


class RoutingSettings(Section, frozen=True):
    """How heads retry, fall back and cool deployments down.

    Attributes:
        cooldown_s: how long a deployment that failed (5xx, timeout, unreachable) is skipped by
            every head; a 429's ``Retry-After`` overrides it.
        max_attempts: deployments tried per request (across fallbacks) before giving up.
        backoff_s / backoff_max_s: jittered exponential pause before each retry.
        fair_queueing: once a deployment is saturated, hold its new requests and start them
            by priority and tenant share (``docs/routing.md``); false: first come, first served.
    """

    cooldown_s: Seconds = 5.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 4
    backoff_s: Annotated[float, msgspec.Meta(ge=0)] = 0.05
    backoff_max_s: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    fair_queueing: bool = True


class AdminSettings(Section, frozen=True):
    """The management API on the gateway (``/admin/v1``).

    Attributes:
        token_file: the bootstrap admin credential (``Authorization: Bearer <token>``);
            default ``<home>/admin-token``, created by ``switchyard up``. Without it the
            management API answers 503.
        readonly_token_file: the read-only admin credential: every GET of the management
            API and every page of the web app, no change (403 ``admin_read_only``); default
            ``<home>/admin-readonly-token``, created by ``switchyard up``. Without it there
            is no read-only access.
        budget_watch_s: how often each gateway counts the keys near their budget
            (``switchyard_keys_near_budget``): one read of every budgeted key's spend. It
            also marks the keys whose budget is used up for the heads, which then refuse
            their NATS callers: within this + 1 s of the spend being counted. At most 1200
            s: a head ignores a mark not rewritten for 30 minutes (``limits.spent_marks``).
    """

    token_file: str | None = None
    readonly_token_file: str | None = None
    budget_watch_s: Annotated[float, msgspec.Meta(gt=0, le=1200)] = 30.0


class ModelProxySettings(Section, frozen=True):
    """The provider-calling workers.

    Attributes:
        keepalive_s: send a keep-alive to the caller after this much provider silence.
        ack_wait_s: JetStream redelivers an unacknowledged request after this long; workers
            signal progress every ``ack_wait_s / 3`` during long calls, so this only bounds how
            long the requests of a worker that died wait before another worker takes them.
        secret_ttl_s: how long a cached provider key is used without hearing from the secrets
            service (it is refreshed earlier, and dropped at once on a change event).
        max_deliver: deliveries of one request before it is given up (worker crash loops).
        max_workers_per_deployment: pull loops per deployment in one process (at most the
            deployment's concurrency).
        keep_response_items: keep the output items of translated Responses answers (``store``
            not false) for later ``item_reference``s, in ``sy_response_items``
            (``streams.response_items_max_age_s``); false keeps no answer content: such
            Responses say ``store: false`` and a reference on a translating deployment is a 404.
        allowed_upstreams: the hosts providers may be called at: host name patterns
            (``api.openai.com``, ``*.openai.azure.com``; ``*`` and ``?`` never cross a dot)
            or IP ranges (``10.0.0.0/24``), over https, or plain http too for an entry
            written ``http://...``; no port or path (see
            :mod:`switchyard.config.upstream_patterns`), empty for any. A provider whose
            URL's host is not listed gets no call (503 ``upstream_not_allowed``; its key is
            not fetched), and the control service refuses a route table write adding or
            moving one there (400): an admin credential cannot send a stored key elsewhere.
            Give control the same value (docs/security.md).
        max_answer_bytes: the largest whole answer sent in parts to a caller that reads them,
            whatever it announces (``Sy-Parts-Max``; the smaller wins). 0: never in parts.
    """

    keepalive_s: Seconds = 5.0
    ack_wait_s: Seconds = 10.0
    secret_ttl_s: Seconds = 300.0
    max_deliver: Annotated[int, msgspec.Meta(ge=1)] = 3
    max_workers_per_deployment: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 128
    keep_response_items: bool = True
    allowed_upstreams: tuple[str, ...] = ()
    max_answer_bytes: Annotated[int, msgspec.Meta(ge=0, le=999_999_999)] = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        """Raises ConfigError naming an ``allowed_upstreams`` entry that could never allow
        the hosts it seems to (see :func:`switchyard.config.upstream_patterns.parse`)."""
        for index, entry in enumerate(self.allowed_upstreams):
            try:
                upstream_patterns.parse(entry)
            except ValueError as exc:
                raise ConfigError(
                    f"modelproxy.allowed_upstreams[{index}]",
                    str(exc),
                    "list host names (api.openai.com, *.openai.azure.com) or IP ranges "
                    "(10.0.0.0/24)",
                ) from None


class LoggingSettings(Section, frozen=True):
    """Logs go to stderr, one line per event."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class TelemetrySettings(Section, frozen=True):
    """OpenTelemetry tracing; off unless an OTLP endpoint is set.

    Attributes:
        otlp_endpoint: an OTLP/HTTP collector (``http://collector:4318``, or its traces URL).
        sample_ratio: the share of new traces recorded (a sampled ``traceparent`` rules its own).
        export_delay_ms / export_queue_spans: how long spans are batched before export, and
            how many may wait for it (past that a span is counted ``dropped``).
    """

    otlp_endpoint: str | None = None
    service_namespace: str = "switchyard"
    sample_ratio: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 1.0
    export_delay_ms: Annotated[int, msgspec.Meta(ge=50, le=60000)] = 2000
    export_queue_spans: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 2048


class Settings(Section, frozen=True):
    """Everything a Switchyard process needs to know, built once.

    Attributes:
        home: the local state directory (certs, server data, logs, runtime files).
        providers / routes: the initial route table (seeded into NATS KV on first start).
        demo_model: add the built-in offline ``demo`` provider and route (unless you define
            your own under that name), so a fresh install answers its first request.
        source_file: the settings file these were read from ("" for none); set by the
            loader, whatever the file says.
    """

    home: str = ".switchyard"
    nats: NatsSettings = NatsSettings()
    certs: CertSettings = CertSettings()
    openbao: OpenBaoSettings = OpenBaoSettings()
    redis: RedisSettings = RedisSettings()
    stack: StackSettings = StackSettings()
    health: HealthSettings = HealthSettings()
    ingress: IngressSettings = IngressSettings()
    head: HeadSettings = HeadSettings()
    routing: RoutingSettings = RoutingSettings()
    admin: AdminSettings = AdminSettings()
    modelproxy: ModelProxySettings = ModelProxySettings()
    streams: StreamSettings = StreamSettings()
    batch: BatchSettings = BatchSettings()
    logging: LoggingSettings = LoggingSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    # msgspec copies an empty mutable default per instance (ruff cannot see the base is a Struct)
    providers: dict[str, Provider] = {}  # noqa: RUF012
    routes: dict[str, Route] = {}  # noqa: RUF012
    demo_model: bool = True
    source_file: str = ""

    # ---- derived values: computed, never stored twice ----

    @property
    def home_dir(self) -> Path:
        return Path(self.home).resolve()

    @property
    def certs_dir(self) -> Path:
        return Path(self.certs.dir).resolve() if self.certs.dir else self.home_dir / "certs"

    @property
    def nats_servers(self) -> tuple[str, ...]:
        """Every node's URL: clients fail over between them."""
        if self.nats.servers:
            return self.nats.servers
        port = self.stack.nats_port
        return tuple(f"tls://127.0.0.1:{port + n}" for n in range(self.stack.nats_nodes))

    @property
    def stream_replicas(self) -> int:
        """JetStream replicas of every stream and bucket (``nats.stream_replicas``, resolved)."""
        if self.nats.stream_replicas:
            return self.nats.stream_replicas
        nodes = len(self.nats.servers) if self.nats.servers else self.stack.nats_nodes
        return min(3, nodes)

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

    @property
    def admin_readonly_token_file(self) -> Path:
        return (
            Path(self.admin.readonly_token_file).resolve()
            if self.admin.readonly_token_file
            else self.home_dir / "admin-readonly-token"
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
