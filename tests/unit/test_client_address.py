"""Who the client is behind trusted proxies (``ingress.trusted_proxies``): the right-most
``X-Forwarded-For`` entry that is not trusted, the peer when the header is malformed or the
peer is not trusted, and a bad entry in the setting refused when the settings load."""

from __future__ import annotations

import time
from typing import Any

import pytest

from switchyard.config import load_settings
from switchyard.errors import ConfigError
from switchyard.runtime.client_address import TrustedProxies, address

pytestmark = pytest.mark.unit

TRUSTED = ["127.0.0.1", "10.0.0.0/8", "2001:db8:ffff::/48", "::1"]
PROXIES = TrustedProxies(TRUSTED)
RFC7239 = TrustedProxies(TRUSTED, "forwarded")  # ingress.forwarded_header: forwarded


def _scope(peer: str | None, *forwarded_for: bytes) -> dict[str, Any]:
    headers = [(b"host", b"x"), *((b"x-forwarded-for", value) for value in forwarded_for)]
    return {"client": (peer, 4711) if peer else None, "headers": headers}


def test_the_right_most_untrusted_entry_is_the_client() -> None:
    # A client's own entries (left) are spoofable; the proxies append the rest.
    assert PROXIES.client_behind("127.0.0.1", "198.51.100.9") == "198.51.100.9"
    chain = "203.0.113.66, 198.51.100.9, 10.1.2.3"
    assert PROXIES.client_behind("10.9.9.9", chain) == "198.51.100.9"
    assert PROXIES.client_behind("127.0.0.1", " 198.51.100.9 ,10.1.2.3,  10.4.5.6 ") == (
        "198.51.100.9"
    )
    # Several header lines are one list, in order.
    scope = _scope("127.0.0.1", b"203.0.113.66, 198.51.100.9", b"10.1.2.3")
    assert PROXIES.client(scope) == "198.51.100.9"


def test_an_untrusted_peer_is_the_client_whatever_it_sends() -> None:
    assert PROXIES.client_behind("192.0.2.50", "198.51.100.9") == "192.0.2.50"
    assert PROXIES.client(_scope("192.0.2.50", b"198.51.100.9")) == "192.0.2.50"
    assert PROXIES.client(_scope("10.0.0.1")) == "10.0.0.1"  # trusted, no header: itself
    assert PROXIES.client(_scope(None, b"198.51.100.9")) == ""  # no peer known (Unix socket)


def test_no_trusted_proxies_reads_no_header() -> None:
    nobody = TrustedProxies()
    assert not nobody
    assert PROXIES
    assert nobody.client(_scope("127.0.0.1", b"198.51.100.9")) == "127.0.0.1"
    assert nobody.client({"client": ("127.0.0.1", 1)}) == "127.0.0.1"  # headers not even asked


def test_ipv6_peers_entries_and_ports() -> None:
    assert PROXIES.client_behind("::1", "2001:db8:1::7") == "2001:db8:1::7"
    # Written in full or in capitals, it is one address (the guards count it once).
    assert PROXIES.client_behind("::1", "2001:DB8:1:0:0:0:0:7") == "2001:db8:1::7"
    assert PROXIES.client_behind("2001:db8:ffff:1::2", "2001:db8:1::7, 2001:db8:ffff::9") == (
        "2001:db8:1::7"
    )
    assert PROXIES.client_behind("::1", "[2001:db8:1::7]:443") == "2001:db8:1::7"
    assert PROXIES.client_behind("::1", "[2001:db8:1::7]") == "2001:db8:1::7"
    assert PROXIES.client_behind("127.0.0.1", "198.51.100.9:51234") == "198.51.100.9"
    # An IPv4 address written as IPv6 (a dual-stack socket) is the IPv4 one, as peer and entry.
    assert PROXIES.client_behind("::ffff:127.0.0.1", "::ffff:198.51.100.9") == "198.51.100.9"
    assert PROXIES.client_behind("::ffff:10.0.0.1", "198.51.100.9, ::ffff:10.2.2.2") == (
        "198.51.100.9"
    )
    # 2001:db8:fffe:: is outside the trusted /48.
    assert PROXIES.client_behind("2001:db8:fffe::1", "198.51.100.9") == "2001:db8:fffe::1"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "unknown",
        "198.51.100.9, unknown",
        "198.51.100.9,",
        "198.51.100.9,,10.0.0.1",
        "198.51.100.999",
        "198.51.100.9:port",
        "198.51.100.9:",
        "[2001:db8::1",
        "[2001:db8::1]x",
        "2001:db8::1]:443",
        "example.com",
        "198.51.100.9 203.0.113.1",
    ],
)
def test_a_malformed_header_leaves_the_peer_as_the_client(header: str) -> None:
    assert PROXIES.client_behind("127.0.0.1", header) == "127.0.0.1"


def test_only_the_entries_read_must_be_addresses() -> None:
    """Garbage left of the client's entry is the client's own: it proves nothing and changes
    nothing (else a client could fall back to the proxy's address at will)."""
    assert PROXIES.client_behind("127.0.0.1", "garbage, unknown, 198.51.100.9") == "198.51.100.9"


def test_when_every_entry_is_trusted_the_left_most_is_the_client() -> None:
    assert PROXIES.client_behind("127.0.0.1", "10.1.1.1, 10.2.2.2") == "10.1.1.1"
    assert PROXIES.client_behind("10.0.0.1", "10.0.0.1") == "10.0.0.1"
    assert PROXIES.client_behind("::1", "::1, 127.0.0.1") == "::1"


def test_entries_are_parsed_to_addresses() -> None:
    assert str(address(" 192.0.2.1 ")) == "192.0.2.1"
    assert address("192.0.2.1:99999x") is None
    assert str(address("[::ffff:192.0.2.1]:80")) == "192.0.2.1"
    assert str(address("fe80::1%eth0")) == "fe80::1%eth0"


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ("10.0.0.1/8", "has host bits set"),
        ("proxy.internal", "does not appear to be an IPv4 or IPv6 network"),
        ("10.0.0.0/33", "does not appear to be an IPv4 or IPv6 network"),
        ("", "does not appear to be an IPv4 or IPv6 network"),
    ],
)
def test_a_bad_entry_is_a_config_error_naming_it(entry: str, said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            None, env={}, overrides={"ingress.trusted_proxies": ["127.0.0.1", entry, "::1"]}
        )
    assert caught.value.field == "ingress.trusted_proxies[1]"
    assert f"`{entry}`" in caught.value.problem
    assert said in caught.value.problem
    assert "10.0.0.0/8" in caught.value.hint


def test_good_entries_load() -> None:
    given = ["127.0.0.1", "::1", "10.0.0.0/8", "fd00::/8", "0.0.0.0/0"]
    settings = load_settings(None, env={}, overrides={"ingress.trusted_proxies": given})
    assert settings.ingress.trusted_proxies == tuple(given)
    assert TrustedProxies(settings.ingress.trusted_proxies)
    from_env = {"SWITCHYARD_INGRESS__TRUSTED_PROXIES": '["192.0.2.0/24", "2001:db8::/32"]'}
    assert load_settings(None, env=from_env).ingress.trusted_proxies == (
        "192.0.2.0/24",
        "2001:db8::/32",
    )
    assert load_settings(None, env={}).ingress.trusted_proxies == ()


@pytest.mark.parametrize("seconds", [0.001, 0.5])
def test_a_stream_start_under_a_second_is_a_config_error(seconds: float) -> None:
    """A late stream gets a comment every ``stream_start_s``: a millisecond is a busy loop."""
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env={}, overrides={"ingress.stream_start_s": seconds})
    assert caught.value.field == "ingress.stream_start_s"
    for fine in (0, 1, 10):
        settings = load_settings(None, env={}, overrides={"ingress.stream_start_s": fine})
        assert settings.ingress.stream_start_s == fine


def test_a_peer_written_as_ipv6_mapped_is_its_ipv4_address() -> None:
    """The module says an IPv4 address written as IPv6 is the IPv4 one in the answer: it was
    only for addresses read from the header, so an untrusted peer counted apart from itself."""
    assert PROXIES.client_behind("::ffff:203.0.113.5", None) == "203.0.113.5"
    assert PROXIES.client_behind("::ffff:203.0.113.5", "198.51.100.9") == "203.0.113.5"


def test_an_audit_source_names_the_proxy_it_came_through() -> None:
    scope = {"client": ("127.0.0.1", 5000), "headers": [(b"x-forwarded-for", b"198.51.100.9")]}
    assert PROXIES.audit_source(scope) == "198.51.100.9 via 127.0.0.1"
    direct = {"client": ("203.0.113.5", 5000), "headers": [(b"x-forwarded-for", b"1.2.3.4")]}
    assert PROXIES.audit_source(direct) == "203.0.113.5"
    assert TrustedProxies().audit_source(scope) == "127.0.0.1"


def test_an_audit_source_names_an_ipv6_mapped_proxy_by_its_ipv4_address() -> None:
    scope = {"client": ("::ffff:10.0.0.7", 5000), "headers": [(b"x-forwarded-for", b"203.0.113.9")]}
    assert PROXIES.audit_source(scope) == "203.0.113.9 via 10.0.0.7"


def _rfc7239(peer: str, *forwarded: bytes, xff: bytes | None = None) -> dict[str, Any]:
    headers = [(b"host", b"x"), *((b"forwarded", value) for value in forwarded)]
    if xff is not None:
        headers.append((b"x-forwarded-for", xff))
    return {"client": (peer, 4711), "headers": headers}


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        (b"for=198.51.100.9", "198.51.100.9"),
        (b"For=198.51.100.9;proto=https;by=10.0.0.2", "198.51.100.9"),
        (b'for="198.51.100.9:4711"', "198.51.100.9"),
        (b'for="[2001:db8:1::7]:4711"', "2001:db8:1::7"),
        (b'for="[2001:db8:1::7]"', "2001:db8:1::7"),
        (b"for=[2001:db8:1::7]", "2001:db8:1::7"),  # unquoted, as some proxies write it
        (b'for="[2001:db8:1::7]:_port1"', "2001:db8:1::7"),  # an obfuscated port
        (b'for="198.51.100.9:_p"', "198.51.100.9"),
        # The right-most untrusted hop, as with X-Forwarded-For; the client's own claim left.
        (b"for=203.0.113.66, for=198.51.100.9;proto=http, for=10.1.2.3", "198.51.100.9"),
        (b"for=203.0.113.66,, for=198.51.100.9", "198.51.100.9"),  # an empty element
        (b"for=_hidden, for=198.51.100.9", "198.51.100.9"),  # left of the client: not read
        (b"for=10.1.2.3, for=10.4.5.6", "10.1.2.3"),  # every hop trusted: the left-most
    ],
)
def test_forwarded_for_names_the_client_behind_a_trusted_proxy(
    forwarded: bytes, client: str
) -> None:
    assert RFC7239.client(_rfc7239("127.0.0.1", forwarded)) == client


@pytest.mark.parametrize(
    "forwarded",
    [
        b'for=198.51.100.9;ext="a,b"',
        b'for=203.0.113.5;ext="c,d,e", for=198.51.100.9;ext="a,b"',
        b'for=198.51.100.9;ext="a\\",b"',  # an escaped quote stays in the value
        b'for="6.6.6.6, for=198.51.100.9',  # an open quote: every comma splits, as before
    ],
)
def test_a_quoted_comma_in_an_extension_value_does_not_split_its_element(
    forwarded: bytes,
) -> None:
    """A comma inside a quoted value is part of it (RFC 7239's quoted-string): the element
    was split there, each half an unknown hop, so a trusted proxy's own element with such an
    extension left the peer as the client."""
    scope = _rfc7239("127.0.0.1", forwarded, b"for=10.1.2.3")
    assert RFC7239.client(scope) == "198.51.100.9"


def test_forwarded_lines_are_one_list_in_order() -> None:
    scope = _rfc7239("10.0.0.1", b"for=203.0.113.66, for=198.51.100.9", b"for=10.1.2.3")
    assert RFC7239.client(scope) == "198.51.100.9"


@pytest.mark.parametrize(
    "forwarded",
    [
        b"for=unknown",
        b"for=_hidden",  # an obfuscated identifier: no address to count
        b"for=198.51.100.9, proto=https",  # the last hop did not say whom it was reached from
        b"for=198.51.100.9, for=_hidden",
        b"for=198.51.100.9;for=203.0.113.5",  # for twice in one element
        b"for=198.51.100.9 junk",
        b'for="198.51.100.9',  # an unterminated quoted string
        b"",
        b"for=",
    ],
)
def test_a_forwarded_node_that_is_no_address_leaves_the_peer_as_the_client(
    forwarded: bytes,
) -> None:
    assert RFC7239.client(_rfc7239("127.0.0.1", forwarded)) == "127.0.0.1"


@pytest.mark.parametrize(
    "sent",
    [
        b"for=198.51.100.9 junk",
        b"for=6.6.6.6;for=6.6.6.7",  # for twice
        b'for="6.6.6.6',  # an unterminated quote: it must not swallow the proxy's element
        b'for="6.6.6.6, for="[2001:db8::66]',  # odd quotes, then the proxy's quoted node
        b"=;=",
    ],
)
def test_a_clients_bad_element_is_one_unknown_hop_left_of_the_proxys(sent: bytes) -> None:
    """One element that did not parse discarded the whole header, the trusted proxy's own
    right-most element too: the client was named as the proxy. It is one unknown hop now,
    read only if the walk over trusted proxies reaches it."""
    for appended in (b"for=203.0.113.5", b'for="203.0.113.5:4711"'):
        same_line = _rfc7239("127.0.0.1", sent + b", " + appended)
        assert RFC7239.client(same_line) == "203.0.113.5", same_line
        own_line = _rfc7239("127.0.0.1", sent, appended)
        assert RFC7239.client(own_line) == "203.0.113.5", own_line
    quoted_v6 = _rfc7239("127.0.0.1", b'for="6.6.6.6', b'for="[2001:db8:1::7]:4711"')
    assert RFC7239.client(quoted_v6) == "2001:db8:1::7"
    # Reached by the walk (every hop right of it trusted), it leaves the peer as the client.
    assert RFC7239.client(_rfc7239("127.0.0.1", sent, b"for=10.1.2.3")) == "127.0.0.1"


def test_a_clients_stray_quote_does_not_pair_with_one_in_the_proxys_element() -> None:
    """Elements were split from the left: the client's open quote (``for="6.6.6.6``) closed at
    the proxy's ``ext="`` and the proxy's quoted comma was then outside quotes, so every hop
    came out unknown and the peer was named the client. Read from the right, where proxies
    append, the proxy's element is whole."""
    appended = b'for=198.51.100.9;ext="a,b"'
    for sent in (b'for="6.6.6.6', b'for="6.6.6.6;x="', b'for=6.6.6.6;ext="x,y", for="z'):
        same_line = _rfc7239("127.0.0.1", sent + b", " + appended)
        assert RFC7239.client(same_line) == "198.51.100.9", same_line
        own_line = _rfc7239("127.0.0.1", sent, appended)
        assert RFC7239.client(own_line) == "198.51.100.9", own_line
    # Behind two trusted proxies each with a quoted comma, the client's element is read.
    two = b'for=203.0.113.7;ext="p,q", for=10.1.2.3;ext="a,b"'
    assert RFC7239.client(_rfc7239("127.0.0.1", two)) == "203.0.113.7"
    # Reached by the walk, the client's stray quote is one unknown hop: the peer, as before.
    reached = _rfc7239("127.0.0.1", b'for="6.6.6.6', b'for=10.1.2.3;ext="a,b"')
    assert RFC7239.client(reached) == "127.0.0.1"


def test_a_long_quoted_value_with_a_comma_in_the_proxys_element_keeps_it_whole() -> None:
    """A proxy that copies client data into a quoted value (``host="..."``) over 1 KiB with a
    comma near its start: the tail after that comma did not parse and was past the search's
    bound, so the whole header became one unknown hop and the client was counted as the
    proxy. A tail that starts inside a quoted value (an odd count of quotes) is skipped now,
    unparsed and unbounded."""
    appended = b'for=198.51.100.9;host="a,' + b"b" * 1100 + b'";proto=https'
    header = _rfc7239("127.0.0.1", b"for=6.6.6.6, " + appended)
    assert RFC7239.client(header) == "198.51.100.9"
    escaped = _rfc7239(
        "127.0.0.1", b'for=6.6.6.6, for=198.51.100.9;ext="q\\",' + b"b" * 1100 + b'"'
    )
    assert RFC7239.client(escaped) == "198.51.100.9"  # (an escaped quote is no quote)


def test_a_header_of_many_commas_is_read_in_bounded_time() -> None:
    """Each element is looked for within ``_MAX_ELEMENT`` characters of its right end."""
    junk = b'a=",' * 4000 + b", for=198.51.100.9"
    started = time.monotonic()
    assert RFC7239.client(_rfc7239("127.0.0.1", junk)) == "198.51.100.9"
    assert RFC7239.client(_rfc7239("127.0.0.1", b"x" + b",;a=1" * 4000)) == "127.0.0.1"
    assert time.monotonic() - started < 2.0


def test_forwarded_has_the_same_trust_rule() -> None:
    assert RFC7239.client(_rfc7239("192.0.2.50", b"for=198.51.100.9")) == "192.0.2.50"
    assert TrustedProxies().client(_rfc7239("127.0.0.1", b"for=198.51.100.9")) == "127.0.0.1"
    scope = _rfc7239("127.0.0.1", b"for=198.51.100.9")
    assert RFC7239.audit_source(scope) == "198.51.100.9 via 127.0.0.1"


def test_only_the_configured_header_is_read() -> None:
    """Whether Forwarded was read depended on whether X-Forwarded-For came, which the client
    chooses: behind a proxy that writes only Forwarded, a client's own X-Forwarded-For was
    believed. The deployment names the header; the other is never read."""
    spoofed = _rfc7239("127.0.0.1", b"for=203.0.113.5", xff=b"6.6.6.6")
    assert RFC7239.client(spoofed) == "203.0.113.5"
    assert RFC7239.audit_source(spoofed) == "203.0.113.5 via 127.0.0.1"
    assert RFC7239.client(_rfc7239("127.0.0.1", xff=b"6.6.6.6")) == "127.0.0.1"
    # The default reads X-Forwarded-For only: a client's own Forwarded is never read.
    assert PROXIES.client(spoofed) == "6.6.6.6"
    assert PROXIES.client(_rfc7239("127.0.0.1", b"for=203.0.113.5")) == "127.0.0.1"
    malformed = _rfc7239("127.0.0.1", b"for=203.0.113.5", xff=b"unknown")
    assert PROXIES.client(malformed) == "127.0.0.1"  # not the Forwarded one either
    assert load_settings(None, env={}).ingress.forwarded_header == "x-forwarded-for"
    chosen = {"ingress.forwarded_header": "forwarded"}
    assert load_settings(None, env={}, overrides=chosen).ingress.forwarded_header == "forwarded"


def test_a_forwarded_header_setting_of_another_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env={}, overrides={"ingress.forwarded_header": "x-real-ip"})
    assert "forwarded_header" in caught.value.field
