"""Operator papercuts on the session stack: a Valkey outage in the admin API and `keys show`,
`key_missing` on `/deployments`, cooldowns of unknown deployments, the key `state` filter, and
`secrets rm`/`list` about secrets providers use or lack."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.stacks import Stack
from tests.support import pause_now
from tests.upstream import FakeOpenAI

pytestmark = pytest.mark.integration


@contextmanager
def _valkey_paused(stack: Stack) -> Iterator[None]:
    """Valkey hung (not gone): every read waits out the client's timeout."""
    valkey = stack.process("valkey").proc
    assert valkey is not None
    pause_now(valkey.pid)
    try:
        yield
    finally:
        valkey.send_signal(signal.SIGCONT)


async def test_a_valkey_outage_is_said_not_a_500_and_keys_are_still_shown(stack: Stack) -> None:
    _, record = await stack.new_key("papercut-spend")
    with _valkey_paused(stack):
        listed = await stack.admin("GET", "/keys?limit=2")
        one = await stack.admin("GET", f"/keys/{record.id}")
        daily = await stack.admin("GET", "/spend?days=1")
        ranked = await stack.admin("GET", "/spend/ranking?by=model")
        shown = stack.cli("keys", "show", record.id)
    assert listed.status_code == 200, listed.text
    assert "Valkey/Redis" in listed.json()["spend_unavailable"]
    assert [k["spend"] for k in listed.json()["keys"]] == [None, None]
    assert one.status_code == 200, one.text
    assert (one.json()["id"], one.json()["spend"]) == (record.id, None)
    for resp in (daily, ranked):
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"]["code"] == "spend_unavailable"
        assert "Valkey/Redis did not answer" in resp.json()["error"]["message"]
        assert int(resp.headers["retry-after"]) >= 1
    assert shown.returncode == 1
    assert "Traceback" not in shown.stderr
    # The stack logs at debug level, so redis-py's own debug line about the timeout may come
    # first; the command's answer is its one "error:" line.
    said = [line for line in shown.stderr.splitlines() if line.startswith("error:")]
    assert len(said) == 1, shown.stderr
    assert said[0].startswith("error: spend cannot be read: Valkey/Redis did not answer")
    assert "spend      unavailable" in shown.stdout  # the record itself is in NATS: shown
    after = await stack.admin("GET", f"/keys/{record.id}")
    assert after.status_code == 200
    assert after.json()["spend"]["total_spend_usd"] == 0


async def test_deployments_say_which_have_no_provider_key_as_the_overview_does(
    stack: Stack,
) -> None:
    deployments = (await stack.admin("GET", "/deployments")).json()["deployments"]
    overview = (await stack.admin("GET", "/overview")).json()["deployments"]
    missing = sorted(d["id"] for d in deployments if d["key_missing"])
    assert missing == sorted(d["id"] for d in overview if d["key_missing"])
    assert any("nokey" in d["aliases"] for d in deployments if d["key_missing"])
    assert not any("gpt-4o-mini" in d["aliases"] for d in deployments if d["key_missing"])


async def test_clearing_the_cooldown_of_an_unknown_deployment_is_a_404(stack: Stack) -> None:
    gone = await stack.admin("DELETE", "/deployments/no-such-deployment/cooldown")
    assert gone.status_code == 404, gone.text
    assert gone.json()["error"]["param"] == "deployment"
    audit = (await stack.admin("GET", "/audit?q=no-such-deployment")).json()
    assert audit["entries"] == []  # not recorded as done
    known = (await stack.admin("GET", "/deployments")).json()["deployments"][0]["id"]
    cleared = await stack.admin("DELETE", f"/deployments/{known}/cooldown")
    assert cleared.status_code == 200, cleared.text


async def test_an_unknown_key_state_is_a_400_naming_the_valid_ones(stack: Stack) -> None:
    bogus = await stack.admin("GET", "/keys?state=bogus")
    assert bogus.status_code == 400, bogus.text
    error = bogus.json()["error"]
    assert error["param"] == "state"
    assert "active, revoked, expired" in error["message"]
    assert (await stack.admin("GET", "/keys?state=revoked")).status_code == 200


async def test_the_api_refuses_a_key_that_could_never_be_used_as_the_cli_does(
    stack: Stack,
) -> None:
    """``models: []`` made a key allowed nothing and a past ``expires_at`` one expired when
    written: the API took both (201, and 200 on PATCH) where the CLI refuses them."""
    past = time.time() - 60
    never: list[dict[str, Any]] = [{"models": []}, {"expires_at": past}, {"expires_at": 1}]
    for fields in never:
        refused = await stack.admin("POST", "/keys", {"name": "never", **fields})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == next(iter(fields))
    created = await stack.admin("POST", "/keys", {"name": "later", "expires_at": past + 7200})
    assert created.status_code == 201, created.text
    key_id = created.json()["record"]["id"]
    for fields in never[:2]:
        refused = await stack.admin("PATCH", f"/keys/{key_id}", fields)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == next(iter(fields))
    record = (await stack.admin("GET", f"/keys/{key_id}")).json()
    assert record["models"] == ["*"]
    assert record["expires_at"] == past + 7200


async def test_a_key_patch_with_null_is_refused_naming_the_field_not_read_as_keep(
    stack: Stack,
) -> None:
    """``{"team": null}`` (JSON Merge Patch's "remove") answered 200 with the key unchanged:
    null read as "leave as is", so a script clearing a team or an expiry believed it had."""
    created = await stack.admin(
        "POST", "/keys", {"name": "nulls", "team": "nulls", "rpm": 5, "expires_at": 4e9}
    )
    assert created.status_code == 201, created.text
    key_id = created.json()["record"]["id"]
    for field, said in (("team", '""'), ("expires_at", "0 (never"), ("rpm", "0 (no limit)")):
        refused = await stack.admin("PATCH", f"/keys/{key_id}", {"owner": "x@y", field: None})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", field)
        assert f"`{field}` is null" in error["message"]
        assert said in error["message"]
    kept = (await stack.admin("GET", f"/keys/{key_id}")).json()
    assert (kept["owner"], kept["team"], kept["rpm"], kept["expires_at"]) == ("", "nulls", 5, 4e9)
    cleared = await stack.admin("PATCH", f"/keys/{key_id}", {"team": "", "expires_at": 0})
    assert cleared.status_code == 200, cleared.text
    assert (cleared.json()["team"], cleared.json()["expires_at"]) == ("", 0)


async def test_a_route_or_provider_that_does_not_decode_names_the_field(stack: Stack) -> None:
    """The decoder's path was only in the message ("... - at `$.deployments[0].weight`"):
    ``param`` was null, so neither the SDKs nor the web app could point at the field."""
    bad_route = {"deployments": [{"provider": "fake", "model": "m", "weight": -1}]}
    refused = await stack.admin("PUT", "/routes/papercut", bad_route)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "deployments[0].weight"
    assert "`deployments[0].weight`" in error["message"]
    bad_provider = {"kind": "opnai", "api_base": "http://127.0.0.1:9/v1"}
    refused = await stack.admin("PUT", "/providers/papercut", bad_provider)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "kind"
    assert (await stack.admin("GET", "/routes/papercut")).status_code == 404  # nothing applied


async def test_secrets_rm_of_a_secret_in_use_says_what_breaks_and_needs_force(
    stack: Stack, upstream: FakeOpenAI
) -> None:
    provider = {"kind": "openai-compatible", "api_base": upstream.base_url, "secret": "pc-key"}
    both = [{"provider": "pc-prov", "model": "echo"}, {"provider": "fake", "model": "echo"}]
    put = stack.cli("secrets", "put", "pc-key", "--from-stdin", stdin="sk-papercut-0000")
    assert put.returncode == 0, put.stderr
    assert (await stack.admin("PUT", "/providers/pc-prov", provider)).status_code == 200
    only = {"deployments": [{"provider": "pc-prov", "model": "echo"}]}
    assert (await stack.admin("PUT", "/routes/pc-only", only)).status_code == 200
    assert (await stack.admin("PUT", "/routes/pc-both", {"deployments": both})).status_code == 200
    backed = {**only, "fallbacks": ["pc-both"]}
    assert (await stack.admin("PUT", "/routes/pc-backed", backed)).status_code == 200
    try:
        refused = stack.cli("secrets", "rm", "pc-key")  # stdin is not a terminal
        assert refused.returncode == 1
        assert "provider(s) pc-prov" in refused.stderr
        assert "nothing to answer (503): pc-only" in refused.stderr
        assert "lose those deployments (their others answer): pc-both" in refused.stderr
        # Its fallback alone answers: said so, not "degraded" (nor above, by the API's 409).
        assert "lose all their own deployments: pc-backed (only its fallback pc-both will" in (
            refused.stderr
        )
        conflict = await stack.admin("DELETE", "/secrets/pc-key")
        assert conflict.status_code == 409, conflict.text
        said = conflict.json()["error"]["message"]
        assert "pc-backed (only its fallback pc-both will answer)" in said
        assert "pass --force" in refused.stderr
        assert stack.cli("secrets", "show", "pc-key").returncode == 0  # still there

        forced = stack.cli("secrets", "rm", "pc-key", "--force")
        assert forced.returncode == 0, forced.stderr
        assert "pc-only" in forced.stderr  # still said
        listed = stack.cli("secrets", "list")
        assert listed.returncode == 0, listed.stderr
        assert "missing: `pc-key` is named by provider pc-prov" in listed.stdout
        assert "missing: `missing-secret` is named by provider fake-locked" in listed.stdout
        as_json = stack.cli("secrets", "list", "--json")
        assert "pc-key" not in as_json.stdout  # the JSON is still what is stored
        assert "missing: `pc-key`" in as_json.stderr
    finally:
        for path in (
            "/routes/pc-backed",
            "/routes/pc-only",
            "/routes/pc-both",
            "/providers/pc-prov",
        ):
            await stack.admin("DELETE", path)
    unused = stack.cli("secrets", "put", "pc-spare", "--from-stdin", stdin="sk-spare-0000")
    assert unused.returncode == 0, unused.stderr
    quiet = stack.cli("secrets", "rm", "pc-spare")  # nobody uses it: no question asked
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""


async def test_parallel_route_edits_all_apply(stack: Stack, upstream: FakeOpenAI) -> None:
    """Twenty route edits at once (a deploy script, a busy team) each apply; they used to
    race each other through five compare-and-set attempts and most got a 409."""
    route = {"deployments": [{"provider": "fake", "model": "echo"}]}
    paths = [f"/routes/pc-par-{n}" for n in range(20)]
    try:
        answers = await asyncio.gather(*(stack.admin("PUT", p, route) for p in paths))
        assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers]
        table = (await stack.admin("GET", "/routes")).json()
        assert {f"pc-par-{n}" for n in range(20)} <= set(table["table"]["routes"])
    finally:
        for path in paths:
            await stack.admin("DELETE", path)


async def test_a_second_key_of_a_name_in_use_is_created_with_a_warning(stack: Stack) -> None:
    """`keys create my-app` twice succeeded silently; `keys show my-app` then refused with
    "2 keys are named `my-app`". Still allowed (names are labels), now said when created."""
    first = stack.cli("keys", "create", "namesake-app")
    assert first.returncode == 0, first.stderr
    assert "warning" not in first.stderr
    first_id = first.stdout.split()[1]
    second = stack.cli("keys", "create", "namesake-app")
    assert second.returncode == 0, second.stderr
    warned = [line for line in second.stderr.splitlines() if line.startswith("warning:")]
    assert warned == [
        f"warning: another key is named `namesake-app` too ({first_id}): names are labels, not "
        "unique, so commands that take a key by name will ask for the id"
    ]
    created = await stack.admin("POST", "/keys", {"name": "namesake-app"})
    assert created.status_code == 201, created.text
    assert "2 other keys are named `namesake-app` too" in created.json()["warning"]
    alone = await stack.admin("POST", "/keys", {"name": "namesake-alone"})
    assert "warning" not in alone.json()


async def test_changing_a_keys_budget_period_says_where_its_spend_starts(stack: Stack) -> None:
    made = stack.cli("keys", "create", "period-change", "--budget", "5")
    assert made.returncode == 0, made.stderr
    key_id = made.stdout.split()[1]
    changed = stack.cli("keys", "update", key_id, "--budget-period", "daily")
    assert changed.returncode == 0, changed.stderr
    notes = [line for line in changed.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, changed.stderr
    assert "`daily` period's counter" in notes[0]
    assert "`monthly` is not carried over" in notes[0]
    same = stack.cli("keys", "update", key_id, "--budget-period", "daily", "--rpm", "5")
    assert same.returncode == 0, same.stderr
    assert "note:" not in same.stderr


async def test_the_cli_removes_a_keys_expiry_with_never(stack: Stack) -> None:
    """`keys update --expires-in` refused never, 0, none and "" alike, so only the API
    (`expires_at: 0`) could make an expiring key permanent."""
    made = stack.cli("keys", "create", "expiry-removed", "--expires-in", "30d")
    assert made.returncode == 0, made.stderr
    key_id = made.stdout.split()[1]
    assert (await stack.admin("GET", f"/keys/{key_id}")).json()["expires_at"] > time.time()
    cleared = stack.cli("keys", "update", key_id, "--expires-in", "never")
    assert cleared.returncode == 0, cleared.stderr
    assert (await stack.admin("GET", f"/keys/{key_id}")).json()["expires_at"] == 0
    assert "  expires    never" in stack.cli("keys", "show", key_id).stdout
    wrong = stack.cli("keys", "update", key_id, "--expires-in", "forever")
    assert wrong.returncode == 1
    assert "or never for a key that does not expire" in wrong.stderr


async def test_a_new_keys_plaintext_is_never_cached(stack: Stack) -> None:
    """`POST /admin/v1/keys` answered the key's only plaintext with no Cache-Control, so a
    proxy or client cache in between could keep it."""
    created = await stack.admin("POST", "/keys", {"name": "uncached-key"})
    assert created.status_code == 201, created.text
    assert created.json()["key"]
    assert created.headers["cache-control"] == "no-store"
