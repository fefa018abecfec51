"""Where a client reached us when a reverse proxy stands in front (``X-Forwarded-*``).

The edges and the admin app serve plain HTTP and are often put behind a proxy that ends TLS
and may answer under another name. What they write back for the client to follow (the
``results_url`` of an Anthropic message batch, the ``Secure`` mark of the admin UI's session
cookie) must name the scheme and host the client used, or its SDK sends its key in clear
text, to the wrong host. The proxy says which with ``X-Forwarded-Proto`` and
``X-Forwarded-Host``; of a comma-separated list (proxies in a chain append) the first value is
the client's. A value that is not a plain scheme or host (a path, spaces, user info) is
ignored rather than written into a URL.

Behind a proxy that serves the edge under a path prefix (``/sy``: ``ingress.<edge>.root_path``),
the edge's ASGI entry (:class:`switchyard.ingress.root_path.RootPath`) states the prefix in the
request's scope under :data:`ROOT_PATH`; :func:`root_path` reads it for every URL given back.
It is not ASGI's ``root_path``: Starlette would then expect every path to start with it.
"""

from __future__ import annotations

import re

from starlette.requests import Request

_SCHEMES = frozenset({"http", "https"})
# A name or IPv4 address, or a bracketed IPv6 address, with an optional port: nothing else.
_HOST = re.compile(r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]*)|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


ROOT_PATH = "switchyard.root_path"  # the scope's key: the prefix the client's URLs carry


def root_path(request: Request) -> str:
    """The path prefix the client reached us under (``/sy``; "" at the host's root)."""
    prefix = request.scope.get(ROOT_PATH, "")
    return prefix if isinstance(prefix, str) else ""


def _first(request: Request, name: str) -> str:
    return request.headers.get(name, "").split(",", 1)[0].strip()


def scheme(request: Request) -> str:
    """``http`` or ``https``: the proxy's ``X-Forwarded-Proto`` if valid, else the connection's."""
    given = _first(request, "x-forwarded-proto").lower()
    return given if given in _SCHEMES else request.url.scheme


def host(request: Request) -> str | None:
    """The proxy's ``X-Forwarded-Host`` (``host[:port]``) if valid, else None."""
    given = _first(request, "x-forwarded-host")
    return given if given and _HOST.fullmatch(given) else None


def over_tls(request: Request) -> bool:
    """Whether the client reached us over TLS: directly, or through a proxy that says so."""
    return request.url.scheme == "https" or scheme(request) == "https"


def base_url(request: Request) -> str:
    """``scheme://host[:port]`` and the path prefix (:func:`root_path`) as the client
    reached us, no trailing slash: the start of an absolute URL given back to it."""
    url = request.base_url.replace(scheme=scheme(request))
    forwarded = host(request)
    if forwarded is not None:
        url = url.replace(netloc=forwarded)
    return str(url).rstrip("/") + root_path(request)
