"""Numbers JSON cannot carry never reach a stored record, as pure logic: key settings, the admin
API's key body, the command line's key options, the route table's types and weights, and the
admin's key index and the mending of a key record that does not decode."""

from __future__ import annotations

import argparse
from typing import Any

import msgspec
import pytest

from switchyard.admin.bodies import KeyFields, decode
from switchyard.admin.key_damage import DamagedRecord, mended, read_record
from switchyard.admin.key_fields import validated as _validated
from switchyard.admin.key_index import KeyIndex
from switchyard.admin.key_options import add_key_options
from switchyard.admin.key_rules import number_problem
from switchyard.errors import InputError, InvalidRequest
from switchyard.schemas.keys import (
    KEY_DECODER,
    KEY_ENCODER,
    MAX_BUDGET_USD,
    ClientKey,
    record_name,
    unreadable_key_id,
)
from switchyard.schemas.route_check import edit_problems
from switchyard.schemas.routing import (
    MAX_CONCURRENCY,
    MAX_WEIGHT,
    Deployment,
    Provider,
    Route,
    RouteTable,
    route_table_findings,
)
from switchyard.schemas.timeouts import Timeouts

pytestmark = pytest.mark.unit

ENDLESS = [float("inf"), float("-inf"), float("nan"), float("1e309")]
BUDGET_RULE = "budget must be a finite number of dollars, 0 or more"


@pytest.mark.parametrize("value", ENDLESS)
def test_a_key_setting_json_cannot_carry_is_refused_naming_the_field(value: float) -> None:
    for field in ("budget_usd", "expires_at", "weight"):
        with pytest.raises(InputError) as refused:
            _validated({field: value})
        assert refused.value.field == field
        assert "finite number" in refused.value.problem
    with pytest.raises(InputError, match=BUDGET_RULE):
        _validated({"budget_usd": value})


def test_key_numbers_within_their_real_bounds() -> None:
    assert _validated({"budget_usd": MAX_BUDGET_USD, "expires_at": 253402300799})
    assert number_problem("budget_usd", MAX_BUDGET_USD * 2) == (
        f"{BUDGET_RULE}, and at most 1,000,000,000"
    )
    assert number_problem("expires_at", 1e20) is not None  # no calendar date to show
    assert number_problem("expires_at", -1) is not None
    assert number_problem("rpm", 1.5) is not None
    assert number_problem("rpm", True) is not None
    assert number_problem("weight", 0) is not None
    assert number_problem("name", float("inf")) is None  # not a number setting


@pytest.mark.parametrize("value", ENDLESS)
def test_the_record_type_refuses_them_too(value: float) -> None:
    base: dict[str, Any] = {"id": "key_0123456789abcdef", "hash": "ab", "name": "n"}
    for field in ("budget_usd", "expires_at", "created_at"):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert({**base, field: value}, ClientKey)


@pytest.mark.parametrize(
    "body", [b'{"budget_usd": 1e309}', b'{"budget_usd": Infinity}', b'{"budget_usd": NaN}']
)
def test_the_api_body_names_the_field_and_its_rule(body: bytes) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode(body, KeyFields, "key")
    assert refused.value.param == "budget_usd"
    assert refused.value.message.startswith(BUDGET_RULE)
    assert "Number out of range" not in refused.value.message


def test_any_api_body_names_where_a_number_is_not_finite() -> None:
    body = b'{"table": {"routes": {"a": {"deployments": [{"weight": -Infinity}]}}}}'
    with pytest.raises(InvalidRequest) as refused:
        decode(body, RouteTable, "route table")
    assert refused.value.param == "table.routes.a.deployments[0].weight"
    assert "must be a finite number" in refused.value.message


@pytest.mark.parametrize("text", ["inf", "nan", "1e309", "-infinity", "-1"])
def test_the_command_line_refuses_them_before_connecting(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_key_options(parser)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args([f"--budget={text}"])
    assert exited.value.code == 2
    assert f"argument --budget: B{BUDGET_RULE[1:]}" in capsys.readouterr().err
    assert parser.parse_args(["--budget", "12.5"]).budget == 12.5


@pytest.mark.parametrize("value", ENDLESS)
def test_route_table_numbers_are_finite(value: float) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"provider": "p", "model": "m", "weight": value}, Deployment)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"request_s": value}, Timeouts)


def _table(**dep: Any) -> RouteTable:
    return RouteTable(
        providers={"p": Provider(kind="openai")},
        routes={"a": Route(deployments=(Deployment(provider="p", model="m", **dep),))},
    )


def test_a_weight_past_its_bound_is_refused_in_an_edit_and_kept_when_stored() -> None:
    table = _table(weight=MAX_WEIGHT * 10)
    found = route_table_findings(table)
    assert [p.field for p in found.problems] == ["routes.a.deployments[0].weight"]
    assert route_table_findings(table, stored=True).problems == []  # it still loads
    assert route_table_findings(_table(weight=MAX_WEIGHT)).problems == []


def test_a_concurrency_past_its_bound_is_refused_in_an_edit_and_kept_when_stored() -> None:
    """10,000,000,000 was accepted and silently meant no limit at all."""
    huge = 10_000_000_000
    table = msgspec.structs.replace(
        _table(concurrency=huge), providers={"p": Provider(kind="openai", concurrency=huge)}
    )
    found = route_table_findings(table)
    assert [p.field for p in found.problems] == [
        "providers.p.concurrency",
        "routes.a.deployments[0].concurrency",
    ]
    assert "10,000,000,000 is above the largest, 100,000" in found.problems[0].problem
    assert route_table_findings(table, stored=True).problems == []  # it still loads
    fine = msgspec.structs.replace(
        _table(concurrency=MAX_CONCURRENCY),
        providers={"p": Provider(kind="openai", concurrency=MAX_CONCURRENCY)},
    )
    assert route_table_findings(fine).problems == []


def test_a_table_built_in_memory_is_checked_as_the_control_service_decodes_it() -> None:
    """An import builds structs nobody decoded: a name or an infinity passes the rules and
    was refused only once secrets had been stored."""
    bad_name = msgspec.structs.replace(_table(), routes={"bad name!": _table().routes["a"]})
    assert [p.field for p in edit_problems(bad_name, RouteTable())] == ["routes.bad name!"]
    endless = edit_problems(_table(weight=float("inf")), RouteTable())
    assert [p.problem for p in endless] == ["not a finite number"]
    assert edit_problems(_table(), RouteTable()) == []


def _key(name: str = "app") -> ClientKey:
    return ClientKey(id="key_00000000000000aa", hash="ab" * 32, name=name, team="t", budget_usd=5.0)


def test_an_unreadable_record_is_mended_from_what_still_reads() -> None:
    doc = msgspec.to_builtins(_key())
    doc["budget_usd"] = None  # what msgspec wrote for an infinite budget
    raw = msgspec.json.encode(doc)
    read = read_record(record_name("ab" * 32), raw, 7)
    assert isinstance(read, DamagedRecord)
    assert (read.key_id, read.revision) == ("key_00000000000000aa", 7)
    record, defaulted = mended(read)
    assert (record.id, record.hash, record.name, record.team) == (
        "key_00000000000000aa",
        "ab" * 32,
        "app",
        "t",
    )
    assert record.disabled
    assert "budget_usd" in defaulted
    garbage = read_record(record_name("cd" * 32), b"\xff not json", 3, "key_00000000000000bb")
    assert isinstance(garbage, DamagedRecord)
    assert unreadable_key_id(b"\xff not json") == ""
    assert mended(garbage)[0].id == "key_00000000000000bb"


def test_the_key_index_lists_the_rest_and_still_maps_an_unreadable_key() -> None:
    """A record that stopped decoding used to leave the index half changed: the list page
    then failed with a KeyError, and the key could not be found to revoke it."""
    index = KeyIndex(None)  # type: ignore[arg-type]  # the follower is never started
    good, other = _key("good"), msgspec.structs.replace(_key("other"), id="key_00000000000000cc")
    index._on_entry("k.good", KEY_ENCODER.encode(good), 1)
    index._on_entry("k.other", KEY_ENCODER.encode(other), 2)
    index._on_entry("k.other", b"\xff not json", 3)
    assert [k.id for k in index.search().keys] == [good.id]
    assert [k.id for k in index.search(state="revoked").keys] == []
    assert index.damaged() == [(other.id, "k.other")]
    assert index.record_name(other.id) == "k.other"
    assert index.get(other.id) is None
    index._on_entry("k.other", KEY_ENCODER.encode(other), 4)  # mended
    assert index.damaged() == []
    assert sorted(k.id for k in index.search().keys) == sorted([good.id, other.id])
    assert KEY_DECODER.decode(KEY_ENCODER.encode(other)) == other
