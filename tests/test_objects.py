"""Reading a JetStream object chunk by chunk (``runtime.objects``), on a real nats-server."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from switchyard.errors import BusError
from switchyard.runtime.objects import open_object
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


async def test_an_object_missing_chunks_fails_its_digest(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        store = await js.create_object_store("files")
        info = await store.put("torn", os.urandom(4 * CHUNK))
        # Lose all but the last chunk, as a damaged stream would.
        await js.purge_stream("OBJ_files", subject=f"$O.files.C.{info.nuid}", keep=1)
        found = await open_object(js, store, "torn")
        assert found is not None
        with pytest.raises(BusError, match="does not match its digest"):
            await found.read()
