"""An edit of the route table is held to the newest rules for what it adds or changes only.

A provider or route stored before a rule existed (an ``api_base`` that is no http(s) URL, two
prices for one deployment) and left as it was must not block edits elsewhere; an edit that
touches it must bring it up to date.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from switchyard.schemas.routing import RouteTable, decode_route_table, route_table_problems

pytestmark = pytest.mark.unit

OLD_BASE = {"kind": "openai-compatible", "api_base": "llm.internal:8000/v1"}
GOOD = {"kind": "openai-compatible", "api_base": "http://llm.internal:8000/v1"}


def _stored(doc: dict[str, Any]) -> RouteTable:
    """A table as the bucket holds it (decoded under the stored rules)."""
    return decode_route_table(msgspec.json.encode(doc))


def _edit(doc: dict[str, Any]) -> RouteTable:
    return msgspec.convert(doc, RouteTable)


def _route(provider: str, model: str = "m", price: float | None = None) -> dict[str, Any]:
    dep: dict[str, Any] = {"provider": provider, "model": model}
    if price is not None:
        dep["price"] = {"input_per_token": price, "output_per_token": price}
    return {"deployments": [dep]}


BEFORE = {"providers": {"old": OLD_BASE, "ok": GOOD}, "routes": {"a": _route("ok")}}


def test_an_old_api_base_blocks_only_edits_of_its_own_provider() -> None:
    current = _stored(BEFORE)
    edited = _edit({**BEFORE, "routes": {"a": _route("ok"), "b": _route("ok", "n")}})
    assert route_table_problems(edited, previous=current) == []
    # Without the stored table to compare with, every rule applies (a config file, say).
    assert [p.field for p in route_table_problems(edited)] == ["providers.old.api_base"]
    changed = {"kind": "openai-compatible", "api_base": "llm.internal:9000/v1"}
    edited = _edit({**BEFORE, "providers": {"old": changed, "ok": GOOD}})
    problems = route_table_problems(edited, previous=current)
    assert [p.field for p in problems] == ["providers.old.api_base"]
    fixed = _edit({**BEFORE, "providers": {"old": GOOD, "ok": GOOD}})
    assert route_table_problems(fixed, previous=current) == []


def test_a_new_provider_meets_every_rule() -> None:
    current = _stored(BEFORE)
    edited = _edit({**BEFORE, "providers": {**BEFORE["providers"], "new": OLD_BASE}})
    assert [p.field for p in route_table_problems(edited, previous=current)] == [
        "providers.new.api_base"
    ]


def test_two_old_prices_block_only_edits_of_their_routes() -> None:
    before = {
        "providers": {"ok": GOOD},
        "routes": {"x": _route("ok", price=1e-6), "y": _route("ok", price=2e-6)},
    }
    current = _stored(before)
    elsewhere = _edit({**before, "routes": {**before["routes"], "z": _route("ok", "other")}})
    assert route_table_problems(elsewhere, previous=current) == []
    repriced = _edit({**before, "routes": {**before["routes"], "y": _route("ok", price=3e-6)}})
    assert [p.field for p in route_table_problems(repriced, previous=current)] == [
        "routes.y.deployments[0].price"
    ]
    third = _edit({**before, "routes": {**before["routes"], "z": _route("ok", price=4e-6)}})
    assert [p.field for p in route_table_problems(third, previous=current)] == [
        "routes.z.deployments[0].price"
    ]


def test_a_name_ending_in_a_line_break_is_refused_for_new_entries_only() -> None:
    """The types' ``$`` takes "openai\\n" (msgspec searches): a whole-table PUT stored it. New
    or changed entries are refused naming the field; a stored one still loads and is kept."""
    doc = {
        "providers": {"ok": GOOD, "nl\n": GOOD, "s": {**GOOD, "secret": "key\n"}},
        "routes": {"a": _route("ok"), "chat\n": _route("nl\n")},
    }
    new = [p.field for p in route_table_problems(_edit(doc), previous=_stored(BEFORE))]
    assert new == ["providers.nl\\n", "providers.s.secret", "routes.chat\\n"]
    stored = _stored(doc)  # loads: the types' pattern is unchanged
    assert route_table_problems(_edit(doc), previous=stored) == []
    changed = {**doc, "routes": {"a": _route("ok"), "chat\n": _route("ok")}}
    assert [p.field for p in route_table_problems(_edit(changed), previous=stored)] == [
        "routes.chat\\n"
    ]
