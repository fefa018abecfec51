"""The entries of ``modelproxy.allowed_upstreams``, and which URLs each allows.

An entry allows ``https://`` URLs at its hosts, and plain ``http://`` ones too only when it
is written so (``http://vllm.internal``, ``http://10.0.0.0/24``): a provider moved from
``https://api.openai.com`` to ``http://api.openai.com`` would send its key in clear.
``https://`` may be written, and means the same as no scheme. Its hosts are a name pattern
or an IP range, never both kinds at once:

* a name, matched label by label, case-insensitively: ``*`` and ``?`` stand for characters
  within one label and never cross a dot, and a leading ``*.`` stands for one or more whole
  labels (``*.openai.azure.com`` allows ``eu.openai.azure.com`` and ``a.b.openai.azure.com``,
  not ``openai.azure.com``; ``api.*.example`` allows ``api.x.example`` only). A name pattern
  never allows an IP address, so ``10.0.0.*`` (which allowed ``10.0.0.7.attacker.example``
  when ``*`` crossed dots) is refused when the settings load: write the range as CIDR.
* an IP address or CIDR network (``10.0.0.7``, ``10.0.0.0/24``, ``fd00::/8``), which allows
  the IP hosts inside it, never a name.

Checked when the settings load (:func:`parse` raises), so a typo is not a silent refusal.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from typing import NamedTuple

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_LABEL = re.compile(r"[a-z0-9*?](?:[a-z0-9*?-]*[a-z0-9*?])?")
_NUMERIC = re.compile(r"[0-9*?]+")  # a label an IPv4 address could have
# A host no resolver reads as a name: its last label all digits, or a 0x number
# (``http://167772167/``, ``http://0xa000007/`` reach 10.0.0.7 through some resolvers).
_NUMBER_LIKE = re.compile(r"(?:[0-9]+|0x[0-9a-f]*)")


class UpstreamPattern(NamedTuple):
    """One parsed entry: ``network`` for an IP range, else the name's lower-case ``labels``
    (the first ``*`` of a leading ``*.`` stands for one or more labels); ``plain``: it allows
    ``http://`` as well as ``https://``."""

    text: str
    network: Network | None
    labels: tuple[str, ...]
    plain: bool = False

    def allows_scheme(self, scheme: str) -> bool:
        """Whether this entry allows URLs of ``scheme`` (lower-case) at its hosts."""
        return scheme == "https" or (scheme == "http" and self.plain)

    def allows_host(self, host: str) -> bool:
        """Whether this entry allows ``host`` (as ``urlsplit(url).hostname`` gives it)."""
        host = host.lower().removesuffix(".")
        address = _address(host)
        if self.network is not None:
            return address is not None and _inside(address, self.network)
        if address is not None or _NUMBER_LIKE.fullmatch(host.rpartition(".")[2]):
            return False
        return _names_match(host.split("."), self.labels)


def parse(entry: str) -> UpstreamPattern:
    """The entry ``entry`` of the setting, checked.

    Raises:
        ValueError: why it could never allow the host it seems to (a port or path, a scheme
            other than http(s), a blank, a host range written with wildcards, a network with
            host bits set).
    """
    scheme, written, rest = entry.lower().partition("://")
    plain = bool(written) and scheme == "http"
    text = rest if written and scheme in ("http", "https") else entry.lower()
    try:
        return UpstreamPattern(entry, ipaddress.ip_network(text, strict=True), (), plain)
    except ValueError as exc:
        if _meant_as_network(text):
            raise ValueError(f"`{entry}` is not an IP address or CIDR network: {exc}") from None
    labels = tuple(text.split("."))
    if any(c in text for c in ":/@"):
        raise ValueError(
            f"`{entry}` has a port, path or scheme other than http:// or https://: an entry is "
            "a host name pattern or an IP range, e.g. api.openai.com, *.openai.azure.com, "
            "http://10.0.0.0/24"
        )
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"`{entry}` is not a host name pattern (letters, digits, `-`, `*` and `?` in "
            "labels separated by single dots)"
        )
    if all(_NUMERIC.fullmatch(label) for label in labels) and any(c.isdigit() for c in text):
        raise ValueError(
            f"`{entry}` reads as a range of IP addresses, which a name pattern never allows: "
            "write it as CIDR (10.0.0.0/24 for 10.0.0.*)"
        )
    return UpstreamPattern(entry, None, labels, plain)


def _meant_as_network(text: str) -> bool:
    """An address with a prefix length, or an IPv6 one (two colons or more)."""
    address, slash, _ = text.partition("/")
    return "://" not in text and (address.count(":") >= 2 or bool(slash and _address(address)))


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _inside(address: ipaddress.IPv4Address | ipaddress.IPv6Address, network: Network) -> bool:
    return address.version == network.version and address in network


def _names_match(host: list[str], labels: tuple[str, ...]) -> bool:
    if len(labels) > 1 and labels[0] == "*":  # one or more whole labels, then the rest
        rest = labels[1:]
        return len(host) > len(rest) and _labels_match(host[len(host) - len(rest) :], rest)
    return len(host) == len(labels) and _labels_match(host, labels)


def _labels_match(host: list[str], labels: tuple[str, ...]) -> bool:
    # Each label alone: fnmatch's `*` crosses dots, so it is never given a whole name.
    return all(fnmatch.fnmatchcase(h, p) for h, p in zip(host, labels, strict=True))
