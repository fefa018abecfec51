"""Listing the web app's sessions and ending every one of a role, without the gateway:
which sessions end, that their open streams stop, and what a listed session shows."""

from __future__ import annotations

import time

import pytest

from switchyard.admin.session_list import reach, session_doc
from switchyard.admin.ui.sessions import SessionStore

pytestmark = pytest.mark.unit


async def test_ending_a_role_ends_its_sessions_only_and_stops_their_streams() -> None:
    store = SessionStore(idle_s=60, absolute_s=3600)
    admin_id, admin = await store.create("ada", "10.0.0.1")
    reader_ids = [await store.create(f"rita-{i}", "10.0.0.2", read_only=True) for i in range(3)]
    expired_id, expired = await store.create("old", "10.0.0.3", read_only=True)
    expired.last_seen = time.time() - 61
    assert store.live() == [admin] + [s for _, s in reader_ids]  # oldest sign-in first
    assert await store.end_all(read_only=True) == 3  # the expired one was not live
    for sid, session in reader_ids:
        assert session.ended  # an open live stream checks this and stops
        assert await store.get(sid) is None
    assert await store.get(admin_id) is admin
    assert store.live() == [admin]
    assert await store.end_all(read_only=True) == 0
    assert await store.end_all(read_only=False) == 1
    assert admin.ended
    assert await store.get(admin_id) is None
    assert await store.get(expired_id) is None


async def test_a_listed_session_shows_no_cookie_nor_digest() -> None:
    store = SessionStore()
    sid, session = await store.create("ada", "10.0.0.1", read_only=True)
    doc = session_doc(session)
    assert doc == {
        "role": "read-only",
        "name": "ada",
        "address": "10.0.0.1",
        "signed_in_at": session.created,
        "last_seen_at": session.last_seen,
    }
    assert session.csrf not in str(doc)
    assert sid not in str(doc)


async def test_a_sign_out_says_where_it_reached() -> None:
    """A replica that could not follow the sessions bucket ran alone, yet its sign-out
    everywhere was audited as "ended on every gateway replica"."""
    store = SessionStore()  # no bucket attached: this process's only
    assert not store.shared
    assert reach(store.shared).startswith("on this gateway replica only")
    assert reach(True) == "on every gateway replica"
