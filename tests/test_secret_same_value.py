"""Storing the value a secret already holds makes no new version and ends no cooldown.

A Terraform or CI job that stores its provider keys on every run made a new OpenBao version
each time, and each new version told every model-proxy to drop its copy and the control
service to end the cooldowns of the deployments using that key (a key the provider refused
was tried again at once). The secrets service now compares with the value it holds and
answers ``"changed": false`` with the current version. On the session stack's real OpenBao.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time

import pytest

from switchyard.runtime.cooldowns import CooldownWriter
from switchyard.schemas.routing import deployment_id
from tests.stacks import Stack

pytestmark = pytest.mark.integration

_CLI = (sys.executable, "-m", "switchyard", "--config")
_PROVIDER = {"kind": "openai-compatible", "api_base": "http://127.0.0.1:9/v1"}


async def _cooling(stack: Stack, dep_id: str) -> bool:
    listed = (await stack.admin("GET", "/deployments")).json()["deployments"]
    return any(d["id"] == dep_id and d.get("cooldown") for d in listed)


async def _until(stack: Stack, dep_id: str, cooling: bool) -> None:
    deadline = time.monotonic() + 10
    while await _cooling(stack, dep_id) != cooling:
        assert time.monotonic() < deadline, f"cooling stayed {not cooling}"
        await asyncio.sleep(0.1)


async def test_the_same_value_again_is_unchanged_and_the_cooldown_runs_on(stack: Stack) -> None:
    name = "same-value-" + secrets.token_hex(4)
    provider, alias = f"p-{name}", f"r-{name}"
    first = "sk-same-" + secrets.token_hex(12)
    path = f"/secrets/{name}"
    stored = await stack.admin("PUT", path, {"value": first})
    assert stored.status_code == 200, stored.text
    assert (stored.json()["version"], stored.json()["changed"]) == (1, True)
    made = await stack.admin("PUT", f"/providers/{provider}", {**_PROVIDER, "secret": name})
    assert made.status_code == 200, made.text
    route = {"deployments": [{"provider": provider, "model": "m"}]}
    assert (await stack.admin("PUT", f"/routes/{alias}", route)).status_code == 200
    dep_id = deployment_id(provider, "m")
    nc = await stack.connect("modelproxy")
    try:
        cooled = await CooldownWriter(nc.jetstream(timeout=10)).cool(
            dep_id, 120, status=401, reason="provider refused the API key"
        )
        assert cooled is not None
        await _until(stack, dep_id, cooling=True)

        for op, doc in (
            ("PUT", {"value": first}),
            ("POST", {"value": first}),  # a rotation to the value it holds
            ("PUT", {"value": first, "provider": ""}),
        ):
            again = await stack.admin(op, path if op == "PUT" else f"{path}/rotate", doc)
            assert again.status_code == 200, again.text
            assert (again.json()["version"], again.json()["changed"]) == (1, False), again.text
            assert first not in again.text
        # A new label on the same value: metadata only, still version 1, nothing ended.
        labelled = await stack.admin("PUT", path, {"value": first, "provider": "openai"})
        assert labelled.status_code == 200, labelled.text
        shown = labelled.json()
        assert (shown["version"], shown["changed"], shown["provider"]) == (1, True, "openai")
        await asyncio.sleep(1.0)  # an event, had one been sent, is applied well within this
        assert await _cooling(stack, dep_id), "the same key ended the deployment's cooldown"
        info = (await stack.admin("GET", path)).json()
        assert (info["version"], info["provider"]) == (1, "openai")

        # A new value is a new version and ends the cooldown (what the same one must not do).
        second = "sk-other-" + secrets.token_hex(12)
        rotated = await stack.admin("POST", f"{path}/rotate", {"value": second})
        assert rotated.status_code == 200, rotated.text
        assert (rotated.json()["version"], rotated.json()["changed"]) == (2, True)
        await _until(stack, dep_id, cooling=False)
    finally:
        await nc.close()
        await stack.admin("DELETE", f"/routes/{alias}")
        await stack.admin("DELETE", f"/providers/{provider}")
        await stack.admin("DELETE", f"{path}?force=true")


def test_the_cli_says_unchanged_for_the_value_a_secret_holds(stack: Stack) -> None:
    name = "same-cli-" + secrets.token_hex(4)
    value = "sk-same-cli-" + secrets.token_hex(12)

    def put() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_CLI, str(stack.config_file), "secrets", "put", name, "--from-stdin"],
            input=value,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    try:
        first = put()
        assert first.returncode == 0, first.stderr
        assert f"stored {name} version 1" in first.stdout
        again = put()
        assert again.returncode == 0, again.stderr  # a re-run is no failure
        assert f"unchanged: {name} holds that value already, version 1 kept" in again.stdout
        # No cooldown ended (a re-store used to end them): it says how to end one.
        assert "`DELETE /admin/v1/deployments/{id}/cooldown`" in again.stdout
        assert value not in again.stdout + again.stderr
    finally:
        subprocess.run(
            [*_CLI, str(stack.config_file), "secrets", "rm", name, "--force"],
            capture_output=True,
            timeout=60,
            check=False,
        )
