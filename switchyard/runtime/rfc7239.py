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

    Elements are read from the right, where each proxy appends its own: the right-most element
    is the shortest tail after a comma that parses whole, quoted strings honoured (a proxy's
    extension value may hold a comma: ``for=192.0.2.1;ext="a,b"``), then the one left of it,
    and so on. A client's odd quote (``for="x``) is at the left, so it cannot swallow the
    elements the proxies appended after it: reading from the left, its quote paired with one
    in a proxy's element and the proxy's hop came out unknown. Where no tail parses (nor
    one within ``_MAX_ELEMENT`` characters), all that is left of the header is one unknown
    element: the walk stops trusting there, as before."""
    nodes: list[str | None] = []
    end = len(header)
    while end > 0:
        found = _last_element(header, end)
        if found is None:  # nothing left parses: one unknown hop
            if header[:end].strip(_SPACE + ","):
                nodes.append(None)
            break
        comma, node, empty = found
        if not empty:
            nodes.append(node)
        end = comma
    nodes.reverse()
    return nodes


# An element longer than this that does not parse ends the search (a proxy's own is far
# shorter): it bounds the work a header of many commas can ask for to its commas times this.
# Tails that start inside a quoted value (an odd count of quotes) are skipped unparsed and
# unbounded, so a long quoted value a proxy copied from the client cannot hide its element.
_MAX_ELEMENT = 1024


def _last_element(header: str, end: int) -> tuple[int, str | None, bool] | None:
    """The right-most element of ``header[:end]``: the index of the comma before it (-1 if
    none), its node, and whether it is empty; None if no tail of at most
    ``_MAX_ELEMENT`` characters after a comma (or the whole) parses."""
    comma = end
    quotes = 0  # unescaped quotes in header[comma + 1 : end]
    while True:
        left = header.rfind(",", 0, comma)
        quotes += _quotes(header, left + 1, comma)
        comma = left
        element = header[comma + 1 : end]
        if not element.strip(_SPACE):
            return comma, None, True
        if quotes % 2:  # this comma is inside a quoted value: not an element's start
            if comma < 0:
                return None
            continue
        node = _element_node(element)
        if node is not False:
            return comma, node, False
        if comma < 0 or len(element) > _MAX_ELEMENT:
            return None


def _quotes(text: str, start: int, end: int) -> int:
    """How many quotes ``text[start:end]`` holds that no backslash escapes."""
    count = 0
    at = text.find('"', start, end)
    while at >= 0:
        slashes = 0
        while at - slashes - 1 >= start and text[at - slashes - 1] == "\\":
            slashes += 1
        count += slashes % 2 == 0
        at = text.find('"', at + 1, end)
    return count


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
