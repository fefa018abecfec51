"""Query parameters of the admin API, as a script uses them: unknown ones are refused, and
``owner``/``team`` pick exactly one owner's or team's keys.

A "revoke the departed user's keys" script calling ``GET /admin/v1/keys?owner=alice@x`` got
every key (the parameter was ignored), and ``?q=alice@x`` also matched ``malice@x`` and a key
whose team is ``alice@x``: revoking what came back would have revoked other people's keys.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def _listed(stack: Stack, query: str, expected: set[str]) -> None:
    """``query`` lists exactly ``expected``, read again until it does (the list is the
    gateway's index, a moment behind each write) for at most 10 s."""
    keys = await stack.listed_keys(
        f"{query}&limit=500", lambda ks: {k["id"] for k in ks} == expected
    )
    assert {k["id"] for k in keys} == expected, query


async def test_owner_and_team_filters_match_the_whole_value(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:8]
    alice = f"alice-{tag}@x"
    _, own = await stack.new_key("laptop", owner=alice, team=f"red-{tag}")
    _, second = await stack.new_key("ci", owner=alice.upper())  # letter case aside: hers too
    _, other = await stack.new_key("laptop", owner=f"m{alice}", team=f"red-{tag}")
    _, team_named = await stack.new_key("svc", owner=f"bob-{tag}@x", team=alice)

    await _listed(stack, f"owner={alice}", {own.id, second.id})
    await _listed(stack, f"team={alice}", {team_named.id})
    await _listed(stack, f"team=red-{tag}", {own.id, other.id})
    await _listed(stack, f"owner={alice}&team=red-{tag}", {own.id})
    await _listed(stack, f"owner={alice}&q=ci", {second.id})
    # q stays a search: a substring of id, name, owner or team.
    await _listed(stack, f"q={alice}", {own.id, second.id, other.id, team_named.id})
    revoked = await stack.admin("POST", f"/keys/{second.id}/revoke")
    assert revoked.status_code == 200, revoked.text
    await _listed(stack, f"owner={alice}&state=revoked", {second.id})
    await _listed(stack, f"owner={alice}&state=active", {own.id})
    await _listed(stack, f"owner=nobody-{tag}@x", set())


async def test_the_team_filter_matches_the_team_as_spend_counts_it(stack: Stack) -> None:
    """Spend (and fair shares, and Batch files) count ``Red`` and ``red`` as two teams; the
    filter was case-blind, so the keys it listed for a team did not add up to its spend row."""
    tag = uuid.uuid4().hex[:8]
    _, lower = await stack.new_key("a", team=f"red-{tag}")
    _, upper = await stack.new_key("b", team=f"RED-{tag}")
    await _listed(stack, f"team=red-{tag}", {lower.id})
    await _listed(stack, f"team=RED-{tag}", {upper.id})
    await _listed(stack, f"team=Red-{tag}", set())
    await _listed(stack, f"q=red-{tag}", {lower.id, upper.id})  # q stays a search


async def test_an_empty_exact_filter_is_refused_not_read_as_every_key(stack: Stack) -> None:
    """``owner=$DEPARTED`` with the variable unset must not list (and so revoke) everyone."""
    for param in ("owner", "team", "name"):
        refused = await stack.admin("GET", f"/keys?{param}=")
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == param


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/keys?ownr=alice@x", "ownr"),
        ("/keys?q=a&State=revoked", "State"),
        ("/spend/ranking?by=key&team=zzz", "team"),
        ("/spend?days=1&team=zzz", "team"),
        ("/audit?actor=me", "actor"),
        ("/deployments?limit=5", "limit"),
        ("/deployments/history?seconds=60&deployment=x", "deployment"),
        ("/overview?verbose=1", "verbose"),
        ("/routes?alias=demo", "alias"),
        ("/providers?name=x", "name"),
        ("/secrets?q=x", "q"),
        ("/batches?status=failed", "status"),
    ],
)
async def test_an_unknown_query_parameter_is_a_400_naming_it(
    stack: Stack, path: str, param: str
) -> None:
    refused = await stack.admin("GET", path)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "unknown_parameter",
        param,
    )
    assert f"`{param}`" in error["message"]


async def test_a_write_with_an_unknown_parameter_changes_nothing(stack: Stack) -> None:
    """``DELETE /keys/{id}?dry_run=true`` deleted the key."""
    _, record = await stack.new_key(f"kept-{uuid.uuid4().hex[:8]}")
    await stack.listed_keys(f"q={record.id}", bool)  # the gateway's index has it
    refused = await stack.admin("DELETE", f"/keys/{record.id}?dry_run=true")
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "dry_run"
    assert (await stack.admin("GET", f"/keys/{record.id}")).status_code == 200


async def test_a_parameter_given_twice_is_refused(stack: Stack) -> None:
    refused = await stack.admin("GET", "/keys?owner=a@x&owner=b@x")
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "owner"


async def test_every_documented_parameter_is_still_taken(stack: Stack) -> None:
    _, known = await stack.new_key("documented")
    await stack.listed_keys(f"q={known.id}", bool)  # the gateway's index has it
    for path in (
        "/keys?q=&state=active&owner=a@x&team=t&offset=0&limit=5",
        f"/keys?after={known.id}&team=t&limit=5",
        "/keys?name=documented&state=active",
        "/spend?days=1&per_day=5",
        "/spend/ranking?by=team&days=1&offset=0&limit=5",
        "/spend/ranking?by=model&key=key_0123456789abcdef&days=1",
        "/audit?q=x&kind=key&via=api&offset=0&limit=5",
        "/deployments/history?seconds=60",
    ):
        answered = await stack.admin("GET", path)
        assert answered.status_code == 200, f"{path}: {answered.text}"


async def test_more_daily_rows_than_kept_are_refused_not_cut(stack: Stack) -> None:
    """``per_day`` above 1,000 was answered with the top 1,000 a day and no word of it."""
    refused = await stack.admin("GET", "/spend?days=1&per_day=1001")
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "per_day"
    assert "at most 1000 (asked for 1001)" in error["message"]
    assert (await stack.admin("GET", "/spend?days=1&per_day=1000")).status_code == 200


async def _pages(stack: Stack, query: str, between: Any) -> list[str]:
    """The ids of every page of ``GET /keys?<query>`` read with the ``after`` cursor, two a
    page, calling ``between(ids of the page)`` after each page (at most 20 pages)."""
    seen: list[str] = []
    after = ""
    for _ in range(20):
        listed = await stack.admin("GET", f"/keys?{query}&limit=2{after}")
        assert listed.status_code == 200, listed.text
        doc = listed.json()
        ids = [k["id"] for k in doc["keys"]]
        seen += ids
        assert doc["last_id"] == (ids[-1] if ids else None)
        await between(ids)
        if not doc["has_more"]:
            return seen
        after = f"&after={doc['last_id']}"
    raise AssertionError(f"paging did not end: {seen}")


async def test_paging_with_after_neither_repeats_nor_skips_while_keys_come_and_go(
    stack: Stack,
) -> None:
    """With ``offset``, a key created between two pages moved every older key one place on,
    so the next page repeated one, and a script creating a key per page read never ended;
    deleting what was read moved them back, past keys never listed."""
    team = f"pages-{uuid.uuid4().hex[:8]}"
    made = [(await stack.new_key(f"k{i}", team=team))[1].id for i in range(5)]
    await _listed(stack, f"team={team}", set(made))
    created: list[str] = []

    async def create(ids: list[str]) -> None:
        created.append((await stack.new_key("late", team=team))[1].id)
        await _listed(stack, f"team={team}", {*made, *created})

    assert await _pages(stack, f"team={team}", create) == made[::-1]

    async def delete(ids: list[str]) -> None:
        for key_id in ids:
            assert (await stack.admin("DELETE", f"/keys/{key_id}")).status_code == 200
        gone = set(ids)
        await stack.listed_keys(
            f"team={team}&limit=500", lambda ks: not gone & {k["id"] for k in ks}
        )

    everything = [*made, *created][::-1]
    assert await _pages(stack, f"team={team}", delete) == everything
    assert (await stack.admin("GET", f"/keys?team={team}")).json()["total"] == 0


async def test_an_after_that_names_no_key_is_a_400_naming_it(stack: Stack) -> None:
    for value in ("key_0123456789abcdef", "nope"):
        refused = await stack.admin("GET", f"/keys?after={value}")
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "after"


async def test_the_name_filter_finds_a_key_by_its_whole_name(stack: Stack) -> None:
    """A script that must not make a second key on a re-run looks its key up by name first;
    ``q`` is a search, so ``q=ci-bot`` also listed ``ci-bot-old`` and keys owned by
    ``ci-bot@x``, and the script could not tell which one it had made."""
    tag = uuid.uuid4().hex[:8]
    bot = f"ci-bot-{tag}"
    _, one = await stack.new_key(bot, team=f"t-{tag}")
    _, old = await stack.new_key(f"{bot}-old")
    _, owned = await stack.new_key("laptop", owner=f"{bot}@x", team=bot)
    await _listed(stack, f"q={bot}", {one.id, old.id, owned.id})
    await _listed(stack, f"name={bot}", {one.id})
    await _listed(stack, f"name={bot}&team=t-{tag}&state=active", {one.id})
    await _listed(stack, f"name={bot.upper()}", set())  # spelled as stored, as `keys show`
    await _listed(stack, f"name={bot}-o", set())
    revoked = await stack.admin("POST", f"/keys/{one.id}/revoke")
    assert revoked.status_code == 200, revoked.text
    await _listed(stack, f"name={bot}&state=revoked", {one.id})
    await _listed(stack, f"name={bot}&state=active", set())


@pytest.mark.parametrize("path", ["/keys", "/audit", "/spend/ranking?by=team&"])
async def test_a_limit_past_the_largest_page_is_a_400_not_a_shorter_page(
    stack: Stack, path: str
) -> None:
    """``limit=1000`` answered 500 entries and no word of it: a script that stopped at a page
    shorter than it asked for stopped there, short of the rest."""
    joined = path if path.endswith("&") else f"{path}?"
    refused = await stack.admin("GET", f"{joined}limit=501")
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "limit")
    assert "at most 500" in error["message"]
    taken = await stack.admin("GET", f"{joined}limit=500")
    assert taken.status_code == 200, taken.text
