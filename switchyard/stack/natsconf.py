"""Render nats-server's configuration: zones as accounts, users as certificates, exports/imports.

The document is built as plain data (:func:`nats_config`) and then printed in nats-server's config
syntax (:func:`render`), so tests and future cluster layouts can adjust it before rendering.
What crosses zones is only what CORE exports here (DESIGN §5): the LLM API as streamed services
(to CLIENT's edges and to the INTERNAL account of internal clients), and the admin services for
the admin identity. INTERNAL imports the LLM API and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchyard.bus import subjects as s
from switchyard.bus.identities import (
    SERVER_CERT,
    SERVICE_IDENTITIES,
    Identity,
    Zone,
    internal_client,
)
from switchyard.bus.permissions import Permissions, permissions_for
from switchyard.bus.replies import payload_room
from switchyard.bus.tls import tls_files
from switchyard.stack.certs import ROUTE_CERT

# Bodies up to ingress.max_body_bytes (4 MiB default) plus headers must fit in one message.
# Fixed, not raised with that setting: see docs/operations.md, "Body size".
MAX_PAYLOAD = 8 * 1024 * 1024
PING_INTERVAL = "10s"  # the server pings each client this often...
PING_MAX = 3  # ...and drops one that leaves this many unanswered
CLUSTER_NAME = "switchyard"


def body_ceiling_note(max_body_bytes: int) -> str | None:
    """A warning when ``ingress.max_body_bytes`` is more than the servers rendered here carry
    in one message (the edges refuse larger bodies with 413 all the same); None when not."""
    room = payload_room(MAX_PAYLOAD)
    if max_body_bytes <= room:
        return None
    return (
        f"warning: ingress.max_body_bytes is {max_body_bytes}, but NATS carries at most {room} "
        f"bytes of body in one message (max_payload {MAX_PAYLOAD} less 16 KiB for headers): "
        f"the edges refuse larger requests with 413 request_too_large (docs/operations.md, "
        f"Body size)"
    )


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    """This node's place in a cluster: where it listens for routes and which peers it dials.

    Attributes:
        routes: every node's route URL (``tls://host:port``; its own is ignored by the server).
    """

    port: int
    routes: tuple[str, ...]
    host: str = "127.0.0.1"
    name: str = CLUSTER_NAME


@dataclass(frozen=True, slots=True)
class NatsServerLayout:
    """Where one nats-server listens and keeps its state.

    Attributes:
        host / monitor_host: listen addresses; monitoring has no authentication, so it stays
            on loopback unless an orchestrator's scaler must reach it.
        cluster: set for a node of a cluster (routes over TLS with the ``route`` certificate).
    """

    port: int
    monitor_port: int
    store_dir: Path
    cert_dir: Path
    organization: str
    response_threshold_s: float
    internal_clients: tuple[str, ...] = ()
    server_name: str = "switchyard-1"
    max_file_store: str = "8G"
    max_memory_store: str = "1G"
    host: str = "127.0.0.1"
    monitor_host: str = "127.0.0.1"
    cluster: ClusterLayout | None = None


def _user(identity: Identity, organization: str, perms: Permissions) -> dict[str, Any]:
    permissions: dict[str, Any] = {
        "publish": {"allow": list(perms.publish_allow)},
        "subscribe": {"allow": list(perms.subscribe_allow)},
    }
    if perms.publish_deny:
        permissions["publish"]["deny"] = list(perms.publish_deny)
    if perms.subscribe_deny:
        permissions["subscribe"]["deny"] = list(perms.subscribe_deny)
    if perms.allow_responses:
        permissions["allow_responses"] = True
    return {"user": identity.dn(organization), "permissions": permissions}


def nats_config(layout: NatsServerLayout) -> dict[str, Any]:
    """The server configuration as data."""
    org = layout.organization
    server = tls_files(layout.cert_dir, SERVER_CERT)
    users: dict[Zone, list[dict[str, Any]]] = {zone: [] for zone in Zone}
    identities = [*SERVICE_IDENTITIES, *(internal_client(n) for n in layout.internal_clients)]
    for ident in identities:
        users[ident.zone].append(_user(ident, org, permissions_for(ident)))
    threshold = f"{int(layout.response_threshold_s)}s"
    llm_exports = [
        {
            "service": subject,
            "response_type": "stream",
            "response_threshold": threshold,
            "accounts": ["CLIENT", "INTERNAL"],
        }
        for subject in s.LLM_API
    ]
    admin_exports = [
        {"service": f"{s.SECRETS_ADMIN_PREFIX}.>", "accounts": ["CLIENT"]},
        {"service": f"{s.CONTROL_ADMIN_PREFIX}.>", "accounts": ["CLIENT"]},
        # The gateway's budget watch (as admin) writes spent marks into CORE's bucket; only
        # the admin user of CLIENT may publish there (bus.permissions)...
        {"service": s.KEY_SPENT_WRITES, "accounts": ["CLIENT"]},
        # ...and reads one mark by name before it deletes one it did not write.
        {"service": s.KEY_SPENT_DIRECT_GET, "accounts": ["CLIENT"]},
    ]
    # share: the head sees which user asked (Nats-Request-Info), in either importing account.
    llm_imports = [
        {"service": {"account": "CORE", "subject": subject}, "share": True} for subject in s.LLM_API
    ]
    # share: the services record which CLIENT user made a change (audit).
    admin_imports = [
        {"service": {"account": "CORE", "subject": f"{prefix}.>"}, "share": True}
        for prefix in (s.SECRETS_ADMIN_PREFIX, s.CONTROL_ADMIN_PREFIX)
    ]
    admin_imports.append({"service": {"account": "CORE", "subject": s.KEY_SPENT_WRITES}})
    admin_imports.append(
        {
            "service": {"account": "CORE", "subject": s.KEY_SPENT_DIRECT_GET},
            "to": f"{s.KEY_SPENT_DIRECT_GET_PREFIX}.>",
        }
    )
    # CLIENT lets CORE read (never write) the client-key bucket: its change stream, and direct
    # gets, remapped so CORE's own JetStream API does not answer them. The head re-checks
    # each request's key against it.
    # The edges' heartbeats (monitoring), as a stream: CORE's control service collects them.
    stats_exports = [{"stream": subject, "accounts": ["CORE"]} for subject in s.CLIENT_STATS]
    stats_imports = [
        {"stream": {"account": "CLIENT", "subject": subject}} for subject in s.CLIENT_STATS
    ]
    key_exports = [
        {"stream": s.KEYS_CHANGES, "accounts": ["CORE"]},
        {"service": f"$JS.API.DIRECT.GET.KV_{s.KEYS_BUCKET}.>", "accounts": ["CORE"]},
    ]
    key_imports = [
        {"stream": {"account": "CLIENT", "subject": s.KEYS_CHANGES}},
        {
            "service": {"account": "CLIENT", "subject": f"$JS.API.DIRECT.GET.KV_{s.KEYS_BUCKET}.>"},
            "to": f"{s.KEYS_DIRECT_GET_PREFIX}.>",
        },
    ]
    doc: dict[str, Any] = {
        "server_name": layout.server_name,
        "listen": f"{layout.host}:{layout.port}",
        "http": f"{layout.monitor_host}:{layout.monitor_port}",
        "max_payload": MAX_PAYLOAD,
        "max_pending": 4 * MAX_PAYLOAD,
        # A client that stops answering (a hung process: SIGSTOP, a stuck event loop) keeps
        # its queue-group subscriptions until the server gives up on it, and its share of
        # requests waits out the edges' accept timeout meanwhile. The default (2 min, 2 pings)
        # let that go on for minutes; this drops it within about 40 s.
        "ping_interval": PING_INTERVAL,
        "ping_max": PING_MAX,
        "tls": {
            "cert_file": str(server.cert),
            "key_file": str(server.key),
            "ca_file": str(server.ca),
            "verify_and_map": True,
            "timeout": 2,
        },
        "jetstream": {
            "store_dir": str(layout.store_dir),
            "max_memory_store": layout.max_memory_store,
            "max_file_store": layout.max_file_store,
        },
        "system_account": "SYS",
        "accounts": {
            "SYS": {"users": users[Zone.SYS]},
            "CORE": {
                "jetstream": "enabled",
                "users": users[Zone.CORE],
                "exports": [*llm_exports, *admin_exports],
                "imports": [*key_imports, *stats_imports],
            },
            "CLIENT": {
                # JetStream in CLIENT holds only the client-key bucket (DESIGN §6).
                "jetstream": "enabled",
                "users": users[Zone.CLIENT],
                "imports": [*llm_imports, *admin_imports],
                "exports": [*key_exports, *stats_exports],
            },
            # Internal clients. No JetStream and no import but the LLM API: the head's answers
            # are delivered to the reply subject the client named, in this account, where
            # nothing but the client's own inbox listens (see ``Zone``). Rendered even with no
            # internal client, so every cluster node's accounts are the same.
            "INTERNAL": {
                "users": users[Zone.INTERNAL],
                "imports": llm_imports,
            },
        },
    }
    if layout.cluster is not None:
        doc["cluster"] = _cluster(layout.cluster, layout.cert_dir)
    return doc


def _cluster(cluster: ClusterLayout, cert_dir: Path) -> dict[str, Any]:
    route = tls_files(cert_dir, ROUTE_CERT)
    return {
        "name": cluster.name,
        "listen": f"{cluster.host}:{cluster.port}",
        "routes": list(cluster.routes),
        # Clients know every node from their settings. Advertised, a node's every address
        # (one per container network) would join each client's reconnect list, and one on a
        # network the client is not on costs a connect timeout per try: a failover then
        # takes tens of seconds instead of one.
        "no_advertise": True,
        # Both ends present the route certificate and verify the other's against the CA, so
        # only nodes holding it can join; the dialling node also checks the host name.
        "tls": {
            "cert_file": str(route.cert),
            "key_file": str(route.key),
            "ca_file": str(route.ca),
            "verify": True,
            "timeout": 2,
        },
    }


def render(doc: dict[str, Any]) -> str:
    """Print a config document in nats-server's syntax (keys unquoted, values JSON-quoted)."""
    lines = ["# Rendered by switchyard; edits are overwritten on the next `switchyard up`."]
    _render_map(doc, lines, 0)
    return "\n".join(lines) + "\n"


def _render_map(doc: dict[str, Any], lines: list[str], depth: int) -> None:
    pad = "  " * depth
    for key, value in doc.items():
        name = key if key.replace("_", "").isalnum() else json.dumps(key)
        if isinstance(value, dict):
            lines.append(f"{pad}{name} {{")
            _render_map(value, lines, depth + 1)
            lines.append(f"{pad}}}")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{pad}{name}: [")
            for item in value:
                lines.append(f"{pad}  {{")
                _render_map(item, lines, depth + 2)
                lines.append(f"{pad}  }}")
            lines.append(f"{pad}]")
        else:
            lines.append(f"{pad}{name}: {_scalar(value)}")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return json.dumps(str(value))


def write_nats_config(layout: NatsServerLayout, path: Path) -> Path:
    """Render the config for ``layout`` into ``path`` (0600: it names every identity)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(nats_config(layout)), encoding="utf-8")
    path.chmod(0o600)
    return path
