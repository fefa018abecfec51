"""Listing the stored secrets costs OpenBao one request, however many secrets there are.

The admin overview lists the secrets every 5 s (which providers miss their key). The list was
a LIST of names then one metadata read per name: 1 + N requests, each written twice to
OpenBao's audit log (10 secrets: 437 KB of audit log a minute, ~630 MB a day). Checked on a
real OpenBao by counting the requests its audit log records.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import hvac
import msgspec
import pytest
import pytest_asyncio

from switchyard.secrets.vault import Vault
from switchyard.stack import openbao
from tests.stacks import Stack, start_stack

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def bao(tmp_path: Path) -> AsyncIterator[Stack]:
    """A stack of servers only: the secrets' Vault client is the code under test."""
    stack = await start_stack(tmp_path, components=[], wait_ready=False)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


async def _requests_made(stack: Stack, vault: Vault) -> tuple[list[str], int]:
    """The names ``vault.list()`` answers and how many requests it sent to the KV mount."""
    audit = stack.home.openbao / "audit.log"
    start = audit.stat().st_size
    names = [m.name for m in await vault.list()]
    with audit.open("rb") as f:
        f.seek(start)
        lines = [json.loads(line) for line in f.read().splitlines()]
    mount = stack.settings.openbao.mount + "/"
    sent = [x for x in lines if x["type"] == "request" and x["request"]["path"].startswith(mount)]
    return names, len(sent)


async def _store(vault: Vault, names: list[str]) -> None:
    for name in names:
        await vault.write(
            name, f"sk-{name}-0123456789", provider="openai", actor="test", must_exist=False
        )


async def test_a_list_is_one_request_whatever_the_number_of_secrets(bao: Stack) -> None:
    vault = Vault(bao.settings)
    assert await vault.list() == []  # logs in; an empty mount lists nothing
    await _store(vault, ["key-00"])
    assert await _requests_made(bao, vault) == (["key-00"], 1)
    names = [f"key-{i:02d}" for i in range(10)]
    await _store(vault, names[1:])
    assert await _requests_made(bao, vault) == (names, 1)
    # The same metadata as one read each: provider, last four, version, who changed it.
    # A new value (the one it holds again would make no new version).
    await vault.write(
        "key-03", "sk-key-03-new-0123456789", provider="", actor="test", must_exist=True
    )
    listed = await vault.list()
    assert listed == [await vault.metadata(n) for n in names]
    assert (listed[3].version, listed[3].last4, listed[3].provider) == (2, "6789", "openai")
    await vault.delete("key-05")
    assert [m.name for m in await vault.list()] == [n for n in names if n != "key-05"]


async def test_a_policy_without_detailed_metadata_still_lists(bao: Stack, tmp_path: Path) -> None:
    """A production policy written before ``detailed-metadata`` was granted, or a server
    without it (HashiCorp Vault), lists one secret at a time as before."""
    vault = Vault(bao.settings)
    await _store(vault, ["alpha", "beta"])
    root = hvac.Client(
        url=bao.settings.openbao_addr, verify=str(bao.settings.certs_dir / "ca.pem"), timeout=10
    )
    root.token = (bao.home.openbao / "root-token").read_text(encoding="utf-8").strip()
    mount = bao.settings.openbao.mount
    older = "\n".join(
        line for line in openbao.policy_text(mount).splitlines() if "detailed-metadata" not in line
    )
    root.sys.create_or_update_policy("switchyard-older", older)
    token = root.auth.token.create(policies=["switchyard-older"])["auth"]["client_token"]
    token_file = tmp_path / "older-token"
    token_file.write_text(token, encoding="utf-8")
    settings = msgspec.structs.replace(
        bao.settings,
        openbao=msgspec.structs.replace(
            bao.settings.openbao, auth="token", token_file=str(token_file)
        ),
    )
    older_vault = Vault(settings)
    assert [m.name for m in await older_vault.list()] == ["alpha", "beta"]  # (refused once)
    # The refusal is remembered: the next lists do not try the detailed LIST again (each try
    # was two more audit lines every 5 s per open overview: reviewer).
    assert await _requests_made(bao, older_vault) == (["alpha", "beta"], 3)  # LIST, 2 reads
