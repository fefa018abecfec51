"""An edge's key copy forgets deleted keys a while after their deletion (it kept every deleted
key's revision for the life of the process), and a late read still cannot bring one back."""

from __future__ import annotations

import collections
import time
from typing import Any

import pytest

from switchyard.ingress.keyring import FORGET_DELETED_S, KeyRing
from switchyard.schemas.keys import KEY_ENCODER, ClientKey


def _record(n: int) -> bytes:
    return KEY_ENCODER.encode(ClientKey(id=f"key_{n}", hash=f"h{n}", name=f"k{n}"))


def test_deleted_keys_are_forgotten_after_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    ring: Any = KeyRing.__new__(KeyRing)  # the copy alone: no bucket to follow
    ring._by_hash, ring._revisions, ring._on_refused = {}, {}, None
    ring._deleted, ring._live = collections.deque(), collections.Counter()
    for n in range(100):
        ring._apply(f"h{n}", _record(n), 2 * n + 1)
        ring._apply(f"h{n}", None, 2 * n + 2)
    assert len(ring._revisions) == 100  # within the window: a late read must not revive them
    ring._apply("h7", _record(7), 3)  # a lookup that read the record before its delete
    assert "h7" not in ring._by_hash

    ring._apply("h5", _record(5), 500)  # created again (a later revision) within the window
    clock[0] += FORGET_DELETED_S + 1
    ring._apply("h200", _record(200), 601)
    ring._apply("h200", None, 602)  # the next deletion sweeps the old ones out
    assert set(ring._revisions) == {"h5", "h200"}
    assert set(ring._by_hash) == {"h5"}
