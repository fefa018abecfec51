"""Spend reports hold what was spent: a billing explorer reconciled them by hand.

The daily aggregates are written here as accounting writes them (day counters and each day's
rankings, in the session stack's real Valkey), under names no other test uses, and removed
afterwards; the reports are read through the admin API and the web app.
"""

from __future__ import annotations

import csv
import io
import secrets
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from switchyard.limits import keys as rk
from switchyard.limits import periods
from tests.stacks import Stack

pytestmark = pytest.mark.integration


class Seeded:
    """Spend counters written for one test, removed at its end."""

    def __init__(self, counters: Redis) -> None:
        self.counters = counters
        self.names: list[str] = []
        self.ranked: list[tuple[str, str]] = []

    async def key_day(self, day: str, key_id: str, nano: int, requests: int = 1) -> None:
        """One key's day as accounting leaves it: its counter and its place in the ranking."""
        await self.counters.hset(
            rk.day_key(day, key_id),
            mapping={"cost_nano": nano, "requests": requests, "prompt_tokens": 3},
        )
        await self.counters.zincrby(rk.day_rank(day, "key"), nano, key_id)
        self.names.append(rk.day_key(day, key_id))
        self.ranked.append((rk.day_rank(day, "key"), key_id))

    async def key_model_day(self, day: str, key_id: str, alias: str, nano: int) -> None:
        """One key's spend on one model on a day, and the model in that day's ranking."""
        await self.counters.hset(
            rk.day_key_model(day, key_id, alias),
            mapping={"cost_nano": nano, "requests": 2, "prompt_tokens": 5, "completion_tokens": 7},
        )
        await self.counters.zincrby(rk.day_rank(day, "model"), nano, alias)
        self.names.append(rk.day_key_model(day, key_id, alias))
        self.ranked.append((rk.day_rank(day, "model"), alias))

    async def deployment_day(
        self, day: str, deployment: str, provider: str, model: str, nano: int
    ) -> None:
        """One deployment's day as accounting leaves it: its counters, the provider and model
        its usage events named, and its place in the day's ranking of deployments."""
        await self.counters.hset(
            rk.day_deployment(day, deployment),
            mapping={
                "cost_nano": nano,
                "requests": 3,
                "prompt_tokens": 11,
                "completion_tokens": 13,
                "provider": provider,
                "model": model,
            },
        )
        await self.counters.zincrby(rk.day_rank(day, "deployment"), nano, deployment)
        self.names.append(rk.day_deployment(day, deployment))
        self.ranked.append((rk.day_rank(day, "deployment"), deployment))

    async def clean(self) -> None:
        if self.names:
            await self.counters.delete(*self.names)
        for rank, member in self.ranked:
            await self.counters.zrem(rank, member)


@pytest_asyncio.fixture(loop_scope="session")
async def seeded(counters: Redis) -> AsyncIterator[Seeded]:
    seeds = Seeded(counters)
    try:
        yield seeds
    finally:
        await seeds.clean()


def _key_id() -> str:
    return f"key_{secrets.token_hex(8)}"


async def test_a_period_longer_than_what_is_kept_is_refused_naming_the_limit(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    for path in ("/spend?days=365", "/spend/ranking?by=key&days=91"):
        refused = await stack.admin("GET", path)
        assert refused.status_code == 400, (path, refused.text)
        error = refused.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == "days"
        assert "at most 90" in error["message"], error
    for path in ("/spend?days=90", "/spend/ranking?by=key&days=90"):
        assert (await stack.admin("GET", path)).status_code == 200, path
    web, _ = signed_in
    page = await web.get("/ui/spend?by=model&days=365")
    assert page.status_code == 200
    assert "kept 90 days" in page.text
    assert "not the 365 asked for" in page.text
    exported = await web.get("/ui/spend.csv?by=model&days=365")
    assert exported.status_code == 400
    assert "kept 90 days" in exported.text
    assert "kept 90 days" not in (await web.get("/ui/spend?by=model&days=90")).text


async def test_the_csv_export_holds_every_key_with_spend_in_the_period(
    seeded: Seeded, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """130 keys, each with spend on one day: a 90-day export kept the top 111 (10,000 // 90)."""
    today = periods.day(time.time())
    earlier = periods.day(time.time() - 40 * 86400)
    spent = {_key_id(): 1000 + n for n in range(130)}
    for n, (key_id, nano) in enumerate(spent.items()):
        await seeded.key_day(today if n % 2 else earlier, key_id, nano, requests=n + 1)
    web, _ = signed_in
    exported = await web.get("/ui/spend.csv?by=key&days=90")
    assert exported.status_code == 200, exported.text
    rows = [r for r in csv.DictReader(io.StringIO(exported.text)) if r["key"] in spent]
    assert len(rows) == len(spent)
    assert {r["key"]: round(float(r["cost_usd"]) * rk.NANO) for r in rows} == spent
    assert [r["key"] for r in rows] == sorted(spent, key=lambda k: -spent[k])  # costliest first
    days = {r["key"]: r["day"] for r in rows}
    assert {days[k] for k in spent} == {today, earlier}


async def test_a_keys_spend_per_model_is_read_back(
    stack: Stack, seeded: Seeded, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """Accounting writes per key-and-model day counters; nothing read them."""
    _, key = await stack.new_key("spend-per-model")
    today, earlier = periods.day(time.time()), periods.day(time.time() - 3 * 86400)
    cheap, dear = f"cheap-{secrets.token_hex(3)}", f"dear-{secrets.token_hex(3)}"
    await seeded.key_model_day(today, key.id, cheap, 1_500)
    await seeded.key_model_day(earlier, key.id, cheap, 2_000)
    await seeded.key_model_day(today, key.id, dear, 9_000_000)
    await seeded.key_model_day(today, _key_id(), cheap, 7)  # another key's: not this one's

    answer = await stack.admin("GET", f"/spend/ranking?by=model&key={key.id}&days=7")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["by"], body["key"], body["total"]) == ("model", key.id, 2)
    rows = {r["name"]: r for r in body["rows"]}
    assert [r["name"] for r in body["rows"]] == [dear, cheap]
    assert rows[cheap]["cost_usd"] == pytest.approx(3_500 / rk.NANO)
    assert rows[cheap]["requests"] == 4
    assert rows[cheap]["by_day"][earlier] == pytest.approx(2_000 / rk.NANO)
    assert rows[dear]["completion_tokens"] == 7
    only_today = await stack.admin("GET", f"/spend/ranking?by=model&key={key.id}&days=1")
    assert {r["name"]: r["requests"] for r in only_today.json()["rows"]} == {dear: 2, cheap: 2}
    paged = await stack.admin("GET", f"/spend/ranking?by=model&key={key.id}&offset=1&limit=1")
    assert [r["name"] for r in paged.json()["rows"]] == [cheap]
    for query, param in ((f"by=key&key={key.id}", "key"), ("by=model&key=nope", "key")):
        refused = await stack.admin("GET", f"/spend/ranking?{query}")
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == param

    await stack.listed_keys(f"q={key.id}", lambda ks: len(ks) == 1)  # the web app's index
    web, _ = signed_in
    exported = await web.get(f"/ui/spend.csv?by=model&key={key.id}&days=7")
    assert exported.status_code == 200, exported.text
    lines = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["model"], r["day"], r["cost_usd"]) for r in lines] == [
        (dear, today, "0.009000000"),
        (cheap, earlier, "0.000002000"),
        (cheap, today, "0.000001500"),
    ]
    assert {(r["key"], r["name"]) for r in lines} == {(key.id, "spend-per-model")}
    page = await web.get(f"/ui/keys/{key.id}")
    assert page.status_code == 200
    assert "By model, last 30 days" in page.text
    assert dear in page.text
    assert cheap in page.text


async def test_spend_is_ranked_by_deployment_with_its_provider_and_model(
    stack: Stack, seeded: Seeded, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """A route's primary and fallback deployments showed one number (its alias's): the
    ranking, the Spend page and its CSV now say which provider account and model cost what,
    a deployment no longer in the route table included (its counters name it)."""
    today, earlier = periods.day(time.time()), periods.day(time.time() - 3 * 86400)
    tag = secrets.token_hex(3)
    primary, backup = f"acct-a-{tag}--gpt", f"acct-b-{tag}--gpt"
    await seeded.deployment_day(today, primary, f"acct-a-{tag}", "gpt", 4_000_000_000)
    await seeded.deployment_day(earlier, primary, f"acct-a-{tag}", "gpt", 1_000_000_000)
    await seeded.deployment_day(today, backup, f"acct-b-{tag}", "gpt", 4_500_000_000)

    answer = await stack.admin("GET", "/spend/ranking?by=deployment&days=7")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["by"] == "deployment"
    rows = {r["name"]: r for r in body["rows"] if tag in r["name"]}
    assert [r["name"] for r in body["rows"] if tag in r["name"]] == [primary, backup]
    assert (rows[primary]["provider"], rows[primary]["model"]) == (f"acct-a-{tag}", "gpt")
    assert rows[primary]["cost_usd"] == pytest.approx(5.0)
    assert rows[primary]["requests"] == 6
    assert rows[primary]["by_day"][earlier] == pytest.approx(1.0)
    assert rows[primary]["days"][today] == {
        "cost_usd": 4.0,
        "prompt_tokens": 11,
        "completion_tokens": 13,
        "requests": 3,
    }
    one_day = await stack.admin("GET", "/spend/ranking?by=deployment&days=1")
    assert [r["name"] for r in one_day.json()["rows"] if tag in r["name"]] == [backup, primary]

    web, _ = signed_in
    page = await web.get("/ui/spend?by=deployment&days=7")
    assert page.status_code == 200
    assert '<option value="deployment" selected>Deployments</option>' in page.text
    assert primary in page.text
    assert f"acct-b-{tag}" in page.text
    exported = await web.get("/ui/spend.csv?by=deployment&days=7")
    assert exported.status_code == 200, exported.text
    assert exported.text.splitlines()[0] == (
        '"deployment","name","provider","model","day","cost_usd","requests","prompt_tokens",'
        '"completion_tokens"'
    )
    lines = [r for r in csv.DictReader(io.StringIO(exported.text)) if tag in r["deployment"]]
    assert [
        (r["deployment"], r["provider"], r["model"], r["day"], r["cost_usd"]) for r in lines
    ] == [
        (primary, f"acct-a-{tag}", "gpt", earlier, "1.000000000"),
        (primary, f"acct-a-{tag}", "gpt", today, "4.000000000"),
        (backup, f"acct-b-{tag}", "gpt", today, "4.500000000"),
    ]
