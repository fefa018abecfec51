"""Who may connect to NATS: service identities, their zones, and their certificate names.

A zone is a NATS account. Each identity logs in with its own TLS client certificate whose subject
DN the server maps to a user (``verify_and_map``); the DN is built here so certificates, the
rendered server config and the tests all agree on it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Zone(enum.StrEnum):
    """NATS accounts. CLIENT faces clients; CORE holds routes, queues and secrets."""

    CLIENT = "CLIENT"
    CORE = "CORE"
    SYS = "SYS"


@dataclass(frozen=True, slots=True)
class Identity:
    """A NATS user backed by a client certificate.

    Attributes:
        name: certificate CN, NATS user suffix and inbox prefix (``_INBOX_<name>``).
        zone: the account it belongs to.
        purpose: one line for humans (``switchyard certs`` prints it).
    """

    name: str
    zone: Zone
    purpose: str

    def dn(self, organization: str) -> str:
        """The subject DN in RFC 2253 order, exactly as nats-server's ``verify_and_map`` sees it."""
        return f"CN={self.name},OU={self.zone.value.lower()},O={organization}"

    @property
    def inbox_prefix(self) -> str:
        return f"_INBOX_{self.name}"


TAIL = Identity("tail", Zone.CLIENT, "thin OpenAI-compatible HTTP edge")
GATEWAY = Identity("gateway", Zone.CLIENT, "HTTP edge with provider and route management")
ADMIN = Identity("admin", Zone.CLIENT, "admin app and CLI: secrets metadata, keys, routes")
HEAD = Identity("head", Zone.CORE, "authorises and routes requests onto dispatch queues")
MODELPROXY = Identity("modelproxy", Zone.CORE, "calls providers and streams replies")
SECRETS = Identity("secrets", Zone.CORE, "the only holder of Vault/OpenBao credentials")
ACCOUNTING = Identity("accounting", Zone.CORE, "turns usage events into spend counters")
PROVISIONER = Identity("provisioner", Zone.CORE, "creates streams, consumers and KV buckets")
CONTROL = Identity("control", Zone.CORE, "validates and applies route changes for admins")
BATCH = Identity("batch", Zone.CLIENT, "runs OpenAI Batch API jobs at batch priority")

SERVICE_IDENTITIES: tuple[Identity, ...] = (
    TAIL,
    GATEWAY,
    ADMIN,
    HEAD,
    MODELPROXY,
    SECRETS,
    ACCOUNTING,
    PROVISIONER,
    CONTROL,
    BATCH,
)
INGRESS_NAMES = frozenset({TAIL.name, GATEWAY.name})
# Who may name a client key by its hash (they authenticated it, or run a job it created).
KEY_HASH_CALLERS = frozenset({*INGRESS_NAMES, BATCH.name})
# The certificate nats-server (and OpenBao) present; not a NATS user.
SERVER_CERT = "server"


def internal_client(name: str) -> Identity:
    """An extra CLIENT-zone identity that calls the LLM API over NATS (``certs issue NAME``)."""
    return Identity(name, Zone.CLIENT, "internal client of the LLM API over NATS")


def by_name(name: str, internal_clients: tuple[str, ...] = ()) -> Identity:
    """Look an identity up by name.

    Raises:
        KeyError: no service identity or configured internal client has that name.
    """
    for ident in SERVICE_IDENTITIES:
        if ident.name == name:
            return ident
    if name in internal_clients:
        return internal_client(name)
    raise KeyError(name)
