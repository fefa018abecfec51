"""Client key records on a real nats-server (``admin.keys``, ``admin.key_index``): a budget JSON
cannot carry is never written, and a record that does not decode (bytes written straight into
its KV entry) neither breaks a listing nor stops the admin from revoking or deleting it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from nats.js import JetStreamContext
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

from switchyard.admin.key_damage import KeyRecordDamaged
from switchyard.admin.key_index import KeyIndex
from switchyard.admin.keys import KeyAdmin
from switchyard.bus import subjects
from switchyard.errors import InputError
from switchyard.schemas.keys import ClientKey, record_name
from tests.support import jetstream_server

pytestmark = pytest.mark.integration

ENDLESS = [float("inf"), float("nan"), float("1e309")]


async def _entries(kv: KeyValue) -> dict[str, bytes]:
    try:
        names = await kv.keys()
    except NoKeysError:  # nats-py: no keys at all is an error
        return {}
    return {name: (await kv.get(name)).value or b"" for name in names}


def _null_budget(record: ClientKey) -> bytes:
    """The record as an older version wrote it for a budget of ``inf``."""
    doc = msgspec.to_builtins(record)
    doc["budget_usd"] = None
    return msgspec.json.encode(doc)


async def test_a_budget_json_cannot_carry_is_refused_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        kv = await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        admin = KeyAdmin(js, names=True)
        for value in ENDLESS:
            with pytest.raises(InputError) as refused:
                await admin.create("endless", budget_usd=value)
            assert refused.value.field == "budget_usd"
            assert "finite number of dollars" in refused.value.problem
        assert await _entries(kv) == {}
        _, record = await admin.create("finite", budget_usd=5)
        stored = await _entries(kv)
        for value in ENDLESS:
            with pytest.raises(InputError):
                await admin.update(record.id, budget_usd=value)
        assert await _entries(kv) == stored
        assert (await admin.find(record.id)).budget_usd == 5


async def test_an_unreadable_record_is_listed_apart_and_can_still_be_shut(
    tmp_path: Path,
) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        kv = await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        admin = KeyAdmin(js, names=True)  # as the command line reads the bucket
        _, good = await admin.create("good")
        _, nulled = await admin.create("nulled", team="payments", models=("gpt-4o",))
        _, garbled = await admin.create("garbled")
        _, doomed = await admin.create("doomed")
        await kv.put(record_name(nulled.hash), _null_budget(nulled))
        await kv.put(record_name(garbled.hash), b"\xff not a record")
        await kv.put(record_name(doomed.hash), _null_budget(doomed))

        assert [k.id for k in await admin.list()] == [good.id]
        scan = await admin.scan()
        assert sorted(d.handle for d in scan.damaged) == sorted(
            [nulled.id, doomed.id, record_name(garbled.hash)]
        )
        with pytest.raises(KeyRecordDamaged, match=nulled.id):
            await admin.find(nulled.id)
        with pytest.raises(KeyRecordDamaged):
            await admin.update(nulled.id, rpm=5)

        revoked = await admin.revoke(nulled.id)  # what the bytes still say is kept
        assert (revoked.id, revoked.name, revoked.team, revoked.models) == (
            nulled.id,
            "nulled",
            "payments",
            ("gpt-4o",),
        )
        assert revoked.disabled
        assert await admin.find(nulled.id) == revoked
        # Bytes that name no key: the command line refers to them by record name.
        shut = await admin.revoke(record_name(garbled.hash))
        assert (shut.hash, shut.disabled, shut.name) == (garbled.hash, True, "unreadable record")
        await admin.delete(doomed.id)
        assert record_name(doomed.hash) not in await _entries(kv)
        assert sorted(k.id for k in await admin.list()) == sorted([good.id, nulled.id, shut.id])
        assert (await admin.scan()).damaged == []


@dataclass
class Gateway:
    """A key bucket on a real server, with the gateway's live index and the admin over it."""

    js: JetStreamContext
    kv: KeyValue
    index: KeyIndex
    admin: KeyAdmin


@contextlib.asynccontextmanager
async def _gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        kv = await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        index = KeyIndex(js)
        await index.start()
        try:
            yield Gateway(js, kv, index, KeyAdmin(js, locator=index))
        finally:
            await index.stop()


async def _until(done: Callable[[], bool]) -> None:
    """Until the index followed the bucket that far (4 s at most)."""
    for _ in range(200):
        if done():
            return
        await asyncio.sleep(0.02)


async def test_the_gateway_index_keeps_an_unreadable_key_revocable(tmp_path: Path) -> None:
    """The gateway finds a key through its index: a record whose bytes name no id is still
    found by the id its last readable revision had."""
    async with _gateway(tmp_path) as gw:
        _, good = await gw.admin.create("good")
        _, garbled = await gw.admin.create("garbled")
        await gw.kv.put(record_name(garbled.hash), b"\xff not a record")
        await _until(lambda: bool(gw.index.damaged()))
        assert gw.index.damaged() == [(garbled.id, record_name(garbled.hash))]
        assert [k.id for k in gw.index.search().keys] == [good.id]
        with pytest.raises(KeyRecordDamaged):
            await gw.admin.find(garbled.id)
        revoked = await gw.admin.revoke(garbled.id)
        assert (revoked.id, revoked.hash, revoked.disabled) == (garbled.id, garbled.hash, True)
        await _until(lambda: not gw.index.damaged())
        assert gw.index.get(garbled.id) == revoked


async def test_a_record_written_empty_is_damaged_not_deleted(tmp_path: Path) -> None:
    """An empty value is a write, not a deletion (a stolen client-zone certificate can get one
    stored: docs/security.md): the key stays listed as damaged and revocable, on the gateway
    (its index keeps the id) and on the command line (by record name)."""
    async with _gateway(tmp_path) as gw:
        _, good = await gw.admin.create("good")
        _, emptied = await gw.admin.create("emptied")
        _, other = await gw.admin.create("other")
        await _until(lambda: len(gw.index) == 3)
        await gw.kv.put(record_name(emptied.hash), b"")
        await gw.kv.put(record_name(other.hash), b"")
        await _until(lambda: len(gw.index.damaged()) == 2)
        assert sorted(gw.index.damaged()) == sorted(
            [(emptied.id, record_name(emptied.hash)), (other.id, record_name(other.hash))]
        )
        with pytest.raises(KeyRecordDamaged):
            await gw.admin.find(emptied.id)
        revoked = await gw.admin.revoke(emptied.id)
        assert (revoked.id, revoked.hash, revoked.disabled) == (emptied.id, emptied.hash, True)

        cli = KeyAdmin(gw.js, names=True)
        scan = await cli.scan()
        assert [d.handle for d in scan.damaged] == [record_name(other.hash)]
        shut = await cli.revoke(record_name(other.hash))
        assert (shut.hash, shut.disabled) == (other.hash, True)
        assert sorted(k.hash for k in await cli.list()) == sorted(
            [good.hash, emptied.hash, other.hash]
        )


async def test_deleting_one_record_that_names_no_key_leaves_the_others(tmp_path: Path) -> None:
    """The command line deletes a record whose bytes name no key by its record name. The
    delete then purged every record of the key id it had, "": every other such record too,
    other keys' (a review). It now purges the one named."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        kv = await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        cli = KeyAdmin(js, names=True)
        _, emptied = await cli.create("emptied")
        _, garbled = await cli.create("garbled")
        await kv.put(record_name(emptied.hash), b"")
        await kv.put(record_name(garbled.hash), b"\xff not a record")
        await cli.delete(record_name(emptied.hash))
        assert list(await _entries(kv)) == [record_name(garbled.hash)]


async def test_a_record_naming_no_key_written_since_the_index_is_no_keys(
    tmp_path: Path,
) -> None:
    """The gateway also reads the records written since its index's revision: one whose
    bytes name no key id was read as the key's being changed, so a delete of any key purged
    it and a revoke rewrote it as that key's record (a review). It is now the key's only when
    the index holds it as the key's."""
    async with _gateway(tmp_path) as gw:
        _, key = await gw.admin.create("key")
        _, garbled = await gw.admin.create("garbled")
        _, other = await gw.admin.create("other")
        await _until(lambda: len(gw.index) == 3)
        await gw.index.stop()  # behind from here on: what follows is "written since"
        await gw.kv.put(record_name(garbled.hash), b"\xff not a record")
        await gw.kv.put(record_name(other.hash), b"")
        revoked = await gw.admin.revoke(key.id)
        assert revoked.disabled
        await gw.admin.delete(key.id)
        assert await _entries(gw.kv) == {
            record_name(garbled.hash): b"\xff not a record",
            record_name(other.hash): b"",
        }
