"""Client key management: create, list, update, revoke (as the admin identity, in CLIENT KV).

The full key exists only in the return value of :meth:`KeyAdmin.create`; the bucket stores its
SHA-256. Every change is a KV write that each ingress applies from its watch.

A record that does not decode (written by hand, or by an older version that let a number
JSON cannot carry through) is never fatal to a reader: a listing leaves it out and says so, and
revoking it rewrites it as a readable, revoked record (an operator can always shut a key);
deleting it works too. Nothing else can be done to it until it is revoked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, NamedTuple, Protocol

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from switchyard.admin.key_damage import DamagedRecord, KeyRecordDamaged, mended, read_record
from switchyard.admin.key_fields import check_team, validated
from switchyard.admin.key_lag import written_since
from switchyard.admin.key_race import newer, retire_or_drop, retired_to, shielded
from switchyard.admin.key_rules import hint
from switchyard.bus import subjects
from switchyard.errors import Conflict, InputError, SwitchyardError
from switchyard.runtime.kvlatest import latest
from switchyard.schemas.keys import (
    KEY_ENCODER,
    KEY_ID,
    RECORD_PREFIX,
    ClientKey,
    hash_key,
    new_api_key,
    new_key_id,
    record_name,
)

log = logging.getLogger("switchyard.admin.keys")

UPDATE_ATTEMPTS = 5
# How long a rotated key's old secret may keep working (a day: enough to roll the new one
# out to many clients; a leaked secret is rotated with none).
MAX_GRACE_S = 86400
_GRACE_HINT = f"give 0 (the old secret stops at once) up to {MAX_GRACE_S} seconds (a day)"
# A retired record (an old secret's) is kept this long after its grace ended, then purged at
# the key's next rotation: a batch made with the old secret names it, and runs on as the key's.
RETIRED_KEEP_S = 7 * 86400


# Records of rotated keys' old secrets, by record name.
Retired = list[tuple[str, ClientKey]]
Names = list[str]


class KeyNotFound(SwitchyardError):
    """No key has this id (or, from the command line, this name)."""

    def __init__(self, key_id: str, problem: str = "") -> None:
        self.problem = problem or f"no key with id `{key_id}`"
        super().__init__(f"{self.problem}\n  see them all with `switchyard keys list`")


class KeyIdTaken(SwitchyardError):
    """A create's chosen key id was taken by another writer (``reserve`` said no)."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"key id `{key_id}` is being written by another create")


class RecordLocator(Protocol):
    """Maps a key id to its record name, and finds keys by name (``KeyIndex`` in the
    gateway). It follows the bucket a moment behind: ``revision`` is the last entry it
    applied, and ``behind`` is told of a revision read from the bucket directly."""

    @property
    def revision(self) -> int: ...

    def record_name(self, key_id: str) -> str | None: ...

    def named(self, name: str) -> list[ClientKey]: ...

    def live(self, key_id: str) -> list[str]: ...

    def retired(self, key_id: str) -> list[str]: ...

    def behind(self, revision: int) -> None: ...


class KeyAdmin:
    """Writes of the key bucket. With a ``locator`` one key is found by id in one KV get;
    without one (the CLI) by reading the bucket."""

    def __init__(
        self, js: JetStreamContext, locator: RecordLocator | None = None, *, names: bool = False
    ) -> None:
        self._js = js
        self._kv: KeyValue | None = None
        self._locator = locator
        # The CLI's: a key may also be given by a name only one key has (people remember the
        # name they gave a key, not its id). Found in the same read of the bucket.
        self._names = names and locator is None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self._js.key_value(subjects.KEYS_BUCKET)
        return self._kv

    async def create(
        self,
        name: str,
        *,
        key_id: str | None = None,
        reserve: Callable[[], Awaitable[bool]] | None = None,
        **fields: Any,
    ) -> tuple[str, ClientKey]:
        """A new key; returns (the API key, shown once, and its record). ``key_id``: the id
        chosen before (an idempotent create reserves it first), else a new one. ``reserve``,
        awaited once the fields are valid, just before the write: False stops it
        (:class:`KeyIdTaken`: another create writes this id; records are kept by hash, so
        the bucket itself would take a second record with the same id)."""
        api_key = new_api_key()
        digest = hash_key(api_key)
        raw = {
            "id": key_id or new_key_id(),
            "hash": digest,
            "name": name,
            "created_at": time.time(),
            "hint": api_key[-4:],
            **validated({**fields, "name": name}),
        }
        check_team(raw, "")
        record = _record(raw)
        kv = await self._bucket()
        if reserve is not None and not await reserve():
            raise KeyIdTaken(record.id)
        await kv.create(record_name(digest), KEY_ENCODER.encode(record))
        return api_key, record

    async def namesakes(self, record: ClientKey) -> list[str]:
        """Ids of the other keys named as ``record`` is, oldest first. Names are labels, so
        two keys may share one; the CLI then needs the id to tell them apart."""
        if self._locator is not None:
            named = self._locator.named(record.name)
        else:
            named = [key for key, _ in (await self.scan()).records if key.name == record.name]
        return [key.id for key in sorted(named, key=lambda k: k.created_at) if key.id != record.id]

    async def scan(self) -> Scan:
        """Every key with its KV revision, oldest first, and the records that do not decode,
        in one read of the bucket."""
        kv = await self._bucket()
        revisions: dict[str, int] = {}
        found = await latest(
            self._js, kv, f"{RECORD_PREFIX}*", revisions=revisions, keep_empty=True
        )
        records: list[tuple[ClientKey, int]] = []
        damaged: list[DamagedRecord] = []
        retired: list[tuple[str, ClientKey]] = []
        for name, raw in found.items():
            read = read_record(name, raw, revisions[name])
            if isinstance(read, DamagedRecord):
                damaged.append(read)
            elif read.successor:
                retired.append((name, read))
            else:
                records.append((read, revisions[name]))
        return Scan(sorted(records, key=lambda r: r[0].created_at), damaged, retired)

    async def _read(self, name: str, key_id: str) -> tuple[ClientKey | DamagedRecord, int] | None:
        """Record ``name`` if it is there and is key ``key_id``'s."""
        try:
            entry = await (await self._bucket()).get(name)
        except KeyNotFoundError:
            return None
        # (an empty value is a damaged record, not a deleted one)
        revision = entry.revision or 0
        read = read_record(name, entry.value or b"", revision, self._known_as(name, key_id))
        if isinstance(read, ClientKey) and read.successor:  # an old secret's (rotation)
            return None
        if (read.key_id if isinstance(read, DamagedRecord) else read.id) == key_id:
            return read, revision
        return None

    def _known_as(self, name: str, key_id: str) -> str:
        """``key_id`` when the index holds record ``name`` as that key's (one that stopped
        decoding keeps the id it had); else "": a record naming no id, found by a scan or as
        written since the index's revision, is no one's (it was taken for the caller's)."""
        locator = self._locator
        known = locator is not None and name in (*locator.live(key_id), *locator.retired(key_id))
        return key_id if known else ""

    async def _lookup(self, key_id: str) -> tuple[ClientKey | DamagedRecord, int]:
        locator = self._locator
        if locator is not None:  # the index follows the bucket live: no scan
            name = locator.record_name(key_id)
            found = await self._read(name, key_id) if name is not None else None
            if found is not None:
                return found
            # Not in the index: maybe written since it last applied an entry (a key made
            # through the API a moment ago). Those records are read before saying 404.
            names = await written_since(self._js, subjects.KEYS_BUCKET, locator.revision)
            for name in reversed(names or []):
                found = await self._read(name, key_id)
                if found is not None:
                    locator.behind(found[1])
                    return found
            if names is not None:
                raise KeyNotFound(key_id)
        scan = await self.scan()  # no index, or one far behind the bucket
        for record, revision in scan.records:
            if record.id == key_id:
                return record, revision
        for damaged in scan.damaged:
            if key_id in (damaged.key_id, damaged.name):
                return damaged, damaged.revision
        if not self._names or KEY_ID.match(key_id):
            raise KeyNotFound(key_id)
        return _named(key_id, scan.records)

    async def list(self) -> list[ClientKey]:
        """Every key that reads (see :meth:`scan` for those that do not)."""
        return [record for record, _ in (await self.scan()).records]

    async def find(self, key_id: str) -> ClientKey:
        """Raises:
        KeyNotFound: no such key.
        KeyRecordDamaged: its record does not decode (revoke or delete it).
        """
        return _readable(*await self._lookup(key_id))[0]

    async def update(self, key_id: str, **changes: Any) -> ClientKey:
        """Apply ``changes`` with compare-and-set, re-reading when another change won the race.

        Raises:
            KeyNotFound: no such key (also when it was deleted meanwhile).
            KeyRecordDamaged: its record does not decode (revoke or delete it).
            InputError: a change is not a setting, or not a value it takes.
            Conflict: still losing races after several attempts.
        """
        return await self._write(key_id, validated(changes))

    async def update_checked(
        self, key_id: str, check: Callable[[ClientKey], None], changes: dict[str, Any]
    ) -> ClientKey:
        """:meth:`update`, with ``check`` seeing the record each write would replace; it
        raises to stop the write (the web form will not save over a record changed since the
        admin opened it). Checked on the read the compare-and-set then guards, so no change
        slips in between."""
        return await self._write(key_id, validated(changes), check=check)

    async def _write(
        self,
        key_id: str,
        validated: dict[str, Any],
        *,
        mend: bool = False,
        check: Callable[[ClientKey], None] | None = None,
    ) -> ClientKey:
        """``validated`` written over the record; with ``mend``, over what can be read of a
        record that does not decode."""
        kv = await self._bucket()
        for _ in range(UPDATE_ATTEMPTS):
            found, revision = await self._lookup(key_id)
            if isinstance(found, DamagedRecord) and mend:
                record, defaulted = mended(found)
                log.warning(
                    "key %s: its unreadable record (%s) is rewritten; %s took their defaults",
                    record.id,
                    found.reason,
                    ", ".join(defaulted) or "no field",
                )
            else:
                record, revision = _readable(found, revision)
            if check is not None:
                check(record)
            check_team(validated, record.team)
            updated = _record({**msgspec.to_builtins(record), **validated})
            try:
                await kv.update(
                    record_name(record.hash), KEY_ENCODER.encode(updated), last=revision
                )
            except KeyWrongLastSequenceError:
                continue

            def also(other: ClientKey | DamagedRecord) -> ClientKey | None:
                if isinstance(other, DamagedRecord):
                    if not mend:
                        return None  # (revoke it)
                    other = mended(other)[0]
                return _record({**msgspec.to_builtins(other), **validated})

            await self._each_live(record.id, record_name(record.hash), also)
            return updated
        raise Conflict(f"key `{key_id}` is changing too fast; try again")

    async def _each_live(
        self,
        key_id: str,
        done: str,
        rewrite: Callable[[ClientKey | DamagedRecord], ClientKey | None],
    ) -> None:
        """Every live record of ``key_id`` but ``done`` rewritten by ``rewrite`` (None: left
        as it is), each by compare-and-set, re-read when it loses. A rotation's new record
        lives beside the key's until the rotation settles, and the index may map the id to
        either: a change made through one is the key's, so it is made on both (a revoke
        written on one only left the other working when that one stayed)."""
        for name in dict.fromkeys(await self._candidates(key_id)):
            if name != done and not await self._rewrite(name, key_id, rewrite):
                raise Conflict(f"key `{key_id}` is changing too fast; try again")

    async def _rewrite(
        self, name: str, key_id: str, rewrite: Callable[[ClientKey | DamagedRecord], Any]
    ) -> bool:
        """:meth:`_each_live` on record ``name``; False: it kept losing races. A record
        retired meanwhile (a rotation won on it) passes the change to the record it names:
        skipped, a revoke answered 200 and the rotation's new record kept the key working."""
        kv = await self._bucket()
        for _ in range(UPDATE_ATTEMPTS):
            found = await self._read(name, key_id)  # (None: gone, or retired, meanwhile)
            if found is None and (old := await self._read_retired(name, key_id)) is not None:
                name = record_name(old.successor)
                continue
            written = rewrite(found[0]) if found is not None else None
            if found is None or written is None:
                return True
            try:
                await kv.update(name, KEY_ENCODER.encode(written), last=found[1])
                return True
            except KeyWrongLastSequenceError:
                continue
        return False

    async def _candidates(self, key_id: str, *, retired: bool = False) -> Names:
        """Names that may hold a record of ``key_id`` (read them to know): the index's live
        ones (and its old secrets', with ``retired``) and every name written since the index
        last applied an entry; without an index, or with one far behind, a scan's."""
        locator = self._locator
        if locator is not None:
            since = await written_since(self._js, subjects.KEYS_BUCKET, locator.revision)
            if since is not None:
                old = locator.retired(key_id) if retired else []
                return [*locator.live(key_id), *old, *since]
        scan = await self.scan()
        names = [record_name(r.hash) for r, _ in scan.records if r.id == key_id]
        names += [d.name for d in scan.damaged if d.key_id == key_id]
        return names + [n for n, r in scan.retired if r.id == key_id and retired]

    async def revoke(self, key_id: str) -> ClientKey:
        """Disable the key everywhere. A record that does not decode is rewritten as a
        readable, revoked one from what can be read of it (every other field at its
        default), so a key can always be shut.

        Raises:
            KeyNotFound: no such key.
        """
        return await self._write(key_id, {"disabled": True}, mend=True)

    async def delete(self, key_id: str) -> None:
        """Remove the key's record (one that does not decode too) and its history: a purge
        leaves one marker where a delete kept every earlier revision (the key's hash and
        settings, up to the bucket's history) for every edge's watch to replay at each start.

        Raises:
            KeyNotFound: no such key.
        """
        found, _ = await self._lookup(key_id)
        if isinstance(found, DamagedRecord):
            name, key_id = found.name, found.key_id
        else:
            name, key_id = record_name(found.hash), found.id
        kv = await self._bucket()
        await kv.purge(name)
        if not key_id:  # a record naming no key id (by its name, from the CLI): it alone
            return
        # Every other record of the key too: its old secrets' (rotations), and every live
        # one (a rotation's new record, whichever the index mapped): one left working was a
        # deleted key that still answered, and the edges end a key's requests only when its
        # last live record goes. Read again until none is left (a rotation racing this).
        for _ in range(UPDATE_ATTEMPTS):
            names = dict.fromkeys(await self._candidates(key_id, retired=True))
            left = [n for n in names if await self._holds(n, key_id)]
            if not left:
                return
            for other in left:
                await kv.purge(other)
        raise Conflict(f"key `{key_id}` is changing too fast; try again")

    async def _holds(self, name: str, key_id: str) -> bool:
        """Whether record ``name`` is one of ``key_id``'s (live, an old secret's, damaged)."""
        try:
            entry = await (await self._bucket()).get(name)
        except KeyNotFoundError:
            return False
        read = read_record(
            name, entry.value or b"", entry.revision or 0, self._known_as(name, key_id)
        )
        return (read.key_id if isinstance(read, DamagedRecord) else read.id) == key_id

    async def rotate(
        self, key_id: str, grace_s: float = 0, check: Callable[[ClientKey], None] | None = None
    ) -> tuple[str, ClientKey]:
        """A new secret for the key; returns (the API key, shown once, and the record).

        The key keeps its id and every setting (its spend and budget are the id's); its
        record moves to the new secret's hash, and the old secret's record is rewritten as a
        retired one naming the new (:attr:`ClientKey.successor`) that stops working at once,
        or ``grace_s`` seconds from now (never past the key's own expiry). A revoked key stays
        revoked. Retired records whose grace ended :data:`RETIRED_KEEP_S` ago are purged.
        ``check`` sees the record as :meth:`update_checked`'s does, and raises to stop.

        Raises:
            KeyNotFound: no such key.
            KeyRecordDamaged: its record does not decode (revoke or delete it).
            InputError: ``grace_s`` is not 0 to :data:`MAX_GRACE_S` seconds.
            Conflict: still losing races with other changes after several attempts.
        """
        grace = _grace(grace_s)
        kv = await self._bucket()
        lost: str | None = None  # the record a lost compare-and-set was on
        for _ in range(UPDATE_ATTEMPTS):
            found = await self._after_race(lost, key_id) if lost else None
            record, revision = await self._oldest(
                *_readable(*(found or await self._lookup(key_id)))
            )
            if check is not None:
                check(record)
            now = time.time()
            api_key = new_api_key()
            digest = hash_key(api_key)
            current = msgspec.structs.replace(
                record, hash=digest, hint=api_key[-4:], rotated_at=now
            )
            ends = min(now + grace, record.expires_at or now + grace)
            retired = msgspec.structs.replace(record, successor=digest, expires_at=ends)
            # The new record first: an edge that applies the retired one finds its successor.
            new = record_name(digest)
            try:
                await kv.create(new, KEY_ENCODER.encode(current))
            except BaseException:  # (a timeout, a cancellation: it may be written)
                await shielded(kv.purge(new))
                raise
            # Compare-and-set (a change made since the read is not lost); N purged when it
            # lost, kept when the outcome is unknown (see key_race).
            lost = record_name(record.hash)
            if not await retire_or_drop(kv, lost, KEY_ENCODER.encode(retired), revision, new):
                continue
            # Any older live record of the key (another rotation's, made through the new
            # record of one that then lost) is retired to this one: one live record stays,
            # revoked when one it retires was (a revoke that reached that one and not L).
            shut: list[bool] = []
            await self._each_live(record.id, new, partial(retired_to, current, now + grace, shut))
            if any(shut) and not current.disabled:
                current = msgspec.structs.replace(current, disabled=True)
                if not await self._rewrite(new, record.id, _revoked):
                    raise Conflict(f"key `{key_id}` is changing too fast; revoke it again")
            for name, old in await self._retired(record.id):
                if old.expires_at + RETIRED_KEEP_S < now:
                    await kv.purge(name)
            return api_key, current
        raise Conflict(f"key `{key_id}` is changing too fast; try again")

    async def _oldest(self, record: ClientKey, revision: int) -> tuple[ClientKey, int]:
        """The key's oldest live record, ``record`` when it has no other: what a rotation
        starts from. Another live record is a rotation's new one, not settled (or left by one
        that stopped), a copy of the key's record as that rotation read it: rotated from, it
        lost an admin's edit made since, and the two rotations did not meet on one
        compare-and-set (two live records stayed). Every rotation starts from the same record
        instead, and one wins."""
        for name in dict.fromkeys(await self._candidates(record.id)):
            found = await self._read(name, record.id)
            if found is not None and isinstance(found[0], ClientKey) and newer(record, found[0]):
                record, revision = found[0], found[1]
        return record, revision

    async def _after_race(
        self, name: str, key_id: str
    ) -> tuple[ClientKey | DamagedRecord, int] | None:
        """Key ``key_id``'s record after a rotation lost its compare-and-set on record
        ``name``: that record, changed, or the one its successor names (another rotation
        won), read from the bucket. The index may still map the id to the record the loser
        created and purged, and its lookup said 404; None: look the key up."""
        for _ in range(UPDATE_ATTEMPTS):
            found = await self._read(name, key_id)
            if found is not None:
                return found
            retired = await self._read_retired(name, key_id)
            if retired is None:
                return None
            name = record_name(retired.successor)
        return None

    async def _retired(self, key_id: str) -> Retired:
        """The records of ``key_id``'s old secrets, by record name."""
        if self._locator is None:
            return [(n, r) for n, r in (await self.scan()).retired if r.id == key_id]
        found: Retired = []
        for name in self._locator.retired(key_id):
            read = await self._read_retired(name, key_id)
            if read is not None:
                found.append((name, read))
        return found

    async def _read_retired(self, name: str, key_id: str) -> ClientKey | None:
        try:
            entry = await (await self._bucket()).get(name)
        except KeyNotFoundError:
            return None
        read = read_record(name, entry.value or b"", entry.revision or 0, key_id)
        if isinstance(read, ClientKey) and read.successor and read.id == key_id:
            return read
        return None


class Scan(NamedTuple):
    """One read of the bucket: the keys that read, with revisions, oldest first, the
    records that do not decode, and the records of rotated keys' old secrets (by name)."""

    records: list[tuple[ClientKey, int]]
    damaged: list[DamagedRecord]
    retired: list[tuple[str, ClientKey]]


def _grace(grace_s: float) -> float:
    """How long a rotated key's old secret keeps working, checked.

    Raises:
        InputError: not a number of seconds from 0 to :data:`MAX_GRACE_S`.
    """
    if isinstance(grace_s, bool) or not isinstance(grace_s, int | float):
        raise InputError("grace", "not a number of seconds", _GRACE_HINT)
    if not 0 <= grace_s <= MAX_GRACE_S:
        raise InputError("grace", f"{grace_s} seconds is out of range", _GRACE_HINT)
    return float(grace_s)


def _revoked(found: object) -> ClientKey | None:
    """Record ``found`` revoked; None: it is already (or is damaged: left as it is)."""
    if not isinstance(found, ClientKey) or found.disabled:
        return None
    return msgspec.structs.replace(found, disabled=True)


def _readable(found: ClientKey | DamagedRecord, revision: int) -> tuple[ClientKey, int]:
    if isinstance(found, DamagedRecord):
        raise KeyRecordDamaged(found.handle, found.reason)
    return found, revision


def _record(raw: dict[str, Any]) -> ClientKey:
    """``raw`` as a record; what the checks of :func:`validated` let through and the
    record's own types refuse is an :class:`InputError` naming the field, not a crash."""
    try:
        return msgspec.convert(raw, ClientKey)
    except msgspec.ValidationError as exc:
        problem, _, where = str(exc).partition(" - at `$.")
        field = where.rstrip("`").split(".", 1)[0].split("[", 1)[0]
        raise InputError(field, problem, hint(field)) from None


def _named(ref: str, records: list[tuple[ClientKey, int]]) -> tuple[ClientKey, int]:
    """The one record named ``ref`` (an argument not shaped like a key id).

    Raises:
        KeyNotFound: no key has that name, or several share it.
    """
    named = [(record, revision) for record, revision in records if record.name == ref]
    if len(named) == 1:
        return named[0]
    if named:
        ids = ", ".join(record.id for record, _ in named)
        raise KeyNotFound(ref, f"{len(named)} keys are named `{ref}` ({ids}); give the id")
    raise KeyNotFound(ref, f"no key with the id or name `{ref}`")


def namesake_warning(name: str, others: list[str]) -> str:
    """What creating a key named ``name`` when ``others`` (ids) have that name too means."""
    ids = ", ".join(others)
    keys = "another key is" if len(others) == 1 else f"{len(others)} other keys are"
    return (
        f"{keys} named `{name}` too ({ids}): names are labels, not unique, so commands that "
        "take a key by name will ask for the id"
    )


def public_record(record: ClientKey, spend: dict[str, Any] | None = None) -> dict[str, Any]:
    """A key record for people and API clients: everything but the hash, plus its spend."""
    doc: dict[str, Any] = msgspec.to_builtins(record)
    doc.pop("hash", None)  # not secret, but nobody needs it
    doc.pop("successor", None)  # only retired records (an old secret's) have one
    if spend is not None:
        doc["spend"] = spend
    return doc
