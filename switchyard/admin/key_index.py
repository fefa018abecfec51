"""Every client key in memory, following the key bucket: search and pages without a KV scan.

A gateway with 100,000 keys answers the Keys page from this index instead of reading every KV
entry per request, which is how peers' key pages fall over at scale. Keys are kept sorted by
creation time as they arrive (new keys append), so a page is a slice; a search runs ``str.find``
over one joined lowercase text of every key (rebuilt lazily after changes), so it costs a few
milliseconds of C-speed scanning rather than a Python loop over 100,000 records. It follows the
bucket live (:class:`~switchyard.runtime.kvwatch.KvFollower`), so a key created or revoked on any
replica or from the CLI is listed here within milliseconds; it also maps a key id to its record
name, so one key is found without a scan. The records rotation leaves at a key's old secrets
(``successor`` set) are not keys of their own: they are kept aside, by key id, for deleting.

A record that does not decode is left out of the pages and listed by :meth:`KeyIndex.damaged`
(with the key id its bytes name, else the id its last readable revision had), and its id
still maps to its record name, so the admin can revoke it.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass

from nats.js import JetStreamContext

from switchyard.bus import subjects
from switchyard.runtime.kvwatch import KvFollower
from switchyard.schemas.keys import (
    KEY_DECODER,
    KEY_READ_ERRORS,
    RECORD_PREFIX,
    ClientKey,
    unreadable_key_id,
)

log = logging.getLogger("switchyard.admin.keys")

MAX_PAGE = 500
# Deleted keys whose place in the list is remembered, so a page cursor (``after``) that names
# one still works: a script deleting the keys it pages through names the last one it deleted.
PLACES_KEPT = 10_000
_SEP = "\x1f"  # around the team in a key's search line, so a team filter matches it exactly
_FLAG = "\x1d"  # before a state flag in a key's search line (revoked, expires)


def key_state(key: ClientKey, now: float | None = None) -> str:
    if key.disabled:
        return "revoked"
    return "expired" if key.expired(now) else "active"


@dataclass(frozen=True)
class KeyPage:
    keys: list[ClientKey]  # newest first
    total: int  # matching the filter (the cursor aside)
    count: int  # every key
    more: bool = False  # keys matching the filter come after this page


class _Text:
    """Every key's search line joined into one string, newest first, with line offsets."""

    def __init__(self, lines: list[str]) -> None:
        self.text = "\n".join(lines) + "\n"
        self.starts: list[int] = []
        at = 0
        for line in lines:
            self.starts.append(at)
            at += len(line) + 1

    def matches(self, needle: str) -> list[int]:
        """Line numbers containing ``needle``, in order."""
        found: list[int] = []
        text, starts, pos = self.text, self.starts, 0
        while True:
            pos = text.find(needle, pos)
            if pos < 0:
                return found
            line = bisect.bisect_right(starts, pos) - 1
            found.append(line)
            pos = starts[line + 1] if line + 1 < len(starts) else len(text)


class KeyIndex:
    def __init__(self, js: JetStreamContext) -> None:
        self._records: dict[str, ClientKey] = {}  # record name -> key
        self._by_id: dict[str, str] = {}  # key id -> record name
        # Key id -> its other live records, oldest first: a rotation's new record lives beside
        # the current one until the compare-and-set retires one of them or it is purged.
        self._also: dict[str, list[str]] = {}
        self._sorted: list[tuple[float, str]] = []  # (created_at, record name), oldest first
        self._text: _Text | None = None  # None: changed since last built
        self._teams: list[str] | None = None
        self._damaged: dict[str, str] = {}  # record name -> key id ("" unknown): unreadable
        self._retired: dict[str, str] = {}  # record name -> key id: old secrets (rotation)
        self._places: dict[str, tuple[float, str]] = {}  # deleted key id -> its (created_at, name)
        self._follower = KvFollower(js, subjects.KEYS_BUCKET, self._on_entry, f"{RECORD_PREFIX}>")

    async def start(self) -> None:
        await self._follower.start(timeout=120.0)

    async def stop(self) -> None:
        await self._follower.stop()

    def __len__(self) -> int:
        return len(self._records)

    def _on_entry(self, name: str, value: bytes | None, revision: int) -> None:
        key: ClientKey | None = None
        unreadable = False
        if value is not None:  # an empty value is written, unreadable: not a deletion
            try:
                key = KEY_DECODER.decode(value)
            except KEY_READ_ERRORS:
                unreadable = True
        self._retired.pop(name, None)
        if key is not None and key.successor:  # an old secret's record: not a key of its own
            self._retired[name] = key.id
            key = None
        old = self._records.pop(name, None)
        if old is not None:
            self._release(old.id, name)
        was = self._damaged.pop(name, None)
        if was:
            self._release(was, name)
        if unreadable:
            key_id = unreadable_key_id(value or b"") or (old.id if old else "") or was or ""
            self._damaged[name] = key_id
            if key_id:
                self._hold(key_id, name)  # so it can be revoked
            log.warning(
                "client key record of %s (revision %d) cannot be read; left out of the list",
                key_id or "an unknown key id",
                revision,
            )
        if old is not None and key is None and old.id not in self._by_id:
            self._places[old.id] = (old.created_at, name)  # gone: its place stays a cursor
            if len(self._places) > PLACES_KEPT:
                del self._places[next(iter(self._places))]
        if old is not None and (key is None or key.created_at != old.created_at):
            where = bisect.bisect_left(self._sorted, (old.created_at, name))
            if where < len(self._sorted) and self._sorted[where] == (old.created_at, name):
                del self._sorted[where]
        if key is not None:
            self._records[name] = key
            self._hold(key.id, name)
            if old is None or key.created_at != old.created_at:
                item = (key.created_at, name)
                if not self._sorted or item >= self._sorted[-1]:
                    self._sorted.append(item)  # the usual case: a new key is the newest
                else:
                    bisect.insort(self._sorted, item)
        self._text = None
        self._teams = None

    def _hold(self, key_id: str, name: str) -> None:
        """``name`` holds ``key_id`` now: the id maps to it, the record it mapped to is kept
        as another of the id's."""
        others = self._also.get(key_id, [])
        if name in others:
            others.remove(name)
        before = self._by_id.get(key_id)
        if before is not None and before != name:
            self._also[key_id] = [*others, before]
        elif not others:
            self._also.pop(key_id, None)
        self._by_id[key_id] = name

    def _release(self, key_id: str, name: str) -> None:
        """``name`` no longer holds ``key_id``: the id maps to its newest other record, if any.

        A rotation whose compare-and-set fails purges the record it had just created, and the
        id mapped to that one: dropping the mapping lost a live key (its page and every change
        by id answered 404) until its record was written again."""
        others = self._also.get(key_id)
        if self._by_id.get(key_id) == name:
            if others:
                self._by_id[key_id] = others.pop()
            else:
                del self._by_id[key_id]
        elif others and name in others:
            others.remove(name)
        if others == []:
            del self._also[key_id]

    @property
    def revision(self) -> int:
        """The last revision of the bucket applied here."""
        return self._follower.revision

    def behind(self, revision: int) -> None:
        """``revision`` was read from the bucket directly: the follower watches again if it
        does not deliver it soon (see :meth:`KvFollower.behind`)."""
        self._follower.behind(revision)

    def record_name(self, key_id: str) -> str | None:
        return self._by_id.get(key_id)

    def live(self, key_id: str) -> list[str]:
        """The record names holding ``key_id`` as a live key (more than one while a rotation
        is under way, or when one left a stray), the one it maps to first."""
        mapped = self._by_id.get(key_id)
        return ([mapped] if mapped else []) + list(self._also.get(key_id, []))

    def retired(self, key_id: str) -> list[str]:
        """The record names of ``key_id``'s old secrets (left by rotations)."""
        return [name for name, owner in self._retired.items() if owner == key_id]

    def named(self, name: str) -> list[ClientKey]:
        """Every key named ``name`` (a walk over the keys: creating a key asks, nothing hot)."""
        return [key for key in self._records.values() if key.name == name]

    def damaged(self) -> list[tuple[str, str]]:
        """(key id or ``""``, record name) of each record that does not decode, by id."""
        return sorted((key_id, name) for name, key_id in self._damaged.items())

    def get(self, key_id: str) -> ClientKey | None:
        name = self._by_id.get(key_id)
        return None if name is None else self._records.get(name)

    def place(self, key_id: str) -> tuple[float, str] | None:
        """Where ``key_id`` is (or was, deleted) in the list, for :meth:`search`'s ``after``;
        None for an id this index never held."""
        record = self.get(key_id)
        if record is not None:
            return record.created_at, self._by_id[key_id]
        return self._places.get(key_id)

    def _newest(self, index: int) -> ClientKey:
        return self._records[self._sorted[len(self._sorted) - 1 - index][1]]

    def _search_text(self) -> _Text:
        if self._text is None:
            lines = []
            for _, name in reversed(self._sorted):
                k = self._records[name]
                flags = (f"{_FLAG}revoked" if k.disabled else "") + (
                    f"{_FLAG}expires" if k.expires_at else ""
                )
                lines.append(
                    f"{k.id} {k.name} {k.owner} ...{k.hint} {_SEP}{k.team}{_SEP}".lower() + flags
                )
            self._text = _Text(lines)
        return self._text

    def search(
        self,
        q: str = "",
        *,
        state: str = "",
        owner: str = "",
        team: str = "",
        name: str = "",
        offset: int = 0,
        limit: int = 50,
        after: tuple[float, str] | None = None,
    ) -> KeyPage:
        """Keys matching ``q`` (a substring of id, name, owner, team or last four characters),
        newest first; ``owner`` and ``team`` match the whole value (a script picking one
        person's keys must not get ``malice@x``'s with ``alice@x``'s), ``owner`` letter case
        aside (an address), ``team`` exactly, as spend, fair shares and Batch files count
        teams: ``Alpha`` is not ``alpha`` (the filter was case-blind while spend grouped them
        apart, so the keys listed for a team did not add up to its spend row). ``name`` matches
        the whole name as stored, as ``keys show NAME`` does: a script finds its key by name.

        ``after`` (a :meth:`place`) starts the page at the first older key: a cursor that keys
        created or deleted meanwhile do not move, as they move an ``offset``."""
        limit = max(1, min(limit, MAX_PAGE))
        count = len(self._sorted)
        # Lines (newest first) before ``first`` are the cursor's key and newer ones.
        first = count - bisect.bisect_left(self._sorted, after) if after else 0
        offset = first + max(0, offset)
        needle = q.strip().lower().replace("\n", " ")
        if not (needle or state or owner or team or name):
            picked = range(offset, min(offset + limit, count))
            more = offset + limit < count
            return KeyPage([self._newest(i) for i in picked], count, count, more)
        text = self._search_text()
        exact_team = f"{_SEP}{team.lower()}{_SEP}" if team else ""
        if needle:
            lines = text.matches(needle)
            if exact_team:
                lines = [i for i in lines if exact_team in self._line(text, i)]
        elif exact_team:
            lines = text.matches(exact_team)
        elif owner:  # the keys whose line has it somewhere; the exact match is checked below
            lines = text.matches(owner.lower())
        elif name:  # likewise
            lines = text.matches(name.lower())
        elif state in ("revoked", "expired"):
            lines = sorted(self._in_state(text, None, state))
        else:
            lines = list(range(count))
        if team:  # the text is lower case: the exact spelling is checked here
            lines = [i for i in lines if self._newest(i).team == team]
        if owner:
            wanted = owner.lower()
            lines = [i for i in lines if self._newest(i).owner.lower() == wanted]
        if name:
            lines = [i for i in lines if self._newest(i).name == name]
        if state and (needle or exact_team or owner or name or state == "active"):
            lines = self._in_state(text, lines, state)
        start = bisect.bisect_left(lines, first) + offset - first  # (``lines`` is in order)
        page = [self._newest(i) for i in lines[start : start + limit]]
        return KeyPage(page, len(lines), count, start + limit < len(lines))

    def _in_state(self, text: _Text, lines: list[int] | None, state: str) -> list[int]:
        """``lines`` narrowed to keys in ``state``, using the flags in the text (few keys are
        revoked or expire, so this never walks every key in Python)."""
        revoked = set(text.matches(f"{_FLAG}revoked"))
        expiring = text.matches(f"{_FLAG}expires")
        expired = {i for i in expiring if i not in revoked and self._newest(i).expired()}
        if state == "revoked":
            return list(revoked) if lines is None else [i for i in lines if i in revoked]
        if state == "expired":
            return list(expired) if lines is None else [i for i in lines if i in expired]
        if state == "active" and lines is not None:
            return [i for i in lines if i not in revoked and i not in expired]
        return []

    @staticmethod
    def _line(text: _Text, i: int) -> str:
        end = text.starts[i + 1] if i + 1 < len(text.starts) else len(text.text)
        return text.text[text.starts[i] : end]

    def teams(self) -> list[str]:
        if self._teams is None:
            self._teams = sorted({k.team for k in self._records.values() if k.team})
        return self._teams
