"""``modelproxy.allowed_upstreams``: which provider hosts may be called, and which table
writes the control service refuses for it (pure logic; the stack test is
tests/test_upstream_allow_list.py)."""

from __future__ import annotations

import pytest

from switchyard.config.loader import load_settings
from switchyard.errors import ConfigError, ServiceUnavailable
from switchyard.runtime.upstreams import UpstreamGuard, refusal, table_refusal
from switchyard.schemas.routing import Provider, RouteTable

ALLOWED = ("api.openai.com", "*.openai.azure.com", "http://10.0.0.0/24")


def _at(url: str | None, kind: str = "openai-compatible") -> Provider:
    return Provider(kind=kind, api_base=url)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1",
        "https://EU.openai.azure.com/",
        "https://a.b.openai.azure.com/",  # a leading `*.` stands for one or more labels
        "http://10.0.0.7:8000/v1",
    ],
)
def test_a_listed_host_is_allowed(url: str) -> None:
    assert refusal("p", _at(url), ALLOWED) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://attacker.example/v1",
        "https://api.openai.com.attacker.example/v1",
        "https://openai.azure.com/",  # `*.` needs a subdomain
        "http://u:p@api.openai.com@evil.example/v1",  # the host is what a client connects to
        "not a url",
        # The documented `10.0.0.*` let `*` cross dots: a name of the admin's own was allowed.
        "http://10.0.0.7.attacker.example/v1",
        "http://10.0.0.1.nip.io/v1",
        "http://10.0.1.7/v1",
        "http://167772167/v1",  # 10.0.0.7 to some resolvers, not an address to the range
    ],
)
def test_any_other_host_is_refused_naming_it_and_the_setting(url: str) -> None:
    why = refusal("p", _at(url), ALLOWED)
    assert why is not None
    assert "modelproxy.allowed_upstreams" in why


def test_an_empty_list_allows_any_host_and_a_kind_without_url_is_not_checked() -> None:
    assert refusal("p", _at("http://anywhere.example/v1"), ()) is None
    assert refusal("p", _at(None, "anthropic"), ALLOWED) is None
    assert refusal("p", _at(None, "demo"), ALLOWED) is None
    # A kind's default URL is checked as an api_base would be.
    assert refusal("p", _at(None, "openai"), ALLOWED) is None
    assert refusal("p", _at(None, "groq"), ALLOWED) is not None


def test_kind_litellm_without_api_base_is_refused_as_its_host_cannot_be_known() -> None:
    """litellm picks the host from the model string (``ollama/x``: http://localhost:11434)."""
    why = refusal("p", _at(None, "litellm"), ALLOWED)
    assert why is not None
    assert "api_base" in why
    assert "modelproxy.allowed_upstreams" in why
    assert refusal("p", _at(None, "litellm"), ()) is None  # no list: any host, as before
    assert refusal("p", _at("https://api.openai.com/v1", "litellm"), ALLOWED) is None
    assert refusal("p", _at("https://elsewhere.example/v1", "litellm"), ALLOWED) is not None
    added = RouteTable(providers={"l": _at(None, "litellm")})
    refused = table_refusal(added, RouteTable(), ALLOWED)
    assert refused == ("providers.l.api_base", refusal("l", _at(None, "litellm"), ALLOWED))
    with pytest.raises(ServiceUnavailable) as caught:
        UpstreamGuard(ALLOWED).check("p", _at(None, "litellm"))
    assert caught.value.code == "upstream_not_allowed"


def test_the_guard_raises_a_503_naming_the_setting_not_the_host() -> None:
    with pytest.raises(ServiceUnavailable) as caught:
        UpstreamGuard(ALLOWED).check("p", _at("http://attacker.example/v1"))
    assert caught.value.code == "upstream_not_allowed"
    assert "modelproxy.allowed_upstreams" in caught.value.message
    assert "attacker" not in caught.value.message
    UpstreamGuard(ALLOWED).check("p", _at("https://api.openai.com/v1"))


def test_a_table_write_is_refused_for_what_it_adds_or_moves_only() -> None:
    stored = RouteTable(providers={"old": _at("http://legacy.example/v1")})
    kept = RouteTable(providers={**stored.providers, "new": _at("https://api.openai.com/v1")})
    assert table_refusal(kept, stored, ALLOWED) is None
    moved = RouteTable(providers={"old": _at("http://other.example/v1")})
    assert table_refusal(moved, stored, ALLOWED) == (
        "providers.old.api_base",
        "provider old's host other.example is not in modelproxy.allowed_upstreams",
    )
    added = RouteTable(providers={"x": _at("http://attacker.example/v1")})
    refused = table_refusal(added, RouteTable(), ALLOWED)
    assert refused is not None
    assert refused[0] == "providers.x.api_base"


@pytest.mark.parametrize(
    ("pattern", "host", "allowed"),
    [
        ("api.*.example", "api.x.example", True),
        ("api.*.example", "api.attacker.com.x.example", False),  # `*` is one label's
        ("llm-?.internal", "llm-1.internal", True),
        ("llm-?.internal", "llm-1.x.internal", False),
        ("*", "localhost", True),
        ("*", "10.0.0.7", False),  # a name pattern never allows an IP host...
        ("10.0.0.7", "10.0.0.7", True),
        ("10.0.0.0/8", "10.0.0.7.example", False),  # ...nor a range a name
        ("fd00::/8", "[fd00::7]", True),
        ("fd00::/8", "[fe80::7]", False),
    ],
)
def test_names_match_label_by_label_and_ranges_as_cidr(
    pattern: str, host: str, allowed: bool
) -> None:
    why = refusal("p", _at(f"https://{host}:8000/v1"), (pattern,))
    assert (why is None) is allowed, why


def test_plain_http_is_allowed_only_by_an_entry_written_so() -> None:
    """Moving https://api.openai.com/v1 to http:// would send the key in clear."""
    https_only = ("api.openai.com", "*.openai.azure.com")
    why = refusal("p", _at("http://api.openai.com/v1"), https_only)
    assert why is not None
    assert "https only" in why
    assert "http://api.openai.com" in why  # how to allow it, if meant
    assert refusal("p", _at("http://eu.openai.azure.com/v1"), https_only) is not None
    assert refusal("p", _at("http://10.0.0.7/v1"), ALLOWED) is None  # `http://10.0.0.0/24`
    assert refusal("p", _at("https://10.0.0.7/v1"), ALLOWED) is None
    assert refusal("p", _at("http://vllm.internal/v1"), ("http://vllm.internal",)) is None
    assert refusal("p", _at("https://api.openai.com/v1"), ("https://api.openai.com",)) is None
    # The kind's default URL is judged the same way: ollama's is plain http.
    assert refusal("p", _at(None, "ollama"), ("127.0.0.1",)) is not None
    assert refusal("p", _at(None, "ollama"), ("http://127.0.0.1",)) is None
    stored = RouteTable(providers={"p": _at("https://api.openai.com/v1")})
    moved = RouteTable(providers={"p": _at("http://api.openai.com/v1")})
    refused = table_refusal(moved, stored, ALLOWED)
    assert refused is not None
    assert refused[0] == "providers.p.api_base"


@pytest.mark.parametrize(
    "pattern",
    [
        "ftp://api.openai.com",
        "http://api.openai.com/v1",
        "api.openai.com:443",
        "",
        " a",
        "10.0.0.*",
        "10.0.0.1/24",
    ],
)
def test_a_pattern_that_could_never_match_a_host_is_refused_at_load(pattern: str) -> None:
    env = {"SWITCHYARD_MODELPROXY__ALLOWED_UPSTREAMS": f'["{pattern}"]'}
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env=env)
    assert caught.value.field.startswith("modelproxy.allowed_upstreams")
