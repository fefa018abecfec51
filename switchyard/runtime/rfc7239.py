"""The ``for=`` nodes of an RFC 7239 ``Forwarded`` header, one per proxy hop.

``Forwarded: for=192.0.2.60;proto=https;by=203.0.113.43, for="[2001:db8:cafe::17]:4711"``:
elements (one a hop, appended by each proxy) are separated by commas, their parameters by
semicolons; a value is a token or a quoted string (an IPv6 node must be quoted, with brackets;
a port may follow a node). A node may also be ``unknown`` or an obfuscated identifier
(``_hidden``): no address. Only ``for`` is read here, for the client's address
(:mod:`switchyard.runtime.client_address`).
"""

from __future__ import annotations

import re

# One parameter: name=token or name="quoted string" (with \-escapes; brackets and colons
# let an unquoted IPv6 node through, as some proxies write it).
_PAIR = re.compile(
    r'([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=(?:([!#$%&\'*+.^_`|~0-9A-Za-z:\[\]-]+)|"((?:[^"\\]|\\.)*)")'
)
_ESCAPE = re.compile(r"\\(.)")
_OBFUSCATED_PORT = re.compile(r":_[A-Za-z0-9._-]+")  # used with fullmatch
_SPACE = " \t"


def for_nodes(header: str) -> list[str | None] | None:
    """The ``for`` node of each element of ``header`` (all its lines joined with commas), left
    to right, the port kept as written; None for an element without one (empty elements,
    ``a, , b``, are skipped, as in every HTTP list). None when the header does not parse, or
    an element names ``for`` twice: nothing in it can be believed."""
    nodes: list[str | None] = []
    node: str | None = None
    pairs = 0  # parameters of the element being read
    seen_for = False
    at, end = 0, len(header)
    while True:
        while at < end and header[at] in _SPACE:
            at += 1
        if at == end or header[at] == ",":  # the element ends
            if pairs:
                nodes.append(node)
            node, pairs, seen_for = None, 0, False
            if at == end:
                return nodes
            at += 1
            continue
        if header[at] == ";":  # (an empty parameter is allowed: ``for=a;;proto=http``)
            at += 1
            continue
        pair = _PAIR.match(header, at)
        if pair is None:
            return None
        name, token, quoted = pair.groups()
        if name.lower() == "for":
            if seen_for:
                return None
            seen_for = True
            node = token if token is not None else _ESCAPE.sub(r"\1", quoted)
        pairs += 1
        at = pair.end()
        while at < end and header[at] in _SPACE:
            at += 1
        if at < end and header[at] not in ";,":
            return None


def node_address(node: str) -> str:
    """A ``for`` node as an address entry for :func:`~switchyard.runtime.client_address.address`:
    an obfuscated port (``[2001:db8::7]:_p1``) dropped, anything else as it is."""
    if node.startswith("["):
        host, closed, port = node.partition("]")
        return host + closed if port and _OBFUSCATED_PORT.fullmatch(port) else node
    host, colon, port = node.partition(":")
    if colon and node.count(":") == 1 and _OBFUSCATED_PORT.fullmatch(colon + port):
        return host
    return node
