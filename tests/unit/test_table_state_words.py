"""A route-table write's reply carries the audit words of what it replaced (``change_words``)
without a new wire level: older readers ignore the field, and older replies lack it."""

from __future__ import annotations

import msgspec

from switchyard.schemas import control as wire
from switchyard.schemas.routing import RouteTable


class _OlderTableState(msgspec.Struct, frozen=True, kw_only=True):
    """The reply as a reader before the field decodes it."""

    revision: int
    table: dict[str, object]
    changed: bool | None = None


def test_change_words_travel_and_older_readers_ignore_them() -> None:
    reply = wire.ENCODER.encode(
        wire.TableState(revision=3, table=RouteTable(), changed=True, change_words="revision 3")
    )
    assert wire.TABLE_STATE.decode(reply).change_words == "revision 3"
    assert msgspec.json.decode(reply, type=_OlderTableState).revision == 3
    older = b'{"revision": 3, "table": {}, "changed": true}'
    assert wire.TABLE_STATE.decode(older).change_words is None
    read = wire.ENCODER.encode(wire.TableState(revision=3, table=RouteTable()))
    assert b"change_words" not in read  # a read (and an answer without words) leaves it out
