"""A secret's metadata describes its current version when two writers race.

Vault's custom metadata (the provider label, ``last4``, who changed it) has no compare-and-set,
and the secrets service wrote it from what it had read before: a label-only put (the value the
secret holds, a new ``provider``) racing another replica's new value wrote the old value's
last four characters over the new version's; a new value's metadata written after another
replica's newer version described the older one (a review). Now the value is written with
check-and-set and the metadata only while the version read or made is still the current one.

On a real OpenBao: two Vault clients (two secrets service replicas); the other replica's write
is made from inside the first one's, at the point the race needs.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import hvac
import msgspec
import pytest
import pytest_asyncio

from switchyard.errors import Conflict, SecretsError
from switchyard.secrets.vault import PREFIX, WRITE_ATTEMPTS, WRITE_BACKOFF_S, Vault
from tests.stacks import Stack, start_stack

pytestmark = pytest.mark.integration

FIRST = "sk-first-value-0001"
OTHER = "sk-other-value-0002"
THIRD = "sk-third-value-0003"


@pytest_asyncio.fixture
async def bao(tmp_path: Path) -> AsyncIterator[Stack]:
    stack = await start_stack(tmp_path, components=[], wait_ready=False)
    try:
        yield stack
    finally:
        await stack.supervisor.stop()


def _other_replica_writes(other: Vault, mount: str, name: str, value: str) -> None:
    """What another secrets service replica's put does, synchronously: a version, then its
    metadata."""
    kv = other._client.secrets.kv.v2
    kv.create_or_update_secret(path=f"{PREFIX}/{name}", secret={"value": value}, mount_point=mount)
    kv.update_metadata(
        path=f"{PREFIX}/{name}",
        mount_point=mount,
        custom_metadata={"provider": "openai", "last4": value[-4:], "updated_by": "other"},
    )


async def _consistent(vault: Vault, name: str) -> tuple[str, str]:
    meta = await vault.metadata(name)
    stored = await vault.read(name)
    assert meta.version == stored.version
    assert meta.last4 == stored.value[-4:]  # the hint is the current version's
    return stored.value, meta.provider


async def test_a_label_put_racing_a_new_value_keeps_the_new_values_hint(bao: Stack) -> None:
    mount = bao.settings.openbao.mount
    one, other = Vault(bao.settings), Vault(bao.settings)
    await one.write("raced-label", FIRST, provider="openai", actor="a", must_exist=False)
    await other.list()  # logged in
    real_holds = one._holds
    raced: list[int] = []

    def holds(name: str, version: int, value: str) -> bool:
        held = real_holds(name, version, value)
        if not raced:  # between the label put's read and its metadata write
            raced.append(version)
            _other_replica_writes(other, mount, name, OTHER)
        return held

    one._holds = holds  # type: ignore[method-assign]
    _, written = await one.write("raced-label", FIRST, provider="azure", actor="a", must_exist=True)
    assert raced == [1]
    value, provider = await _consistent(one, "raced-label")
    # Serialised after the other replica's value: the put stores its own value again.
    assert (written, value, provider) == ("stored", FIRST, "azure")


async def test_a_new_values_metadata_is_not_written_over_a_newer_version(bao: Stack) -> None:
    mount = bao.settings.openbao.mount
    one, other = Vault(bao.settings), Vault(bao.settings)
    await one.write("raced-value", FIRST, provider="openai", actor="a", must_exist=False)
    await other.list()
    kv = one._client.secrets.kv.v2
    real_create = kv.create_or_update_secret
    raced: list[int] = []

    def create(**kwargs: Any) -> Any:
        made = real_create(**kwargs)
        if not raced:  # between this version and its metadata: another replica's version
            raced.append(1)
            _other_replica_writes(other, mount, "raced-value", OTHER)
        return made

    kv.create_or_update_secret = create
    await one.write("raced-value", THIRD, provider="", actor="a", must_exist=True)
    assert raced == [1]
    value, _ = await _consistent(one, "raced-value")
    assert value == OTHER  # the newer version stands, with its own hint


async def test_a_new_value_read_before_another_version_is_written_after_it(bao: Stack) -> None:
    """The value is written with check-and-set on the version read: another replica's version
    written in between is seen (read again), not overwritten unseen."""
    mount = bao.settings.openbao.mount
    one, other = Vault(bao.settings), Vault(bao.settings)
    await one.write("raced-cas", FIRST, provider="openai", actor="a", must_exist=False)
    await other.list()
    real_holds = one._holds
    seen: list[int] = []

    def holds(name: str, version: int, value: str) -> bool:
        seen.append(version)
        held = real_holds(name, version, value)
        if len(seen) == 1:  # after the read, before the write
            _other_replica_writes(other, mount, name, OTHER)
        return held

    one._holds = holds  # type: ignore[method-assign]
    meta, written = await one.write("raced-cas", THIRD, provider="", actor="a", must_exist=True)
    assert seen == [1, 2]  # the check-and-set refused version 1's write: read again
    assert (written, meta.version) == ("stored", 3)
    value, _ = await _consistent(one, "raced-cas")
    assert value == THIRD


async def test_a_write_that_keeps_losing_races_is_a_conflict_after_pauses(bao: Stack) -> None:
    """Another replica writes a version between each of this write's read and its write. The
    write retried at once and then answered 503 `secrets_error`, as if Vault had failed; it
    now pauses (jittered, growing) between attempts and answers 409 `conflict`."""
    mount = bao.settings.openbao.mount
    one, other = Vault(bao.settings), Vault(bao.settings)
    await one.write("raced-always", FIRST, provider="openai", actor="a", must_exist=False)
    await other.list()
    real_holds = one._holds
    seen: list[float] = []

    def holds(name: str, version: int, value: str) -> bool:
        seen.append(time.monotonic())
        held = real_holds(name, version, value)
        _other_replica_writes(other, mount, name, f"{OTHER}-{len(seen)}")
        return held

    one._holds = holds  # type: ignore[method-assign]
    with pytest.raises(Conflict, match="changing too fast") as refused:
        await one.write("raced-always", THIRD, provider="", actor="a", must_exist=True)
    assert refused.value.status == 409
    assert len(seen) == WRITE_ATTEMPTS
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert all(gap >= 0.5 * WRITE_BACKOFF_S * n for n, gap in enumerate(gaps, 1))
    assert (await one.read("raced-always")).value != THIRD


async def test_a_kv_version_1_mount_is_named_in_a_secrets_error(bao: Stack, tmp_path: Path) -> None:
    """``openbao.mount`` naming a KV version 1 mount: its write answers no body, and the
    write failed with an AttributeError (a 500 `internal error`, the cause unsaid)."""
    root = hvac.Client(
        url=bao.settings.openbao_addr, verify=str(bao.settings.certs_dir / "ca.pem"), timeout=10
    )
    root.token = (bao.home.openbao / "root-token").read_text(encoding="utf-8").strip()
    root.sys.enable_secrets_engine("kv", path="legacy", options={"version": "1"})
    root.sys.create_or_update_policy(
        "legacy",
        'path "legacy/*" { capabilities = ["create", "read", "update", "delete", "list"] }',
    )
    token = root.auth.token.create(policies=["legacy"])["auth"]["client_token"]
    token_file = tmp_path / "legacy-token"
    token_file.write_text(token, encoding="utf-8")
    settings = msgspec.structs.replace(
        bao.settings,
        openbao=msgspec.structs.replace(
            bao.settings.openbao, auth="token", token_file=str(token_file), mount="legacy"
        ),
    )
    with pytest.raises(SecretsError, match=r"mount `legacy`.*KV version 1"):
        await Vault(settings).write("old", FIRST, provider="openai", actor="a", must_exist=False)
