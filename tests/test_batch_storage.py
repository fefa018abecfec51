"""The Batch API's storage limits on a real nats-server: the files store's cap (a full store
refuses a file and still deletes one), ``switchyard provision`` applying the cap to a store
made without one, and a tenant's quota held for uploads under way (``ingress.filequota``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import pytest
import pytest_asyncio
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import APIError, ObjectNotFoundError

from switchyard.bus import subjects
from switchyard.config import Settings, load_settings
from switchyard.errors import InvalidRequest, ServiceUnavailable
from switchyard.ingress.filequota import FileQuota
from switchyard.runtime.batchstore import BatchStore
from switchyard.runtime.definitions import files_store_config
from switchyard.runtime.objects import chunks_subject, stream_of
from switchyard.schemas import batches as b
from switchyard.stack.provision import provision_client
from tests.support import jetstream_server

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
STREAM = stream_of(subjects.FILES_BUCKET)


class Stored(NamedTuple):
    store: BatchStore
    js: JetStreamContext
    settings: Settings


def _settings(tmp_path: Path, **batch: int) -> Settings:
    overrides = {"home": str(tmp_path / "home"), "batch": {"max_file_bytes": 1024, **batch}}
    return load_settings(None, env={}, overrides=overrides)


@pytest_asyncio.fixture
async def capped(tmp_path: Path) -> AsyncIterator[Stored]:
    """A files store as provisioned, capped at 1 MiB."""
    settings = _settings(tmp_path, files_max_bytes=MIB)
    async with jetstream_server(tmp_path / "js") as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.BATCHES_BUCKET)
        await js.create_object_store(subjects.FILES_BUCKET, config=files_store_config(settings))
        yield Stored(BatchStore(nc), js, settings)


def _record(file_id: str, owner: str, size: int) -> b.FileRecord:
    file = b.FileObject(
        id=file_id, bytes=size, created_at=1_700_000_000, filename="in.jsonl", purpose="batch"
    )
    return b.FileRecord(file=file, owner=owner)


async def _put(store: BatchStore, file_id: str, owner: str, size: int) -> None:
    await store.put_file(_record(file_id, owner, size), b"x" * size)


async def _fill(js: JetStreamContext) -> None:
    """Take the store's last bytes with chunks no file names, down to the last few: a store
    with no room even for a delete's "deleted" entry."""
    size = MIB
    while True:
        try:
            await js.publish(chunks_subject(subjects.FILES_BUCKET, "filler"), b"f" * size)
        except APIError:
            if size == 0:
                return
            size //= 2


async def _has_object(js: JetStreamContext, file_id: str) -> bool:
    store = await js.object_store(subjects.FILES_BUCKET)
    with contextlib.suppress(ObjectNotFoundError):
        await store.get_info(file_id, show_deleted=True)
        return True
    return False


async def test_a_full_files_store_refuses_a_file_and_deleting_one_makes_room(
    capped: Stored,
) -> None:
    store, js, _ = capped
    await _put(store, "file-a", "team-a", 600_000)
    with pytest.raises(ServiceUnavailable) as info:
        await _put(store, "file-b", "team-a", 600_000)
    assert info.value.status == 503
    assert info.value.code == "file_storage_full"
    assert "delete files you no longer need" in info.value.message
    assert not await _has_object(js, "file-b")
    assert await store.file("file-b", "team-a") is None
    assert await store.room() == MIB - (await js.stream_info(STREAM)).state.bytes

    await _fill(js)
    assert (await store.room() or 0) < 100  # a delete's "deleted" entry takes ~200
    await store.delete_file("file-a", "team-a")  # needs no room
    assert not await _has_object(js, "file-a")
    assert await store.file("file-a", "team-a") is None
    await _put(store, "file-c", "team-a", 500_000)
    assert (await store.usage("team-a", 1_700_000_001)).size == 500_000


async def test_provision_caps_a_files_store_made_without_a_cap(tmp_path: Path) -> None:
    """Earlier builds made the files store without a cap; provisioning again applies it (and
    a changed one), keeping what is stored."""
    async with jetstream_server(tmp_path / "js") as (nc, _):
        js = nc.jetstream(timeout=10)
        old = js_api.ObjectStoreConfig(subjects.FILES_BUCKET, storage=js_api.StorageType.FILE)
        objects = await js.create_object_store(subjects.FILES_BUCKET, config=old)
        await objects.put("file-old", b"kept")
        assert (await js.stream_info(STREAM)).config.max_bytes == -1

        await provision_client(nc, _settings(tmp_path, files_max_bytes=64 * MIB))
        assert (await js.stream_info(STREAM)).config.max_bytes == 64 * MIB
        await provision_client(nc, _settings(tmp_path, files_max_bytes=32 * MIB))
        assert (await js.stream_info(STREAM)).config.max_bytes == 32 * MIB
        assert (await objects.get("file-old")).data == b"kept"


async def test_a_tenants_quota_counts_its_files_and_the_uploads_under_way(capped: Stored) -> None:
    store, _, _ = capped
    quota = FileQuota(max_bytes=100_000, max_files=3)
    async with quota.holding("team-a", 60_000, store):
        # Another upload of the same tenant while the first is being stored: refused, though
        # nothing is stored yet.
        with pytest.raises(InvalidRequest, match="at most 100000 bytes") as info:
            async with quota.holding("team-a", 60_000, store):
                pass
        assert info.value.code == "storage_quota_exceeded"
        assert "DELETE /v1/files/{file_id}" in info.value.message
        async with quota.holding("team-b", 60_000, store):  # another tenant's own quota
            await _put(store, "file-b1", "team-b", 60_000)
        await _put(store, "file-a1", "team-a", 60_000)
    with pytest.raises(InvalidRequest, match="at least 50000 bytes"):
        await quota.precheck("team-a", store, 50_000)  # its record counts now
    await quota.precheck("team-a", store, 40_000)
    await store.delete_file("file-a1", "team-a")
    await quota.precheck("team-a", store, 90_000)

    for n in range(3):
        async with quota.holding("team-c", 10, store):
            await _put(store, f"file-c{n}", "team-c", 10)
    with pytest.raises(InvalidRequest, match="at most 3 files, and you have 3"):
        await quota.precheck("team-c", store, 0)


async def test_a_file_past_the_stores_room_is_refused_before_it_is_stored(capped: Stored) -> None:
    store, _, _ = capped
    quota = FileQuota(max_bytes=10 * MIB, max_files=10)
    with pytest.raises(ServiceUnavailable, match="file storage is full"):
        async with quota.holding("team-a", 2 * MIB, store):
            pytest.fail("held room the store does not have")
