"""The client's address behind trusted reverse proxies (``ingress.trusted_proxies``).

Behind a proxy or load balancer every client reaches the edges and the admin web app from the
proxy's address, so what is counted per address (the edges' failed-key guard, the web app's
sign-in guard) counts them all together, and audit entries name the proxy. A request whose
TCP peer is in ``ingress.trusted_proxies`` is taken to come from the right-most address of
``X-Forwarded-For`` that is not itself trusted: each proxy appends the address it was reached
from, so entries left of that one are whatever the client sent, and prove nothing. When every
entry is trusted the left-most is the client (it is inside the trusted range itself). A header
that is absent, or holds something other than an address (``unknown``, an empty entry) where
one is read, leaves the peer as the client. A peer outside the list is the client whatever it
sends: its header is never read. Entries may carry a port (``192.0.2.7:4711``,
``[2001:db8::7]:443``); an IPv4 address written as IPv6 (``::ffff:192.0.2.7``) is the IPv4
one, in the list and in the answer (a peer's too, once the list is set). With the list empty
(the default) nothing is parsed: the peer as the server gives it.

Which header is read is the deployment's choice (``ingress.forwarded_header``), never the
request's: ``x-forwarded-for`` (the default) or ``forwarded``, RFC 7239's, read the same way:
the ``for`` node of each element is an entry (:mod:`.rfc7239`; ``for="[2001:db8::7]:4711"``,
the port dropped, an obfuscated one too). An element without ``for``, a node that is no address
(``unknown``, an obfuscated identifier such as ``_hidden``), or an element that does not parse
where one is read leaves the peer as the client (one unknown hop: the rest of the header is
still read, so a client's own bad element left of its proxy's changes nothing). The other
header is never read: a proxy passes a client's own on untouched, so reading whichever came
(as the edge did: ``Forwarded`` when ``X-Forwarded-For`` was absent) let a client behind a
proxy that writes only ``Forwarded`` choose its address with an ``X-Forwarded-For``.

An audit entry names both when they differ (:meth:`TrustedProxies.audit_source`: ``client
via peer``): a listed address can name any client it likes, and the entry must still say
which machine connected.

Callers ask only when they need the address (the failed-key guard: only for a key that failed).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

from switchyard.runtime import rfc7239

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

HEADER = b"x-forwarded-for"
FORWARDED = b"forwarded"  # RFC 7239, read instead with ``ingress.forwarded_header: forwarded``
_PORT = re.compile(r":[0-9]{1,5}")  # used with fullmatch


def network(entry: str) -> Network:
    """One ``trusted_proxies`` entry: an address (a network of one) or a CIDR network.

    Raises:
        ValueError: not an address or network, or a network with host bits set
            (``10.0.0.1/8``: a typo for ``10.0.0.0/8`` or for ``10.0.0.1``?).
    """
    return ipaddress.ip_network(entry.strip(), strict=True)


def address(entry: str) -> Address | None:
    """The address one ``X-Forwarded-For`` entry names (a port dropped), else None."""
    text = entry.strip()
    if text.startswith("["):  # [IPv6] or [IPv6]:port
        text, closed, port = text[1:].partition("]")
        if not closed or (port and not _PORT.fullmatch(port)):
            return None
    elif text.count(":") == 1:  # IPv4:port (an IPv6 address has at least two colons)
        text, _, port = text.partition(":")
        if not _PORT.fullmatch(f":{port}"):
            return None
    try:
        found = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


class TrustedProxies:
    """Who the client of a request is, given the proxies whose ``X-Forwarded-For`` counts."""

    def __init__(self, trusted: Iterable[str] = (), header: str = "x-forwarded-for") -> None:
        """``trusted``: addresses and CIDR networks, validated by the settings already
        (:func:`network` raises ValueError for one that is not); ``header``: the one forwarding
        header read, ``x-forwarded-for`` or ``forwarded`` (``ingress.forwarded_header``)."""
        self._networks = tuple(network(entry) for entry in trusted)
        self._header = header.lower().encode("latin-1")
        if self._header not in (HEADER, FORWARDED):
            raise ValueError(f"not a forwarding header: {header}")

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, found: Address | None) -> bool:
        return found is not None and any(found in net for net in self._networks)

    def client(self, scope: Mapping[str, Any]) -> str:
        """The client's address for an ASGI ``scope`` (a request's ``.scope``); ``""`` when
        the server does not know the peer (a Unix socket)."""
        peer = scope.get("client")
        host = str(peer[0]) if peer else ""
        if not self._networks:
            return host
        given = [value for name, value in scope.get("headers", ()) if name == self._header]
        if not given:
            return _plain(host)
        joined = b",".join(given).decode("latin-1")
        if self._header == FORWARDED:
            return self.client_forwarded(host, joined)
        return self.client_behind(host, joined)

    def audit_source(self, scope: Mapping[str, Any]) -> str:
        """What an audit entry records as a request's source: the client, and the peer it came
        through when that is another address (``203.0.113.9 via 10.0.0.7``)."""
        peer = scope.get("client")
        host = str(peer[0]) if peer else ""
        client = self.client(scope)
        if not self._networks or client == _plain(host):
            return client
        return f"{client} via {_plain(host)}"

    def client_behind(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address for a request from ``peer`` with this ``X-Forwarded-For``
        (all its lines joined with commas; None: no such header)."""
        peer = _plain(peer)
        if forwarded_for is None or not self.trusts(address(peer)):
            return peer
        return self._walk(peer, [address(entry) for entry in forwarded_for.split(",")])

    def client_forwarded(self, peer: str, forwarded: str) -> str:
        """The client's address for a request from ``peer`` with this RFC 7239 ``Forwarded``
        (all its lines joined with commas)."""
        peer = _plain(peer)
        if not self.trusts(address(peer)):
            return peer
        nodes = rfc7239.for_nodes(forwarded)
        entries = [None if n is None else address(rfc7239.node_address(n)) for n in nodes]
        return self._walk(peer, entries)

    def _walk(self, peer: str, entries: list[Address | None]) -> str:
        """The right-most untrusted address of ``entries`` (the hops, left to right; None:
        no address), the left-most if all are trusted, ``peer`` if one read is None."""
        found: Address | None = None
        for found in reversed(entries):
            if found is None:  # malformed where a proxy wrote: nothing here can be believed
                return peer
            if not self.trusts(found):
                return str(found)
        return str(found) if found is not None else peer


def _plain(peer: str) -> str:
    """``peer`` with an IPv4 address written as IPv6 (``::ffff:192.0.2.7``) as the IPv4 one."""
    if not peer.startswith("::ffff:"):
        return peer
    found = address(peer)
    return str(found) if found is not None else peer
