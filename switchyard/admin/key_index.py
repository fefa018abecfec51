"""Every client key in memory, following the key bucket: search and pages without a KV scan.

A gateway with 100,000 keys answers the Keys page from this index (a slice of a sorted list,
or one pass over short lowercase strings for a search) instead of reading every KV entry per
request, which is how peers' key pages fall over at scale. It follows the bucket live
(:class:`~switchyard.runtime.kvwatch.KvFollower`), so a key created or revoked on any replica
or from the CLI is listed here within milliseconds; it also maps a key id to its record name,
so one key is found without a scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nats.js import JetStreamContext

from switchyard.bus import subjects
from switchyard.runtime.kvwatch import KvFollower
from switchyard.schemas.keys import KEY_DECODER, RECORD_PREFIX, ClientKey

State = Literal["", "active", "revoked", "expired"]
MAX_PAGE = 500


def key_state(key: ClientKey, now: float | None = None) -> str:
    if key.disabled:
        return "revoked"
    return "expired" if key.expired(now) else "active"


@dataclass(frozen=True)
class KeyPage:
    keys: list[ClientKey]  # newest first
    total: int  # matching the filter
    count: int  # every key


class KeyIndex:
    def __init__(self, js: JetStreamContext) -> None:
        self._records: dict[str, ClientKey] = {}  # record name -> key
        self._text: dict[str, str] = {}  # record name -> lowercase search text
        self._by_id: dict[str, str] = {}  # key id -> record name
        self._order: list[str] | None = None  # record names, newest first (None: stale)
        self._follower = KvFollower(js, subjects.KEYS_BUCKET, self._on_entry, f"{RECORD_PREFIX}>")

    async def start(self) -> None:
        await self._follower.start(timeout=60.0)

    async def stop(self) -> None:
        await self._follower.stop()

    def __len__(self) -> int:
        return len(self._records)

    def _on_entry(self, name: str, value: bytes | None, revision: int) -> None:
        old = self._records.pop(name, None)
        if old is not None:
            self._by_id.pop(old.id, None)
            self._text.pop(name, None)
        if value:
            key = KEY_DECODER.decode(value)
            self._records[name] = key
            self._by_id[key.id] = name
            self._text[name] = f"{key.id} {key.name} {key.owner} {key.team} ...{key.hint}".lower()
        if old is None or value is None or old.created_at != self._records[name].created_at:
            self._order = None

    def record_name(self, key_id: str) -> str | None:
        return self._by_id.get(key_id)

    def get(self, key_id: str) -> ClientKey | None:
        name = self._by_id.get(key_id)
        return None if name is None else self._records.get(name)

    def _ordered(self) -> list[str]:
        if self._order is None:
            self._order = sorted(
                self._records, key=lambda n: (self._records[n].created_at, n), reverse=True
            )
        return self._order

    def search(
        self, q: str = "", *, state: str = "", team: str = "", offset: int = 0, limit: int = 50
    ) -> KeyPage:
        """Keys matching ``q`` (id, name, owner, team or last four characters), newest first."""
        limit = max(1, min(limit, MAX_PAGE))
        offset = max(0, offset)
        order = self._ordered()
        needle = q.strip().lower()
        if not (needle or state or team):
            names = order[offset : offset + limit]
            return KeyPage([self._records[n] for n in names], len(order), len(order))
        picked: list[ClientKey] = []
        total = 0
        for name in order:
            if needle and needle not in self._text[name]:
                continue
            key = self._records[name]
            if team and key.team != team:
                continue
            if state and key_state(key) != state:
                continue
            if offset <= total < offset + limit:
                picked.append(key)
            total += 1
        return KeyPage(picked, total, len(order))

    def teams(self) -> list[str]:
        return sorted({k.team for k in self._records.values() if k.team})
