"""The audit words of client key changes and secret deletes: what was set, old -> new,
bounded, never a key's hash or last four characters."""

from __future__ import annotations

import msgspec

from switchyard.admin.audit_words import MAX_CHARS, created_words, update_words
from switchyard.runtime.provider_changes import secret_delete_words
from switchyard.schemas.keys import ClientKey
from switchyard.schemas.routing import SecretUsers

KEY = ClientKey(id="key_1", hash="h" * 64, name="k2", hint="wxyz")


def test_a_created_key_names_its_settings_not_at_their_default() -> None:
    key = msgspec.structs.replace(
        KEY, models=("gpt-*",), budget_usd=10.0, owner="ann", team="ml", expires_at=86400.0
    )
    assert created_words(key) == (
        "name 'k2', models gpt-*, owner 'ann', team 'ml', budget_usd 10, "
        "expires_at 1970-01-02T00:00:00Z"
    )
    assert created_words(KEY) == "name 'k2', models *"


def test_an_update_says_each_field_old_to_new_and_enabled_or_disabled() -> None:
    before = msgspec.structs.replace(KEY, disabled=True, rpm=0, budget_usd=5.0)
    after = msgspec.structs.replace(KEY, disabled=False, rpm=60, budget_usd=5.0, team="x")
    fields = {"disabled": False, "rpm": 60, "budget_usd": 5.0, "team": "x"}
    assert update_words(before, after, fields) == (
        "budget_usd 5 (unchanged), enabled, rpm 0 -> 60, team '' -> 'x'"
    )
    assert update_words(after, before, {"disabled": True}) == "disabled"
    assert update_words(before, before, {"disabled": True}) == "disabled (already)"
    assert update_words(None, after, {"rpm": 60}) == "rpm 60"


def test_the_words_are_bounded_and_never_carry_the_hash_or_hint() -> None:
    many = msgspec.structs.replace(KEY, models=tuple(f"model-{i:04d}-*" for i in range(500)))
    for said in (created_words(many), update_words(KEY, many, {"models": many.models})):
        assert len(said) <= MAX_CHARS
        assert "h" * 16 not in said
        assert "wxyz" not in said
    long_name = msgspec.structs.replace(KEY, name="n" * 500)
    assert len(created_words(long_name)) < 200


def test_a_forced_secret_delete_says_so_and_what_it_left_without_a_key() -> None:
    users = SecretUsers(["p1", "p2"], ["a", "b", "c"], ["a"], {"b": ["c"]})
    assert secret_delete_words(users, "forced (?force=true)") == (
        "forced (?force=true); it was the key of providers p1, p2; routes left with nothing "
        "to answer: a; routes only their fallbacks answer: b"
    )
    unused = SecretUsers([], [], [], {})
    assert secret_delete_words(unused) == ""
    assert secret_delete_words(unused, "forced (?force=true)") == (
        "forced (?force=true); no provider used it"
    )
    assert "could not be read" in secret_delete_words(None, "forced (--force)")
