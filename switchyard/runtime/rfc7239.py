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
from typing import Literal

# One parameter: name=token or name="quoted string" (with \-escapes; brackets and colons
# let an unquoted IPv6 node through, as some proxies write it).
_PAIR = re.compile(
    r'([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=(?:([!#$%&\'*+.^_`|~0-9A-Za-z:\[\]-]+)|"((?:[^"\\]|\\.)*)")'
)
_ESCAPE = re.compile(r"\\(.)")
_OBFUSCATED_PORT = re.compile(r":_[A-Za-z0-9._-]+")  # used with fullmatch
_SPACE = " \t"


def for_nodes(header: str) -> list[str | None]:
    """The ``for`` node of each element of ``header`` (all its lines joined with commas), left
    to right, the port kept as written; None for an element without one, or one that does not
    parse or names ``for`` twice: an unknown hop, which matters only if the right-to-left walk
    over trusted proxies reaches it (as a bad ``X-Forwarded-For`` entry). Empty elements
    (``a, , b``) are skipped, as in every HTTP list.

    Elements are split at the commas outside quoted strings: a proxy's extension value may
    hold one (``for=192.0.2.1;ext="a,b"``), and splitting there made its hop two unknown ones.
    A client's odd quote (``for="x``) must not swallow the elements the proxies appended after
    it, so a header whose quotes do not close splits at every comma, and so does an element
    that does not parse whole (each of its parts then read on its own: the proxy's element
    after a client's stray quote still names its hop)."""
    elements = _split_outside_quotes(header)
    if elements is None:  # a quote left open: no comma in it can be trusted to be quoted
        elements = header.split(",")
    nodes: list[str | None] = []
    for element in elements:
        if not element.strip(_SPACE):
            continue
        node = _element_node(element)
        if node is False and "," in element:
            parts = [_element_node(part) for part in element.split(",") if part.strip(_SPACE)]
            nodes.extend(None if part is False else part for part in parts)
        else:
            nodes.append(None if node is False else node)
    return nodes


def _split_outside_quotes(header: str) -> list[str] | None:
    r"""``header`` split at the commas outside quoted strings (``\`` escapes the character
    after it inside one); None when a quoted string is left open at the end."""
    elements: list[str] = []
    quoted = escaped = False
    start = 0
    for at, char in enumerate(header):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == ",":
            elements.append(header[start:at])
            start = at + 1
    if quoted:
        return None
    elements.append(header[start:])
    return elements


def _element_node(element: str) -> str | Literal[False] | None:
    """The ``for`` node of one element; None if it has none, False if it names it twice or
    does not parse."""
    node: str | None = None
    seen_for = False
    at, end = 0, len(element)
    while True:
        while at < end and element[at] in _SPACE:
            at += 1
        if at == end:
            return node
        if element[at] == ";":  # (an empty parameter is allowed: ``for=a;;proto=http``)
            at += 1
            continue
        pair = _PAIR.match(element, at)
        if pair is None:
            return False
        name, token, quoted = pair.groups()
        if name.lower() == "for":
            if seen_for:
                return False
            seen_for = True
            node = token if token is not None else _ESCAPE.sub(r"\1", quoted)
        at = pair.end()
        while at < end and element[at] in _SPACE:
            at += 1
        if at < end and element[at] != ";":
            return False


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
