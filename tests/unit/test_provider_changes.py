"""The audit words of a route table write: which providers' kind, api_base and secret changed,
old -> new, by name and URL (the kind's default when api_base is unset; never a key, never a
URL's user info or query), bounded."""

from __future__ import annotations

import msgspec

from switchyard.runtime.provider_changes import MAX_CHARS, bounded, provider_changes, table_words
from switchyard.schemas.routing import Provider, RouteTable

OPENAI = Provider(kind="openai-compatible", api_base="http://llm.internal/v1", secret="prod-key")
DEFAULT_OPENAI = "https://api.openai.com/v1"


def test_a_moved_api_base_and_secret_are_said_old_to_new() -> None:
    before = RouteTable(providers={"p": OPENAI})
    after = RouteTable(
        providers={"p": Provider(kind="openai", api_base="http://attacker:8080/v1", secret="other")}
    )
    assert provider_changes(before, after) == [
        "provider p: kind openai-compatible -> openai, api_base http://llm.internal/v1 -> "
        "http://attacker:8080/v1, secret prod-key -> other"
    ]
    assert table_words(before, after, 7).endswith("; revision 7")


def test_added_and_removed_providers_are_named_with_where_their_key_goes() -> None:
    before = RouteTable(providers={"old": OPENAI})
    after = RouteTable(providers={"exfil": OPENAI})
    assert provider_changes(before, after) == [
        "provider exfil added: kind openai-compatible, api_base http://llm.internal/v1, "
        "secret prod-key",
        "provider old removed",
    ]


def test_a_table_that_changes_no_provider_says_its_revision_only() -> None:
    table = RouteTable(providers={"p": OPENAI})
    changed = RouteTable(providers={"p": msgspec.structs.replace(OPENAI, concurrency=3)})
    assert table_words(table, changed, 3) == "revision 3"


def test_a_url_is_shown_without_its_user_info_or_query() -> None:
    after = RouteTable(
        providers={"p": Provider(kind="openai-compatible", api_base="http://u:pw@h/v1?key=sk-1")}
    )
    (said,) = provider_changes(RouteTable(), after)
    assert "http://h/v1" in said
    assert "pw" not in said
    assert "sk-1" not in said


def test_the_words_are_bounded_and_count_what_is_left_out() -> None:
    after = RouteTable(providers={f"p{i:03d}": OPENAI for i in range(200)})
    said = table_words(RouteTable(), after, 9)
    assert len(said) <= MAX_CHARS
    assert said.endswith("more; revision 9")
    assert bounded(["x" * 5000], 100).startswith("x" * 70)
    assert len(bounded(["x" * 5000], 100)) <= 100


def test_a_change_of_kind_alone_names_the_urls_the_key_went_to_and_goes_to() -> None:
    """openai -> together without api_base sends the key to another host: said so."""
    before = RouteTable(providers={"p": Provider(kind="openai", secret="k")})
    after = RouteTable(providers={"p": Provider(kind="together", secret="k")})
    assert provider_changes(before, after) == [
        "provider p: kind openai -> together, api_base https://api.openai.com/v1 (default) -> "
        "https://api.together.xyz/v1 (default)"
    ]
    added = RouteTable(providers={"q": Provider(kind="groq", secret="k")})
    (said,) = provider_changes(RouteTable(), added)
    assert "api_base https://api.groq.com/openai/v1 (default)" in said
    # Same URL, another kind (another wire format): the URL is still said.
    moved = RouteTable(providers={"p": msgspec.structs.replace(OPENAI, kind="vllm")})
    (said,) = provider_changes(RouteTable(providers={"p": OPENAI}), moved)
    assert said == (
        "provider p: kind openai-compatible -> vllm, "
        "api_base http://llm.internal/v1 -> http://llm.internal/v1"
    )


def test_a_change_hidden_from_the_shown_url_is_said_without_showing_it() -> None:
    before = RouteTable(providers={"p": OPENAI})
    hidden = msgspec.structs.replace(OPENAI, api_base="http://user:pw@llm.internal/v1?k=sk-2")
    (said,) = provider_changes(before, RouteTable(providers={"p": hidden}))
    assert said == (
        "provider p: api_base http://llm.internal/v1 -> http://llm.internal/v1 "
        "(credentials or query changed)"
    )
    assert "pw" not in said
    assert "sk-2" not in said
    # Written out where the kind's default was: the same URL, said as such.
    default = RouteTable(providers={"p": Provider(kind="openai")})
    spelled = RouteTable(providers={"p": Provider(kind="openai", api_base=DEFAULT_OPENAI)})
    assert provider_changes(default, spelled) == [
        f"provider p: api_base {DEFAULT_OPENAI} (default) -> {DEFAULT_OPENAI}"
    ]
