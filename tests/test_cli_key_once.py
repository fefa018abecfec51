"""``switchyard keys create --idempotency-key``: a create run again (a retry after a timeout, a
CI job run twice) names the key the first run made and makes none, through the bucket and
rules of the API's ``Idempotency-Key``. Before, every run made a key. The session stack."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def test_a_create_run_again_with_its_value_names_the_first_key(stack: Stack) -> None:
    name, value = f"cli-once-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    create = ("keys", "create", name, "--team", "ci", "--expires-in", "30d")
    first = stack.cli(*create, "--idempotency-key", value, "--json")
    assert first.returncode == 0, first.stderr
    made = json.loads(first.stdout)
    assert made["key"].startswith("sk-")
    assert "idempotent_replay" not in made

    again = stack.cli(*create, "--idempotency-key", value, "--json")  # later: 30d from now
    assert again.returncode == 0, again.stderr
    replay = json.loads(again.stdout)
    assert replay["key"] is None
    assert replay["idempotent_replay"] is True
    assert replay["record"]["id"] == made["record"]["id"]
    assert f"switchyard keys rotate {made['record']['id']}" in replay["key_note"]
    said = stack.cli(*create, "--idempotency-key", value)
    assert said.returncode == 0, said.stderr
    assert f"already created {made['record']['id']} ({name})" in said.stdout
    assert "sk-" not in said.stdout + said.stderr

    other = stack.cli("keys", "create", name, "--team", "other", "--idempotency-key", value)
    assert other.returncode == 1
    assert "--idempotency-key: this value was used with other options" in other.stderr
    bad = stack.cli("keys", "create", name, "--idempotency-key", "a b")
    assert bad.returncode == 1
    assert "printable ASCII" in bad.stderr
    # The API's header of the same value is another caller's: its own key.
    headers = {**stack.admin_headers(), "Idempotency-Key": value}
    async with httpx.AsyncClient(timeout=30) as http:
        url = f"{stack.gateway_url}/admin/v1/keys"
        api = await http.post(url, json={"name": name}, headers=headers)
    assert api.status_code == 201, api.text
    assert api.json()["key"].startswith("sk-")
    await stack.listed_keys(f"q={name}", lambda keys: len(keys) >= 2)
    await asyncio.sleep(0.5)  # (the index a moment behind: a third key would be listed by now)
    listed = await stack.listed_keys(f"q={name}", lambda keys: True)
    assert len(listed) == 2, listed  # the CLI's one key and the API's


async def test_a_header_value_never_answers_a_cli_value(stack: Stack) -> None:
    """The CLI's values were "cli." + VALUE, stored as the API stores a header's value as sent:
    `Idempotency-Key: cli.X` was `--idempotency-key X` (the CLI's run then refused as "used
    with other options", or, with the same digest, answered with the API caller's key). Now
    its prefix ends with a space, which no header value may hold."""
    name, value = f"cli-apart-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    headers = {**stack.admin_headers(), "Idempotency-Key": f"cli.{value}"}
    async with httpx.AsyncClient(timeout=30) as http:
        url = f"{stack.gateway_url}/admin/v1/keys"
        api = await http.post(url, json={"name": name}, headers=headers)
    assert api.status_code == 201, api.text
    run = stack.cli("keys", "create", name, "--idempotency-key", value, "--json")
    assert run.returncode == 0, run.stderr
    made = json.loads(run.stdout)
    assert made["key"].startswith("sk-")
    assert made["record"]["id"] != api.json()["record"]["id"]
    spaced = {**headers, "Idempotency-Key": f"cli {value}"}  # the CLI's own, as a header
    async with httpx.AsyncClient(timeout=30) as http:
        refused = await http.post(url, json={"name": name}, headers=spaced)
    assert refused.status_code == 400, refused.text
