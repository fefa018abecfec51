"""Rotation's pure parts: an old secret's retired record leads to the key's current one (and
stops at its own expiry); the gateway's index and an edge's key copy keep the key, once, at
its new record; the grace and ``--grace`` checks."""

from __future__ import annotations

import collections
import time
from typing import Any

import msgspec
import pytest

from switchyard.admin.key_index import KeyIndex
from switchyard.admin.key_rotation import RotateBody
from switchyard.admin.keys import MAX_GRACE_S, _grace
from switchyard.admin.keys_cli import grace_seconds
from switchyard.errors import AuthenticationFailed, InputError
from switchyard.ingress.keyring import KeyRing
from switchyard.schemas.keys import KEY_ENCODER, ClientKey, current_key, hash_key

pytestmark = pytest.mark.unit

OLD, NEW, NEWER = "sk-sy-old", "sk-sy-new", "sk-sy-newer"


def _key(secret: str, **fields: Any) -> ClientKey:
    return ClientKey(id="key_00000000000000aa", hash=hash_key(secret), name="rot", **fields)


def _retired(secret: str, successor: str, ends: float) -> ClientKey:
    return _key(secret, successor=hash_key(successor), expires_at=ends)


def test_an_old_secret_leads_to_the_current_record_until_its_grace_ends() -> None:
    now = time.time()
    current = _key(NEWER, rpm=7)
    records = {
        hash_key(OLD): _retired(OLD, NEW, now + 60),
        hash_key(NEW): _retired(NEW, NEWER, now + 60),  # rotated twice
        hash_key(NEWER): current,
    }
    assert current_key(records[hash_key(OLD)], records.get) == current
    records[hash_key(OLD)] = _retired(OLD, NEW, now - 1)  # its grace ended
    with pytest.raises(AuthenticationFailed, match="rotated"):
        current_key(records[hash_key(OLD)], records.get)
    # A batch made with the old secret runs on as the key's (no grace asked).
    assert current_key(records[hash_key(OLD)], records.get, grace=False) == current
    del records[hash_key(NEWER)]  # deleted: nothing to lead to
    assert current_key(records[hash_key(NEW)], records.get) is None


def test_the_index_keeps_a_rotated_key_once_at_its_new_record() -> None:
    """The retired record was listed as a second key, and its rewrite dropped the id's
    mapping to the new record (the key's page and every change by id said 404)."""
    index = KeyIndex.__new__(KeyIndex)  # no bucket: feed entries by hand
    KeyIndex.__init__(index, js=None)  # type: ignore[arg-type]
    old, new = f"k.{hash_key(OLD)}", f"k.{hash_key(NEW)}"
    index._on_entry(old, KEY_ENCODER.encode(_key(OLD)), 1)
    index._on_entry(new, KEY_ENCODER.encode(_key(NEW)), 2)
    index._on_entry(old, KEY_ENCODER.encode(_retired(OLD, NEW, time.time())), 3)
    assert index.record_name("key_00000000000000aa") == new
    assert [k.hash for k in index.search().keys] == [hash_key(NEW)]
    assert index.retired("key_00000000000000aa") == [old]
    index._on_entry(old, None, 4)  # purged
    assert index.retired("key_00000000000000aa") == []
    assert index.record_name("key_00000000000000aa") == new


def test_two_rotations_at_once_leave_the_id_at_the_winners_record() -> None:
    """Each rotation creates its new record; the one whose compare-and-set fails purges its
    own, and the id went with it (the winner's record was live: every change by id 404)."""
    index = KeyIndex.__new__(KeyIndex)
    KeyIndex.__init__(index, js=None)  # type: ignore[arg-type]
    old, won, lost = (f"k.{hash_key(s)}" for s in (OLD, NEW, NEWER))
    index._on_entry(old, KEY_ENCODER.encode(_key(OLD)), 1)
    index._on_entry(won, KEY_ENCODER.encode(_key(NEW)), 2)
    index._on_entry(lost, KEY_ENCODER.encode(_key(NEWER)), 3)
    index._on_entry(old, KEY_ENCODER.encode(_retired(OLD, NEW, time.time())), 4)
    index._on_entry(lost, None, 5)  # the loser's compare-and-set failed: it purges its record
    assert index.record_name("key_00000000000000aa") == won
    assert [k.hash for k in index.search().keys] == [hash_key(NEW)]
    index._on_entry(won, None, 6)  # deleted: nothing holds the id
    assert index.record_name("key_00000000000000aa") is None
    assert index._also == {}


def test_an_edge_takes_the_old_secret_as_the_key_and_purging_it_ends_nothing() -> None:
    refused: list[str] = []
    ring: Any = KeyRing.__new__(KeyRing)  # the copy alone: no bucket to follow
    ring._by_hash, ring._revisions, ring._deleted = {}, {}, collections.deque()
    ring._live = collections.Counter()
    ring._on_refused = lambda key_id, _error: refused.append(key_id)
    ring._apply(hash_key(OLD), KEY_ENCODER.encode(_key(OLD)), 1)
    ring._apply(hash_key(NEW), KEY_ENCODER.encode(_key(NEW, rpm=5)), 2)
    retired = _retired(OLD, NEW, time.time() + 60)
    ring._apply(hash_key(OLD), KEY_ENCODER.encode(retired), 3)
    assert ring.authenticate(OLD).rpm == 5  # in its grace: the key as it is now
    ring._apply(hash_key(OLD), None, 4)  # an old secret's record purged
    assert refused == []  # the key lives on: its requests are not ended
    ring._apply(hash_key(NEW), KEY_ENCODER.encode(_key(NEW, disabled=True)), 5)
    assert refused == ["key_00000000000000aa"]


def test_an_edge_ends_nothing_when_one_of_two_live_records_of_a_key_goes() -> None:
    """A rotation that lost its race (from a gateway before it retired its new record
    first) purges a live record while the key's other one lives: every edge ended the key's
    requests in flight ("This API key has been deleted"). Only the last live record's
    deletion is the key's."""
    refused: list[str] = []
    ring: Any = KeyRing.__new__(KeyRing)
    ring._by_hash, ring._revisions, ring._deleted = {}, {}, collections.deque()
    ring._live = collections.Counter()
    ring._on_refused = lambda key_id, _error: refused.append(key_id)
    ring._apply(hash_key(OLD), KEY_ENCODER.encode(_key(OLD)), 1)
    ring._apply(hash_key(NEW), KEY_ENCODER.encode(_key(NEW)), 2)  # the loser's new record
    ring._apply(hash_key(OLD), KEY_ENCODER.encode(_key(OLD, rpm=7)), 3)  # the edit that won
    ring._apply(hash_key(NEW), None, 4)  # purged, live: the key's other record lives
    assert refused == []
    assert ring.authenticate(OLD).rpm == 7
    ring._apply(hash_key(OLD), None, 5)  # the key deleted
    assert refused == ["key_00000000000000aa"]


def test_grace_is_0_to_a_day() -> None:
    assert _grace(0) == 0
    assert _grace(MAX_GRACE_S) == MAX_GRACE_S
    for bad in (-1, MAX_GRACE_S + 1, float("nan"), float("inf"), True):
        with pytest.raises(InputError):
            _grace(bad)
    assert grace_seconds("90") == 90
    assert grace_seconds("1h") == 3600
    assert grace_seconds("1d") == MAX_GRACE_S
    with pytest.raises(InputError):
        grace_seconds("soon")
    assert msgspec.json.decode(b"{}", type=RotateBody).grace_seconds == 0
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"grace_seconds": 86401}', type=RotateBody)
