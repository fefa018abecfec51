"""A key's name, owner and team: trimmed, never an empty name, never a control character,
through the API and the CLI alike.

``keys create ""`` made a nameless key; the API refused ``""`` but took ``"   "`` and
``PATCH {"name": ""}``; keys made from a CRLF file kept ``\\r`` in their name and team (a team
of its own in spend).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def _count(stack: Stack) -> int:
    """How many keys the gateway lists, once its index has caught up with earlier writes
    (two reads 0.3 s apart agree)."""
    last = -1
    while True:
        listed = await stack.admin("GET", "/keys?limit=1")
        assert listed.status_code == 200, listed.text
        count = int(listed.json()["count"])
        if count == last:
            return count
        last = count
        await asyncio.sleep(0.3)


async def test_the_api_trims_the_text_and_refuses_an_empty_name(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:8]
    created = await stack.admin(
        "POST", "/keys", {"name": f"  crlf-{tag}\r\n", "owner": " a@x ", "team": f"ml-{tag}\r"}
    )
    assert created.status_code == 201, created.text
    record = created.json()["record"]
    assert (record["name"], record["owner"], record["team"]) == (f"crlf-{tag}", "a@x", f"ml-{tag}")
    listed = await stack.listed_keys(f"team=ml-{tag}", bool)
    assert [k["id"] for k in listed] == [record["id"]]

    before = await _count(stack)
    for body in ({"name": "   "}, {"name": "\t\r\n"}):
        refused = await stack.admin("POST", "/keys", body)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "name"
    assert await _count(stack) == before
    for change in ({"name": ""}, {"name": "  "}):
        refused = await stack.admin("PATCH", f"/keys/{record['id']}", change)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "name"
    renamed = await stack.admin("PATCH", f"/keys/{record['id']}", {"name": " renamed ", "team": ""})
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["team"]) == ("renamed", "")  # team cleared


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "two\nlines"),
        ("name", "bell\x07"),
        ("owner", "\x1b[31malice@x"),
        ("team", "ml\tops"),
        ("team", "a\u2028b"),
    ],
)
async def test_a_control_character_is_refused_naming_the_field(
    stack: Stack, field: str, value: str
) -> None:
    body = {"name": "ok", field: value}
    refused = await stack.admin("POST", "/keys", body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == field
    assert "control character" in error["message"]


async def test_the_cli_refuses_an_empty_name_and_trims_as_the_api_does(stack: Stack) -> None:
    before = await _count(stack)
    for name in ("", "   "):
        refused = stack.cli("keys", "create", name)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "error: name: a key needs a name" in refused.stderr
        assert "key:" not in refused.stdout
    assert await _count(stack) == before
    tag = uuid.uuid4().hex[:8]
    created = stack.cli("keys", "create", f"cli-{tag}\r", "--team", f"t-{tag}\r", "--json")
    assert created.returncode == 0, created.stderr
    (record,) = await stack.listed_keys(f"q=cli-{tag}", bool)
    assert (record["name"], record["team"]) == (f"cli-{tag}", f"t-{tag}")
    refused = stack.cli("keys", "update", record["id"], "--owner", "a\x1bb")
    assert refused.returncode == 1
    assert "owner holds a control character" in refused.stderr
