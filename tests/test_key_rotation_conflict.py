"""A rotation that loses its compare-and-set leaves the key where the gateway's index finds it.

The rotation creates the new secret's record first, and purges it when the old record changed
meanwhile. The index mapped the key id to the new record as it arrived, and the purge dropped
the mapping, though the key's record was still there: after the Keys page's rotation stopped
on a key changed by another admin, the key's page and every change by id answered 404 until
its record was written again (a review).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import nats.errors
import pytest
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError

from switchyard.admin.key_index import KeyIndex
from switchyard.admin.keys import KeyAdmin, KeyNotFound
from switchyard.bus import subjects
from switchyard.errors import AuthenticationFailed
from switchyard.ingress.keyring import KeyRing
from switchyard.schemas.keys import KEY_ENCODER, ClientKey, hash_key, new_api_key, record_name
from tests.support import jetstream_server

pytestmark = pytest.mark.integration


class _Changed(Exception):
    """The web form's refusal: the key changed since the form was shown."""


async def _caught_up(index: KeyIndex, js: JetStreamContext) -> None:
    info = await js.stream_info(f"KV_{subjects.KEYS_BUCKET}")
    for _ in range(500):
        if index.revision >= info.state.last_seq:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the index did not follow the bucket")


async def test_a_rotation_stopped_by_a_change_meanwhile_keeps_the_key_found(
    tmp_path: Path,
) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        other_admin = KeyAdmin(js, names=True)
        index = KeyIndex(js)
        await index.start()
        try:
            gateway = KeyAdmin(js, locator=index)
            _, key = await gateway.create("rotated")
            await _caught_up(index, js)
            seen: list[ClientKey] = []

            def unchanged(current: ClientKey) -> None:  # as the Keys page's rotate checks
                seen.append(current)
                if current != seen[0]:
                    raise _Changed

            # Another admin saves the key between the rotation's read and its write: the real
            # bucket's create, preceded by that save once, so the compare-and-set fails.
            bucket = await gateway._bucket()
            real_create = bucket.create

            async def create_after_a_save(name: str, value: bytes) -> int:
                if len(seen) == 1:
                    await other_admin.update(key.id, rpm=7)
                    await _caught_up(index, js)
                return await real_create(name, value)

            bucket.create = create_after_a_save  # type: ignore[method-assign,assignment]
            with pytest.raises(_Changed):
                await gateway.rotate(key.id, check=unchanged)
            await _caught_up(index, js)
            assert index.record_name(key.id) == record_name(key.hash)
            bucket.create = real_create  # type: ignore[method-assign]
            found = index.get(key.id)
            assert found is not None
            assert found.rpm == 7  # the other admin's save
            assert (await gateway.update(key.id, rpm=8)).rpm == 8  # no 404
        finally:
            await index.stop()


async def test_the_retry_finds_the_key_while_the_index_still_maps_the_purged_record(
    tmp_path: Path,
) -> None:
    """The retry looked the key up through the index, which may not have followed the purge
    yet: it mapped the id to the record just purged, and the rotation answered 404 for a live
    key. It now reads the record it raced on (or its successor) from the bucket."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        other_admin = KeyAdmin(js, names=True)
        index = KeyIndex(js)
        await index.start()
        gateway = KeyAdmin(js, locator=index)
        _, key = await gateway.create("raced")
        await _caught_up(index, js)
        seen: list[ClientKey] = []

        def unchanged(current: ClientKey) -> None:
            seen.append(current)
            if current != seen[0]:
                raise _Changed

        bucket = await gateway._bucket()
        real_create = bucket.create

        async def create_then_lag(name: str, value: bytes) -> int:
            if len(seen) == 1:
                await other_admin.update(key.id, rpm=7)
            revision = await real_create(name, value)
            if len(seen) == 1:  # the index applies this create, and nothing after it
                await _caught_up(index, js)
                await index.stop()
            return revision

        bucket.create = create_then_lag  # type: ignore[method-assign,assignment]
        with pytest.raises(_Changed):  # the other admin's save, seen: not a 404
            await gateway.rotate(key.id, check=unchanged)
        assert len(seen) == 2
        assert seen[1].rpm == 7


async def test_rotations_at_once_all_end_with_the_key_at_the_last_ones_record(
    tmp_path: Path,
) -> None:
    """Concurrent rotations of one key: each loser retries from the winner's record; the
    index ends with the id at the record of the last secret handed out."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        index = KeyIndex(js)
        await index.start()
        try:
            gateway = KeyAdmin(js, locator=index)
            _, key = await gateway.create("busy")
            await _caught_up(index, js)
            done = await asyncio.gather(*(gateway.rotate(key.id) for _ in range(4)))
            await _caught_up(index, js)
            live = [r for _, r in done if index.record_name(key.id) == record_name(r.hash)]
            assert len(live) == 1
            assert max(r.rotated_at for _, r in done) == live[0].rotated_at
            assert index.retired(key.id)  # every other secret's record is a retired one
            assert (await gateway.update(key.id, rpm=3)).rpm == 3
        finally:
            await index.stop()
            await index.stop()


async def test_a_rotation_stopped_by_an_edit_ends_no_request_at_the_edges(
    tmp_path: Path,
) -> None:
    """The losing rotation purged the live record it had created, and every edge's keyring
    took the deletion of a live record for a deleted key: it ended every request of the key
    in flight (`This API key has been deleted`), though the key was live (a review: admin A
    edits a key's budget while admin B rotates it). The record is still purged; the edge ends
    a key's requests on a deletion only when no other live record holds the key."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        refused: list[tuple[str, str]] = []
        edge = KeyRing(js, lambda key_id, error: refused.append((key_id, str(error))))
        await edge.start()
        other_admin = KeyAdmin(js, names=True)
        index = KeyIndex(js)
        await index.start()
        try:
            gateway = KeyAdmin(js, locator=index)
            api_key, key = await gateway.create("edited")
            await _caught_up(index, js)
            bucket = await gateway._bucket()
            real_create = bucket.create
            edits: list[int] = []

            async def create_after_an_edit(name: str, value: bytes) -> int:
                if not edits:
                    edits.append(1)
                    await other_admin.update(key.id, budget_usd=12.0)
                return await real_create(name, value)

            bucket.create = create_after_an_edit  # type: ignore[method-assign,assignment]
            new_key, rotated = await gateway.rotate(key.id)
            assert rotated.budget_usd == 12.0  # the retry rotated the edited record
            info = await js.stream_info(f"KV_{subjects.KEYS_BUCKET}")
            for _ in range(500):
                if edge._follower.revision >= info.state.last_seq:
                    break
                await asyncio.sleep(0.01)
            assert refused == []  # no request of the live key was ended
            assert edge.authenticate(new_key).id == key.id
            with pytest.raises(AuthenticationFailed, match="rotated"):  # no grace asked
                edge.authenticate(api_key)
        finally:
            await index.stop()
            await edge.stop()


async def test_a_revoke_landing_on_a_losing_rotations_record_is_kept(tmp_path: Path) -> None:
    """R1 and R2 rotate one key; the index maps the id to R2's new record N2 (the newest), and
    admin C's revoke lands there (200). R2 then lost its compare-and-set and purged N2 with
    the revoke; its retry rotated from R1's record: the key was live with a fresh secret (a
    review). A revoke now writes every live record of the key (N1 and N2)."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        index = KeyIndex(js)
        await index.start()
        try:
            gateway = KeyAdmin(js, locator=index)
            other = KeyAdmin(js, locator=index)  # R1 and C, on the same gateway
            _, key = await gateway.create("revoked meanwhile")
            await _caught_up(index, js)
            bucket = await gateway._bucket()
            real_create = bucket.create
            steps: list[str] = []

            async def race(name: str, value: bytes) -> int:
                if steps:
                    return await real_create(name, value)
                steps.append("R1")
                await other.rotate(key.id)  # R1 wins: the old record names N1
                await _caught_up(index, js)
                revision = await real_create(name, value)  # R2's N2
                await _caught_up(index, js)
                assert index.record_name(key.id) == name  # the index maps the id to N2
                revoked = await other.revoke(key.id)  # C
                assert revoked.disabled
                steps.append("C")
                return revision

            bucket.create = race  # type: ignore[method-assign,assignment]
            api_key, rotated = await gateway.rotate(key.id)
            assert steps == ["R1", "C"]
            assert rotated.disabled  # the retry rotated a revoked key: it stays revoked
            await _caught_up(index, js)
            fresh = KeyAdmin(js, names=True)  # a scan of the bucket, no index
            live = [r for r, _ in (await fresh.scan()).records if r.id == key.id]
            assert live
            assert all(r.disabled for r in live)
            ring = KeyRing(js)
            await ring.start()
            try:
                with pytest.raises(AuthenticationFailed, match="revoked"):
                    ring.authenticate(api_key)
            finally:
                await ring.stop()
        finally:
            await index.stop()


async def _live(js: JetStreamContext, key_id: str) -> list[ClientKey]:
    """The key's live records, by a scan of the bucket (no index)."""
    return [r for r, _ in (await KeyAdmin(js, names=True).scan()).records if r.id == key_id]


async def _ring_caught_up(ring: KeyRing, js: JetStreamContext) -> None:
    info = await js.stream_info(f"KV_{subjects.KEYS_BUCKET}")
    for _ in range(500):
        if ring._follower.revision >= info.state.last_seq:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the keyring did not follow the bucket")


async def test_a_delete_through_a_losing_rotations_record_leaves_no_live_record(
    tmp_path: Path,
) -> None:
    """Admin D deletes the key by id while the index maps it to a rotation's new record N,
    after the rotation lost its compare-and-set and before it removes N. The delete purged N
    only (it has no compare-and-set), the key's record L stayed, and the rotation retried from
    it: a deleted key (204, audited) live with a fresh secret. A delete now purges every live
    record of the key."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        index = KeyIndex(js)
        await index.start()
        try:
            gateway = KeyAdmin(js, locator=index)
            other = KeyAdmin(js, locator=index)  # the edit and D
            _, key = await gateway.create("deleted meanwhile")
            await _caught_up(index, js)
            bucket = await gateway._bucket()
            real_create, real_update = bucket.create, bucket.update
            steps: list[str] = []

            async def create_after_an_edit(name: str, value: bytes) -> int:
                await other.update(key.id, rpm=7)  # the compare-and-set will lose
                revision = await real_create(name, value)
                await _caught_up(index, js)
                assert index.record_name(key.id) == name  # mapped to the new record
                return revision

            async def delete_before_the_cleanup(
                name: str, value: bytes, last: int | None = None
            ) -> int:
                try:
                    return await real_update(name, value, last=last)
                except KeyWrongLastSequenceError:
                    if not steps:
                        await other.delete(key.id)  # D, through the new record
                        steps.append("D")
                    raise

            bucket.create = create_after_an_edit  # type: ignore[method-assign,assignment]
            bucket.update = delete_before_the_cleanup  # type: ignore[method-assign,assignment]
            with pytest.raises(KeyNotFound):
                await gateway.rotate(key.id)
            assert steps == ["D"]
            assert await _live(js, key.id) == []
        finally:
            await index.stop()


async def test_a_stray_live_record_goes_with_the_key_and_the_edges_refuse_it(
    tmp_path: Path,
) -> None:
    """A second live record of the key (a rotation stopped between creating it and removing
    it: a crash, a timeout) outlived the key's delete, which purged the record the index
    mapped; the edges end a key's requests only when its last live record goes, so they ended
    none, and the stray's secret still authenticated."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        refused: list[str] = []
        edge = KeyRing(js, lambda key_id, _error: refused.append(key_id))
        await edge.start()
        index = KeyIndex(js)
        await index.start()
        try:
            gateway = KeyAdmin(js, locator=index)
            api_key, key = await gateway.create("stray")
            stray_key = new_api_key()
            stray = msgspec.structs.replace(key, hash=hash_key(stray_key), hint=stray_key[-4:])
            bucket = await gateway._bucket()
            await bucket.create(record_name(stray.hash), KEY_ENCODER.encode(stray))
            await _caught_up(index, js)
            await _ring_caught_up(edge, js)
            assert edge.authenticate(stray_key).id == key.id
            assert len(await _live(js, key.id)) == 2
            await gateway.delete(key.id)
            assert await _live(js, key.id) == []
            await _ring_caught_up(edge, js)
            assert refused == [key.id]  # its requests in flight are ended
            for secret in (api_key, stray_key):
                with pytest.raises(AuthenticationFailed):
                    edge.authenticate(secret)
        finally:
            await index.stop()
            await edge.stop()


async def test_a_rotation_made_through_a_losing_rotations_record_leaves_one_live_record(
    tmp_path: Path,
) -> None:
    """R1 creates N1; admin X sets the key's expiry on L; R2, through the index, rotates N1
    (grace 0: N2, and N1 retired with expires_at=now). R1's compare-and-set on L loses. Its
    cleanup took N1's retirement for X's change and copied expires_at=now onto L, and N2
    stayed a second live record nothing pointed to. Now a rotation starts from the key's
    oldest live record (R2 from L, not N1: both meet on L's compare-and-set) and retires the
    key's other live records to its own: one live record, with X's expiry, and R1's secret
    (the last rotation's) works."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        index = KeyIndex(js)
        await index.start()
        try:
            gateway = KeyAdmin(js, locator=index)  # R1
            r2 = KeyAdmin(js, locator=index)
            other_admin = KeyAdmin(js, names=True)  # X
            api_key, key = await gateway.create("rotated twice")
            expiry = time.time() + 3600
            await _caught_up(index, js)
            bucket = await gateway._bucket()
            real_create = bucket.create
            secrets: list[str] = []

            async def race(name: str, value: bytes) -> int:
                if secrets:
                    return await real_create(name, value)
                await other_admin.update(key.id, expires_at=expiry)
                revision = await real_create(name, value)  # N1
                await _caught_up(index, js)
                assert index.record_name(key.id) == name
                secret, _ = await r2.rotate(key.id, grace_s=0)
                secrets.append(secret)
                return revision

            bucket.create = race  # type: ignore[method-assign,assignment]
            new_key, rotated = await gateway.rotate(key.id)
            assert secrets
            live = await _live(js, key.id)
            assert len(live) == 1
            assert live[0].hash == hash_key(new_key)
            assert live[0].expires_at == expiry == rotated.expires_at
            ring = KeyRing(js)
            await ring.start()
            try:
                assert ring.authenticate(new_key).id == key.id
                for old in (api_key, secrets[0]):
                    with pytest.raises(AuthenticationFailed):
                        ring.authenticate(old)
            finally:
                await ring.stop()
        finally:
            await index.stop()


async def test_a_rotation_stopped_after_creating_its_record_removes_it(tmp_path: Path) -> None:
    """Cancelled (the caller gone) while writing the new record, a rotation left it live
    beside the key's: a second secret nobody was given. It is now removed by a cleanup the
    cancellation does not stop. Once the compare-and-set was sent and its answer is missing
    (a timeout) the outcome is unknown, and the new record stays: unused (the key keeps its
    record, the next rotation retires both), or the key's when the compare-and-set landed."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        gateway = KeyAdmin(js, names=True)
        _, key = await gateway.create("stopped")
        bucket = await gateway._bucket()
        real_create, real_update = bucket.create, bucket.update
        created = asyncio.Event()

        async def create_then_hang(name: str, value: bytes) -> int:
            await real_create(name, value)
            created.set()
            await asyncio.sleep(60)
            raise AssertionError("not cancelled")

        bucket.create = create_then_hang  # type: ignore[method-assign,assignment]
        rotation = asyncio.create_task(gateway.rotate(key.id))
        await created.wait()
        rotation.cancel()
        with pytest.raises(asyncio.CancelledError):
            await rotation
        assert [r.hash for r in await _live(js, key.id)] == [key.hash]

        bucket.create = real_create  # type: ignore[method-assign]

        async def unanswered(name: str, value: bytes, last: int | None = None) -> int:
            raise nats.errors.TimeoutError

        bucket.update = unanswered  # type: ignore[method-assign,assignment]
        with pytest.raises(nats.errors.TimeoutError):
            await gateway.rotate(key.id)
        stray = [r.hash for r in await _live(js, key.id) if r.hash != key.hash]
        assert key.hash in [r.hash for r in await _live(js, key.id)]
        assert len(stray) == 1

        async def answer_lost(name: str, value: bytes, last: int | None = None) -> int:
            await real_update(name, value, last=last)
            raise nats.errors.TimeoutError

        bucket.update = answer_lost  # type: ignore[method-assign,assignment]
        with pytest.raises(nats.errors.TimeoutError):
            await gateway.rotate(key.id)
        live = [r.hash for r in await _live(js, key.id)]
        # Rotated: the new record stays, the key's was retired (the stray too, at the next
        # rotation that is answered).
        assert key.hash not in live
        assert len(set(live) - set(stray)) == 1


async def test_a_compare_and_set_landing_after_its_timeout_keeps_the_key(
    tmp_path: Path,
) -> None:
    """The compare-and-set's answer was lost (a timeout) and it landed a moment later: the
    rotation read the old record once, found it not yet retired, and purged the new record;
    the old one was then retired to a record that was gone: the key had no live record (its
    page 404) and its secret was refused at the edges (a review). The new record now stays
    whenever the outcome is unknown."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        index = KeyIndex(js)
        await index.start()
        refused: list[str] = []
        ring = KeyRing(js, lambda key_id, _: refused.append(key_id))
        await ring.start()
        try:
            gateway = KeyAdmin(js, locator=index)
            old_secret, key = await gateway.create("late")
            await _caught_up(index, js)
            bucket = await gateway._bucket()
            real_update = bucket.update
            landed: list[asyncio.Task[int]] = []

            async def lands_later(name: str, value: bytes, last: int | None = None) -> int:
                async def commit() -> int:
                    await asyncio.sleep(0.2)
                    return await real_update(name, value, last=last)

                landed.append(asyncio.ensure_future(commit()))
                raise nats.errors.TimeoutError

            bucket.update = lands_later  # type: ignore[method-assign,assignment]
            with pytest.raises(nats.errors.TimeoutError):
                await gateway.rotate(key.id, grace_s=600)
            bucket.update = real_update  # type: ignore[method-assign]
            await asyncio.gather(*landed)
            await _caught_up(index, js)
            await _ring_caught_up(ring, js)
            live = await _live(js, key.id)
            assert len(live) == 1
            assert live[0].hash != key.hash
            assert (await gateway.find(key.id)).hash == live[0].hash
            # The edges: the old secret, in its grace, is the key's; no request was ended.
            assert ring.authenticate(old_secret).hash == live[0].hash
            assert refused == []
        finally:
            await ring.stop()
            await index.stop()


class _Crashed(Exception):
    """The rotating gateway stopped right after its compare-and-set won."""


@pytest.mark.parametrize("stops", [False, True])
async def test_a_revoke_reaches_a_rotation_that_won_on_a_record_it_collected(
    tmp_path: Path, stops: bool
) -> None:
    """Admin C's revoke found the key through rotation R1's new record N1 and wrote it, then
    collected the key's other live records ([L]); rotation R2 won its compare-and-set on L in
    between, and C, finding L retired, skipped it: a revoke answered 200 while R2's new record
    kept the key working (a review). A record found retired now passes the change to the
    record it names (``stops``: R2 never got to retire N1), and a rotation that retires a
    revoked record revokes its own."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        index = KeyIndex(js)
        await index.start()
        try:
            revoker = KeyAdmin(js, locator=index)
            rotator = KeyAdmin(js, locator=index)
            _, key = await revoker.create("leaked")
            pending = new_api_key()  # R1: its new record written, its compare-and-set not yet
            n1 = msgspec.structs.replace(
                key, hash=hash_key(pending), hint=pending[-4:], rotated_at=time.time()
            )
            bucket = await revoker._bucket()
            await bucket.create(record_name(n1.hash), KEY_ENCODER.encode(n1))
            await _caught_up(index, js)
            assert index.record_name(key.id) == record_name(n1.hash)
            collect = revoker._candidates
            rotated: list[str] = []

            async def crash(*_: object) -> None:
                raise _Crashed

            if stops:
                rotator._each_live = crash  # type: ignore[method-assign,assignment]

            async def collect_then_rotate(key_id: str, *, retired: bool = False) -> list[str]:
                names = await collect(key_id, retired=retired)
                if not rotated:  # R2 wins on L between the collection and the writes
                    try:
                        rotated.append((await rotator.rotate(key.id))[0])
                    except _Crashed:
                        rotated.append("")
                return names

            revoker._candidates = collect_then_rotate  # type: ignore[method-assign]
            assert (await revoker.revoke(key.id)).disabled
            live = await _live(js, key.id)
            assert live
            assert all(r.disabled for r in live)
            ring = KeyRing(js)
            await ring.start()
            try:
                await _ring_caught_up(ring, js)
                if rotated[0]:
                    with pytest.raises(AuthenticationFailed, match="revoked"):
                        ring.authenticate(rotated[0])
            finally:
                await ring.stop()
        finally:
            await index.stop()


async def test_a_rotation_retiring_a_revoked_record_keeps_the_key_revoked(
    tmp_path: Path,
) -> None:
    """A revoke that reached a rotation's new record N1 and not the key's record L (it
    stopped, or raced): the next rotation starts from L, not revoked, and retires N1 to its
    own record, which kept the key working. The new record is now revoked too."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        gateway = KeyAdmin(js, names=True)
        _, key = await gateway.create("half-revoked")
        pending = new_api_key()
        n1 = msgspec.structs.replace(
            key, hash=hash_key(pending), hint=pending[-4:], rotated_at=time.time(), disabled=True
        )
        await (await gateway._bucket()).create(record_name(n1.hash), KEY_ENCODER.encode(n1))
        secret, rotated = await gateway.rotate(key.id)
        assert rotated.disabled
        live = await _live(js, key.id)
        assert [(r.hash, r.disabled) for r in live] == [(hash_key(secret), True)]
        ring = KeyRing(js)
        await ring.start()
        try:
            await _ring_caught_up(ring, js)
            with pytest.raises(AuthenticationFailed, match="revoked"):
                ring.authenticate(secret)
        finally:
            await ring.stop()
