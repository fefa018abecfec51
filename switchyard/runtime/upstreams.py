"""The operator's allow-list of provider hosts (``modelproxy.allowed_upstreams``).

The route table is the admins' to change, and a provider's ``api_base`` is where its stored
key is sent: with an admin credential alone, anyone could point a provider at a host of their
own and read the key from the ``Authorization`` header it receives. The allow-list is set in
the settings of the server zone (file or environment), which the admin plane cannot change.
The model-proxies refuse to call a provider whose host it does not allow (no key is fetched
or sent), and the control service refuses a table write that adds one or moves one there.

Entries match the host of the provider's URL (``api_base``, else its kind's default URL): a
name pattern label by label, case-insensitively (``*.openai.azure.com``: ``*`` and ``?`` never
cross a dot), an IP range as CIDR (``10.0.0.0/24``); a name pattern never allows an IP host
nor a range a name, and only an entry written with ``http://`` allows plain http (the key
would cross the network in clear): :mod:`switchyard.config.upstream_patterns`.
Empty allows every host, as before the setting existed. A provider with no URL at all (a kind
whose library knows its own endpoint: ``anthropic``, ``gemini``, ``bedrock``... without
``api_base``; ``demo``) is not checked: no admin chose its host. The kind ``litellm`` without
``api_base`` is refused: litellm takes the host from each deployment's model string
(``ollama/x`` goes to ``http://localhost:11434``), which an admin writes and the allow-list
does not see.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from switchyard.config.upstream_patterns import UpstreamPattern, parse
from switchyard.errors import ServiceUnavailable
from switchyard.runtime.throttle import Throttle
from switchyard.schemas.routing import Provider, RouteTable

log = logging.getLogger("switchyard.upstreams")

SETTING = "modelproxy.allowed_upstreams"


def host_of(url: str) -> str | None:
    """The lower-case host of ``url``; None when it has none (not a URL)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host or None


def refusal(name: str, provider: Provider, patterns: tuple[str, ...]) -> str | None:
    """Why ``provider`` may not be called under ``patterns`` (the setting's entries, checked
    when the settings loaded), naming its host and the setting; None when it may."""
    return _refusal(name, provider, tuple(parse(p) for p in patterns))


def _refusal(name: str, provider: Provider, patterns: tuple[UpstreamPattern, ...]) -> str | None:
    url = provider.base_url
    if patterns and provider.kind == "litellm" and not url:
        return (
            f"provider {name} is kind litellm without api_base: litellm picks its host from "
            "each deployment's model (ollama/... goes to http://localhost:11434), which "
            f"{SETTING} cannot check; give it an api_base"
        )
    if not patterns or not url or provider.kind == "demo":
        return None
    host = host_of(url)
    hosts = [p for p in patterns if host is not None and p.allows_host(host)]
    scheme = urlsplit(url).scheme.lower() if hosts else ""  # host_of could split it
    if any(p.allows_scheme(scheme) for p in hosts):
        return None
    if hosts:  # a listed host, but plain http (or another scheme) where https is allowed only
        return (
            f"provider {name}'s api_base is {scheme}:// at host {host}, which {SETTING} allows "
            f"over https only (an entry written http://{host} allows plain http)"
        )
    where = f"host {host}" if host else "api_base, which has no host,"
    return f"provider {name}'s {where} is not in {SETTING}"


def table_refusal(
    table: RouteTable, current: RouteTable, patterns: tuple[str, ...]
) -> tuple[str, str] | None:
    """(field, why) for the first provider the write adds or moves (its kind or api_base
    changed) to a host ``patterns`` do not allow; None when there is none. A provider left as
    stored is not judged here (the setting may be newer than it): the model-proxies refuse
    its calls all the same."""
    parsed = tuple(parse(p) for p in patterns)
    for name, provider in sorted(table.providers.items()):
        old = current.providers.get(name)
        if old is not None and old.base_url == provider.base_url and old.kind == provider.kind:
            continue
        why = _refusal(name, provider, parsed)
        if why is not None:
            return f"providers.{name}.api_base", why
    return None


class UpstreamGuard:
    """The model-proxy's check, made before a provider's key is fetched."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self._patterns = tuple(parse(p) for p in patterns)
        self._said = Throttle(60.0)

    def check(self, name: str, provider: Provider) -> None:
        """Raises:
        ServiceUnavailable: ``upstream_not_allowed``, when the provider's URL is not
            allowed (or, kind ``litellm`` without ``api_base``, cannot be known). The client
            is told the setting, not the host; the log says both.
        """
        why = _refusal(name, provider, self._patterns)
        if why is None:
            return
        if self._said.ready():
            log.warning("refused to call %s: %s (its key is not fetched)", name, why)
        raise ServiceUnavailable(
            f"provider {name} may not be called: the operator's {SETTING} does not allow "
            "where it would be called",
            code="upstream_not_allowed",
        )
