"""One pass over an edited route table says both what refuses the edit and what the newest rules
say of the entries it left as stored (which the control service logs, and does not refuse)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from switchyard.schemas.routing import (
    RouteTable,
    decode_route_table,
    route_table_findings,
    route_table_problems,
)

pytestmark = pytest.mark.unit

OLD_BASE = {"kind": "openai-compatible", "api_base": "llm.internal:8000/v1"}
GOOD = {"kind": "openai-compatible", "api_base": "http://llm.internal:8000/v1"}


def _route(provider: str, model: str = "m", price: float | None = None) -> dict[str, Any]:
    dep: dict[str, Any] = {"provider": provider, "model": model}
    if price is not None:
        dep["price"] = {"input_per_token": price, "output_per_token": price}
    return {"deployments": [dep]}


BEFORE = {
    "providers": {"old": OLD_BASE, "ok": GOOD},
    "routes": {"x": _route("ok", price=1e-6), "y": _route("ok", price=2e-6)},
}
STORED = decode_route_table(msgspec.json.encode(BEFORE))


def _fields(problems: list[Any]) -> list[str]:
    return [p.field for p in problems]


def test_an_edit_elsewhere_is_valid_and_learns_what_it_kept() -> None:
    edited = msgspec.convert(
        {**BEFORE, "routes": {**BEFORE["routes"], "z": _route("ok", "n")}}, RouteTable
    )
    found = route_table_findings(edited, previous=STORED)
    assert found.problems == []
    assert _fields(found.kept) == ["providers.old.api_base", "routes.y.deployments[0].price"]
    # The same problems, in the same order, as the newest rules find in the whole table.
    assert found.kept == route_table_problems(edited)


def test_what_an_edit_touches_is_a_problem_and_not_kept() -> None:
    changed = {"kind": "openai-compatible", "api_base": "llm.internal:9000/v1"}
    edited = msgspec.convert(
        {
            "providers": {"old": changed, "ok": GOOD},
            "routes": {**BEFORE["routes"], "y": _route("ok", price=3e-6)},
        },
        RouteTable,
    )
    found = route_table_findings(edited, previous=STORED)
    assert _fields(found.problems) == ["providers.old.api_base", "routes.y.deployments[0].price"]
    assert found.kept == []


def test_without_a_previous_table_nothing_is_kept() -> None:
    table = msgspec.convert(BEFORE, RouteTable)
    found = route_table_findings(table)
    assert _fields(found.problems) == ["providers.old.api_base", "routes.y.deployments[0].price"]
    assert found.kept == []


def test_a_stored_table_keeps_what_predates_the_newest_rules() -> None:
    found = route_table_findings(STORED, stored=True)
    assert found.problems == []
    assert _fields(found.kept) == ["providers.old.api_base", "routes.y.deployments[0].price"]


def test_two_deployments_read_into_one_queue_id_are_refused() -> None:
    """A deployment's queue id is ``provider--model``: provider ``x--y`` with model ``z`` and
    provider ``x`` with model ``y--z`` both gave ``x--y--z``, and an explorer's route to
    provider ``x`` was served by ``x--y`` with its key and price. A stored table with such a
    clash still loads (refusing it would stop serving everything); an edit must end it."""
    table = decode_route_table(
        msgspec.json.encode(
            {
                "providers": {"x--y": GOOD, "x": GOOD},
                "routes": {"a": _route("x--y", model="z"), "b": _route("x", model="y--z")},
            }
        )
    )
    found = route_table_findings(table)
    assert _fields(found.problems) == ["routes.b.deployments[0]"]
    assert "x--y--z" in found.problems[0].problem
    assert "x--y/z" in found.problems[0].problem
    stored = route_table_findings(table, stored=True)
    assert stored.problems == []
    assert _fields(stored.kept) == ["routes.b.deployments[0]"]
    # The same provider and model in two routes is one deployment, as before.
    shared = {"providers": {"x": GOOD}, "routes": {"a": _route("x"), "b": _route("x")}}
    assert route_table_problems(decode_route_table(msgspec.json.encode(shared))) == []


def test_an_edit_elsewhere_is_not_refused_for_a_stored_clash() -> None:
    """The rename the clash's hint asks for starts with adding a provider: that edit must not
    be refused for the clash it leaves as it was; the edit that moves a route off it passes."""
    clash = {
        "providers": {"x--y": GOOD, "x": GOOD},
        "routes": {"a": _route("x--y", model="z"), "b": _route("x", model="y--z")},
    }
    stored = decode_route_table(msgspec.json.encode(clash))
    added = {**clash, "providers": {**clash["providers"], "xy": GOOD}}
    found = route_table_findings(decode_route_table(msgspec.json.encode(added)), previous=stored)
    assert found.problems == []
    assert _fields(found.kept) == ["routes.b.deployments[0]"]
    moved = {**added, "routes": {"a": _route("xy", model="z"), "b": clash["routes"]["b"]}}
    fixed = route_table_findings(decode_route_table(msgspec.json.encode(moved)), previous=stored)
    assert fixed.problems == []
    assert fixed.kept == []
