"""Who may connect to NATS: service identities, their zones, and their certificate names.

A zone is a NATS account. Each identity logs in with its own TLS client certificate whose subject
DN the server maps to a user (``verify_and_map``); the DN is built here so certificates, the
rendered server config and the tests all agree on it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from switchyard.config.settings import CERT_FILE_NAMES, SERVICE_NAMES, ServiceName
from switchyard.errors import ConfigError


class Zone(enum.StrEnum):
    """NATS accounts. CLIENT faces clients; CORE holds routes, queues and secrets.

    INTERNAL holds the internal clients (``nats.internal_clients``) and nothing else: no
    JetStream, only the LLM API imported from CORE. nats-server does not check a request's
    reply subject against the sender's permissions, and a service's answer is delivered in the
    requester's account; in CLIENT an internal client could have the head's answers written
    into the audit stream or the key and batch buckets by naming their subjects as its reply.
    """

    CLIENT = "CLIENT"
    CORE = "CORE"
    INTERNAL = "INTERNAL"
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

    @property
    def ou(self) -> str:
        """The certificate's organisational unit: its zone, except that internal clients keep
        ``client``, the OU they were issued with when they lived in CLIENT, so certificates
        issued then still map to a user without being issued again."""
        return "client" if self.zone is Zone.INTERNAL else self.zone.value.lower()

    def dn(self, organization: str) -> str:
        """The subject DN in RFC 2253 order, exactly as nats-server's ``verify_and_map`` sees it."""
        return f"CN={self.name},OU={self.ou},O={organization}"

    @property
    def inbox_prefix(self) -> str:
        return f"_INBOX_{self.name}"


# Each service's zone and purpose. Its name is the settings' (:class:`ServiceName`, the one list
# of them): a name added there without an entry here fails every import of this module, naming it.
_SERVICES: dict[ServiceName, tuple[Zone, str]] = {
    ServiceName.TAIL: (Zone.CLIENT, "thin OpenAI-compatible HTTP edge"),
    ServiceName.GATEWAY: (Zone.CLIENT, "HTTP edge with provider and route management"),
    ServiceName.ADMIN: (Zone.CLIENT, "admin app and CLI: secrets metadata, keys, routes"),
    ServiceName.HEAD: (Zone.CORE, "authorises and routes requests onto dispatch queues"),
    ServiceName.MODELPROXY: (Zone.CORE, "calls providers and streams replies"),
    ServiceName.SECRETS: (Zone.CORE, "the only holder of Vault/OpenBao credentials"),
    ServiceName.ACCOUNTING: (Zone.CORE, "turns usage events into spend counters"),
    ServiceName.PROVISIONER: (Zone.CORE, "creates streams, consumers and KV buckets"),
    ServiceName.CONTROL: (Zone.CORE, "validates and applies route changes for admins"),
    ServiceName.BATCH: (Zone.CLIENT, "runs OpenAI Batch API jobs at batch priority"),
}
# One identity per service name, in the names' order.
SERVICE_IDENTITIES: tuple[Identity, ...] = tuple(
    Identity(name.value, *_SERVICES[name]) for name in ServiceName
)
_BY_NAME = {ident.name: ident for ident in SERVICE_IDENTITIES}

TAIL = _BY_NAME[ServiceName.TAIL]
GATEWAY = _BY_NAME[ServiceName.GATEWAY]
ADMIN = _BY_NAME[ServiceName.ADMIN]
HEAD = _BY_NAME[ServiceName.HEAD]
MODELPROXY = _BY_NAME[ServiceName.MODELPROXY]
SECRETS = _BY_NAME[ServiceName.SECRETS]
ACCOUNTING = _BY_NAME[ServiceName.ACCOUNTING]
PROVISIONER = _BY_NAME[ServiceName.PROVISIONER]
CONTROL = _BY_NAME[ServiceName.CONTROL]
BATCH = _BY_NAME[ServiceName.BATCH]

INGRESS_NAMES = frozenset({TAIL.name, GATEWAY.name})
# Who may name a client key by its hash (they authenticated it, or run a job it created).
KEY_HASH_CALLERS = frozenset({*INGRESS_NAMES, BATCH.name})
# The certificate nats-server (and OpenBao) present; not a NATS user.
SERVER_CERT = "server"


def internal_client(name: str) -> Identity:
    """An extra identity, in the INTERNAL zone, that calls the LLM API over NATS
    (``certs issue NAME``).

    Raises:
        ConfigError: ``name`` is a service identity's (its DN would be that service's, and the
            head and model-proxies trust some services by name: ``KEY_HASH_CALLERS``), or a
            certificate's of the stack's own (its files would overwrite the CA's or a server's).
    """
    if name in CERT_FILE_NAMES or name in SERVICE_NAMES:
        raise ConfigError(
            "nats.internal_clients",
            f"`{name}` is the name of a Switchyard service identity or certificate",
            "give the internal client a name of its own",
        )
    return Identity(name, Zone.INTERNAL, "internal client of the LLM API over NATS")


def certificate_subjects(internal_clients: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """``(name, ou)`` of every identity to issue a certificate for: the services, then the
    configured internal clients."""
    idents = [*SERVICE_IDENTITIES, *(internal_client(n) for n in internal_clients)]
    return [(ident.name, ident.ou) for ident in idents]


def by_name(name: str, internal_clients: tuple[str, ...] = ()) -> Identity:
    """Look an identity up by name.

    Raises:
        KeyError: no service identity or configured internal client has that name.
    """
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name in internal_clients:
        return internal_client(name)
    raise KeyError(name)
