"""The audit words of a route table write: which providers' kind, api_base and secret changed,
old -> new, by name and URL (never a key, never a URL's user info or query), bounded."""

from __future__ import annotations

import msgspec

from switchyard.runtime.provider_changes import MAX_CHARS, bounded, provider_changes, table_words
from switchyard.schemas.routing import Provider, RouteTable

OPENAI = Provider(kind="openai-compatible", api_base="http://llm.internal/v1", secret="prod-key")


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
