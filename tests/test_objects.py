"""Reading and writing a JetStream object chunk by chunk (``runtime.objects``), on a real
nats-server."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from switchyard.errors import BusError, ObjectGone
from switchyard.runtime.objects import (
    ObjectWriter,
    open_object,
    purge_dead_chunks,
    stream_subjects,
)
from tests.support import jetstream_server

pytestmark = pytest.mark.integration

CHUNK = 128 * 1024  # nats-py's chunk size when it stores an object


async def test_an_object_arrives_in_its_chunks_and_whole(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        store = await js.create_object_store("files")
        data = os.urandom(10 * CHUNK + 123)
        await store.put("big", data)
        found = await open_object(js, store, "big")
        assert found is not None
        assert found.size == len(data)
        chunks = [chunk async for chunk in found.chunks]
        # Handed over as stored, never gathered first: a response can stream them.
        assert [len(c) for c in chunks] == [CHUNK] * 10 + [123]
        assert b"".join(chunks) == data
        again = await open_object(js, store, "big")
        assert again is not None
        assert hashlib.sha256(await again.read()).digest() == hashlib.sha256(data).digest()


async def test_missing_deleted_and_empty_objects(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        store = await js.create_object_store("files")
        assert await open_object(js, store, "never-stored") is None
        await store.put("gone", b"some bytes")
        await store.delete("gone")
        assert await open_object(js, store, "gone") is None
        await store.put("empty", b"")
        empty = await open_object(js, store, "empty")
        assert empty is not None
        assert (empty.size, await empty.read()) == (0, b"")


async def test_an_object_missing_or_changed_chunks_fails_to_read(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        store = await js.create_object_store("files")
        info = await store.put("torn", os.urandom(4 * CHUNK))
        subject = f"$O.files.C.{info.nuid}"
        # Lose all but the last chunk, as a damaged stream would.
        await js.purge_stream("OBJ_files", subject=subject, keep=1)
        found = await open_object(js, store, "torn")
        assert found is not None
        with pytest.raises(BusError, match="missing chunks"):
            await found.read()
        # As many chunks as the record says, but not the bytes it was stored with.
        for _ in range(3):
            await js.publish(subject, os.urandom(CHUNK))
        changed = await open_object(js, store, "torn")
        assert changed is not None
        with pytest.raises(BusError, match="does not match its digest"):
            await changed.read()


async def _chunks_stored(js: JetStreamContext, bucket: str) -> int:
    """Chunks in the bucket, of every object."""
    info = await js.stream_info(f"OBJ_{bucket}", subjects_filter=f"$O.{bucket}.C.>")
    return sum((info.state.subjects or {}).values())


async def test_an_object_written_piece_by_piece_reads_back_like_a_put(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        store = await js.create_object_store("files")
        rows = [os.urandom(1000 + i) for i in range(700)]  # ~1 MB in uneven pieces
        data = b"".join(rows)
        writer = ObjectWriter(js, store, "files", "out")
        for row in rows:
            await writer.write(row)
        # Nothing visible until closed; only whole chunks were sent so far.
        assert await open_object(js, store, "out") is None
        assert await _chunks_stored(js, "files") == len(data) // CHUNK
        assert await writer.close() == len(data)
        assert (await store.get("out")).data == data  # nats-py reads it as its own
        found = await open_object(js, store, "out")
        assert found is not None
        assert [len(c) async for c in found.chunks][:-1] == [CHUNK] * (len(data) // CHUNK)
        info = await store.get_info("out")
        assert (info.size, info.chunks) == (len(data), len(data) // CHUNK + 1)


async def test_writing_an_object_again_replaces_it_and_its_chunks(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        store = await js.create_object_store("files")
        await store.put("out", os.urandom(3 * CHUNK))
        writer = ObjectWriter(js, store, "files", "out")
        await writer.write(b"second")
        await writer.close()
        assert (await store.get("out")).data == b"second"
        assert await _chunks_stored(js, "files") == 1  # the first version's 3 are gone
        empty = ObjectWriter(js, store, "files", "out")
        assert await empty.close() == 0
        assert (await store.get("out")).data == b""
        assert await _chunks_stored(js, "files") == 0


async def test_an_aborted_object_leaves_nothing_and_keeps_the_one_before(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        store = await js.create_object_store("files")
        await store.put("out", b"kept")
        writer = ObjectWriter(js, store, "files", "out")
        await writer.write(os.urandom(2 * CHUNK + 5))
        await writer.abort()
        assert (await store.get("out")).data == b"kept"
        assert await _chunks_stored(js, "files") == 1
        stored = ObjectWriter(js, store, "files", "new")
        await stored.write(b"done")
        await stored.close()
        await stored.abort()  # too late: a stored object stays
        assert (await store.get("new")).data == b"done"


async def test_chunks_a_killed_writer_left_are_purged_once_old(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        store = await js.create_object_store("files")
        assert await purge_dead_chunks(nc, js, store, "files", time.time()) == 0  # nothing at all
        # A writer that died before its record: chunks nobody names (two objects' worth).
        for name in ("killed", "killed-too"):
            dead = ObjectWriter(js, store, "files", name)
            await dead.write(os.urandom(2 * CHUNK + 7))
        assert await purge_dead_chunks(nc, js, store, "files", time.time() + 7200) == 2
        assert await _chunks_stored(js, "files") == 0
        # Live objects (ours, nats-py's, an empty one) and a deleted one around a dead write.
        kept = ObjectWriter(js, store, "files", "kept")
        await kept.write(os.urandom(3 * CHUNK))
        await kept.close()
        await store.put("put", b"by nats-py")
        await store.put("gone", b"deleted")
        await store.delete("gone")
        dead = ObjectWriter(js, store, "files", "dead")
        await dead.write(os.urandom(CHUNK))
        live_chunks = 3 + 1
        # Young chunks are a write that may still be going on: left alone.
        assert await purge_dead_chunks(nc, js, store, "files", time.time()) == 0
        assert await _chunks_stored(js, "files") == live_chunks + 1
        assert await purge_dead_chunks(nc, js, store, "files", time.time() + 7200) == 1
        assert await _chunks_stored(js, "files") == live_chunks
        kept_found = await open_object(js, store, "kept")
        assert kept_found is not None
        assert len(await kept_found.read()) == 3 * CHUNK
        assert (await store.get("put")).data == b"by nats-py"


async def test_an_object_read_on_demand_fetches_each_chunk_when_asked(tmp_path: Path) -> None:
    """The batch runner reads an input file as its lines go out, pausing for minutes: each
    chunk is fetched when the reader asks for it, so nothing waits in memory meanwhile."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        store = await js.create_object_store("files")
        data = os.urandom(5 * CHUNK + 9)
        await store.put("input", data)
        await store.put("other", os.urandom(2 * CHUNK))  # chunks of another object between
        found = await open_object(
            js,
            store,
            "input",
        )
        assert found is not None
        chunks = aiter(found.chunks)
        first = await anext(chunks)
        # No consumer pushing the rest ahead of the reader: each chunk is asked for.
        assert (await js.stream_info("OBJ_files")).state.consumer_count == 0
        assert first == data[:CHUNK]
        rest = [chunk async for chunk in chunks]
        assert b"".join([first, *rest]) == data
        assert (
            await open_object(
                js,
                store,
                "missing",
            )
            is None
        )
        info = await store.get_info("input")
        await js.purge_stream("OBJ_files", subject=f"$O.files.C.{info.nuid}", keep=2)
        torn = await open_object(
            js,
            store,
            "input",
        )
        assert torn is not None
        with pytest.raises(BusError, match="missing chunks"):
            await torn.read()


async def test_an_object_deleted_or_replaced_while_read_is_gone_not_damaged(
    tmp_path: Path,
) -> None:
    """A delete that lands part of the way through a read (a download, the runner reading an
    input) is told apart from storage damage: the caller answers "no such file", not
    "damaged"."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        store = await js.create_object_store("files")
        for ending in ("delete", "replace"):
            await store.put("file", os.urandom(3 * CHUNK))
            found = await open_object(js, store, "file")
            assert found is not None
            chunks = aiter(found.chunks)
            await anext(chunks)
            if ending == "delete":
                await store.delete("file")
            else:
                await store.put("file", b"another version")
            # The second chunk may have been fetched before the change (one chunk is read
            # ahead); the third cannot have been.
            with pytest.raises(ObjectGone):
                await _read_rest(chunks)


async def _read_rest(chunks: AsyncIterator[bytes]) -> int:
    return sum([len(chunk) async for chunk in chunks])


async def test_stream_subjects_reads_past_the_servers_page_of_100000(tmp_path: Path) -> None:
    """The sweep reads the files store's subjects; nats-server sends at most 100,000 a time."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.add_stream(name="WIDE", subjects=["w.>"])
        count = 100_000 + 3
        for i in range(count):
            await nc.publish(f"w.{i}", b"x")
        await nc.flush()
        for _ in range(300):
            info = await js.stream_info("WIDE")
            if info.state.messages == count:
                break
            await asyncio.sleep(0.1)
        assert info.state.messages == count
        first_page = (await js.stream_info("WIDE", subjects_filter="w.>")).state.subjects or {}
        assert len(first_page) == 100_000  # what nats-py alone reads
        found = await stream_subjects(nc, "WIDE", "w.>")
        assert found == {f"w.{i}": 1 for i in range(count)}
        assert await stream_subjects(nc, "WIDE", "w.7") == {"w.7": 1}
        assert await stream_subjects(nc, "WIDE", "nothing.>") == {}
        with pytest.raises(NotFoundError):
            await stream_subjects(nc, "NO_SUCH_STREAM", ">")
        # A subject that sorts first, added between two pages, shifts the list by one: the
        # read still ends (it once asked for the same page for ever), close to the truth.
        between = _WritesBetweenPages(nc, "w.00")
        found = await stream_subjects(cast(NATS, between), "WIDE", "w.>")
        assert between.pages == 2
        assert len(found) >= count


class _WritesBetweenPages:
    """A real connection that stores one more subject right after the first page's answer."""

    def __init__(self, nc: NATS, subject: str) -> None:
        self._nc = nc
        self._subject = subject
        self.pages = 0

    async def request(self, subject: str, payload: bytes, timeout: float) -> Msg:
        reply = await self._nc.request(subject, payload, timeout)
        self.pages += 1
        if self.pages == 1:
            await self._nc.jetstream().publish(self._subject, b"x")
        return reply
