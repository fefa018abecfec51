"""Browser sessions of the admin web app, shared by every gateway replica through NATS KV.

Signing in with the admin token creates a session: a random id in an ``HttpOnly``,
``SameSite=Strict`` cookie (``Secure`` over TLS) and a CSRF token for its forms (derived from
the id, so every replica knows it and none stores it). Nothing keeps the id: each session is
kept under the SHA-256 of it, in this replica's memory and in the ``sy_admin_sessions`` bucket
(:mod:`switchyard.admin.ui.session_share`), which every replica follows live. So a session
signed in on one replica is good on every other, the Sessions list is every replica's, and a
sign-out (one session, or every session of a role) ends them on every replica within a moment.
Sessions end after 8 hours without a request, 24 hours after sign-in (the bucket's TTL), at
sign-out, by "sign out everywhere", or at their next request once the token they signed in
with is replaced (each records a mark of it keyed by its own cookie, :func:`token_mark`); a
gateway restart alone ends none.

The mark is keyed by the cookie, which the bucket never holds: a mark keyed by the token
alone (the same in every record) let anyone who could read the bucket, or a NATS backup,
test guesses of the admin token offline, past the sign-in guard, and let anyone who could
write it copy a real session's mark into a record of a cookie of their own making.

A page view costs no KV round trip: the session is read from memory (the watch keeps it
current), and its last use is written back at most once a :data:`TOUCH_S` (the idle limit is
judged from the latest use any replica wrote). A cookie this replica has not heard of yet (a
sign-in on another replica a moment ago) is looked up in the bucket once (again only if the
bucket did not answer).

A last use is written only over the entry it was read from (a compare-and-set on the entry's
revision): a plain write let a replica that had not heard of a sign-out yet write the session
back, and every replica then took it up again. A write that finds the entry changed is dropped,
and the entry read again (the newer entry, or its deletion, is on its way by the watch,
unless the watch lost it). A session signed out here or by the watch
is remembered as ended (until it would have expired anyway; at most :data:`MAX_GONE`) and
never taken up again, whatever is written later; one ended here as idle is deleted from the
bucket only if nobody used it since (again on its revision), so a use on another replica just
before wins.

A page's open live stream is use, as a request is (:meth:`Session.seen`): an admin watching
the overview for hours was signed out at the next click, while the stream ran on past the
idle limit. Both now follow one rule, and :meth:`Session.over` applies the idle limit too.
A page streams only while it is in view (``live.js`` closes the stream when the page is
hidden and opens it when shown): a page left open behind other tabs kept its session alive
until the absolute limit.

"Sign out everywhere" is ordered by the bucket's revisions, not by clocks: each session
records the revision of its first entry, and a cut ends every session of its role first
written before it (at or below the cut entry's own revision). Comparing the sign-in times of
one replica's clock with the cut time of another's let a replica whose clock ran ahead end
every sign-in made within that lead (for the cut's 24 hours), and one behind spare them.
A record of the version before (no revision of its own: a rolling upgrade) is still compared
by time, as that version compared it.

Flash messages and a previewed import stay in the memory of the replica that made them (a
browser's next request normally comes back to it; elsewhere they are simply not shown).
Without a bucket (the store not attached, as in unit tests) sessions are this process's only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from switchyard.errors import ApiError
from switchyard.runtime.definitions import ADMIN_SESSION_TTL_S

log = logging.getLogger("switchyard.admin.ui")

COOKIE = "sy_session"
IDLE_S = 8 * 3600.0
ABSOLUTE_S = ADMIN_SESSION_TTL_S  # 24 hours: the bucket's TTL
TOUCH_S = 60.0  # a session's last use is written to the bucket at most this often
MAX_SESSIONS = 10_000  # sessions of the admin token; past it the least recently used ends
# Sessions of the read-only token, capped on their own: its sign-ins only ever end another
# read-only session, never an admin's (one cap for both let a read-only token holder sign in
# 10,000 times and sign every idle admin out).
MAX_READ_ONLY_SESSIONS = 1_000
MAX_GONE = 50_000  # ended sessions remembered (each until it would have expired anyway)
# A cookie the bucket did not know (or a session it refused) is not looked up again for this
# long: any cookie from anyone was a KV read at each request. The watch, if it brings the
# session meanwhile (a sign-in on another replica), takes precedence. Only the bucket's
# answer "not there" counts: a look-up it did not answer (a stall) refused a session signed
# in on another replica for this long after the stall ended.
UNKNOWN_S = 5.0
MAX_UNKNOWN = 10_000


@dataclass
class Session:
    """One signed-in browser. ``actor`` is the name given at sign-in, for the audit log;
    ``read_only``: signed in with the read-only admin token (pages, no changes)."""

    actor: str
    source: str
    read_only: bool = False
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    flashes: list[tuple[str, str]] = field(default_factory=list)  # (kind, text), shown once
    stash: dict[str, Any] = field(default_factory=dict)  # e.g. a previewed import
    ended: bool = False  # signed out or expired: open streams stop
    ends_at: float = float("inf")  # the absolute expiry (set by the store)
    idle_s: float = IDLE_S  # ended this long after the last use (set by the store)
    written_seen: float = 0.0  # the last use the bucket holds (touched every TOUCH_S)
    token_mark: str = ""  # binds it to the token it signed in with (:func:`token_mark`)
    revision: int = 0  # its entry's revision in the bucket, as last known here (0: none)
    created_rev: int = 0  # its first entry's revision, what a cut is compared with (0: unknown)

    def over(self) -> bool:
        """Ended, past its absolute expiry or idle too long (an open stream checks this as
        it goes)."""
        now = time.time()
        return self.ended or now >= self.ends_at or now - self.last_seen > self.idle_s

    def seen(self) -> None:
        """In use now: a request, or a live stream still open on one of its pages."""
        self.last_seen = time.time()

    def flash(self, kind: str, text: str) -> None:
        self.flashes.append((kind, text))

    def take_flashes(self) -> list[tuple[str, str]]:
        out, self.flashes = self.flashes, []
        return out


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_token(session_id: str) -> str:
    """The session's CSRF token: derived from its id (which only the browser holds), so every
    replica has it without storing it, and it says nothing of the id."""
    mac = hmac.new(session_id.encode(), b"switchyard admin csrf", hashlib.sha256)
    return mac.hexdigest()


def token_mark(session_id: str, token_digest: bytes) -> str:
    """Which token a session signed in with (its SHA-256), keyed by the session's id (the
    cookie, which only the browser holds): nothing to read a token from, nor to test a guess
    of one against, without a session's cookie. A session is good only while the gateway's
    token of its role gives this mark: replace the token file and restart the gateways, and
    each session signed in with the old token ends at its next request."""
    message = b"switchyard admin session\0" + token_digest
    return hmac.new(session_id.encode(), message, hashlib.sha256).hexdigest()[:32]


# The SHA-256 of the token of a role (``read_only``) as this gateway has it (b"": none).
TokenDigest = Callable[[bool], bytes]


class SessionRecord(msgspec.Struct, forbid_unknown_fields=False):
    """A session as the bucket keeps it (under its id's digest): no id, no CSRF token."""

    actor: str
    source: str
    read_only: bool
    created: float
    last_seen: float
    token_mark: str = ""
    created_rev: int = 0  # its first entry's revision (0: not known to the writer)
    first: bool = False  # this entry is the session's first: its revision is created_rev


class SessionBucket(Protocol):
    """Where the sessions are shared (:class:`~switchyard.admin.ui.session_share.SessionShare`)."""

    async def put(self, digest: str, record: SessionRecord) -> int: ...
    async def touch(self, digest: str, record: SessionRecord, last: int) -> int | None: ...
    async def delete(self, digest: str, last: int | None = None) -> bool: ...
    async def fetch(self, digest: str) -> tuple[SessionRecord, int] | None: ...
    async def cut(self, read_only: bool) -> int: ...
    def stale(self) -> bool: ...
    async def refresh(self, digest: str, read_only: bool) -> tuple[SessionRecord, int] | None: ...


def record_of(session: Session, first: bool = False) -> SessionRecord:
    return SessionRecord(
        session.actor,
        session.source,
        session.read_only,
        session.created,
        session.last_seen,
        session.token_mark,
        session.created_rev,
        first,
    )


def created_rev(record: SessionRecord, revision: int) -> int:
    """The revision of a session's first entry, from an entry of it at ``revision`` (0: a
    record of the version before, which knows none)."""
    if record.created_rev > 0:
        return record.created_rev
    return revision if record.first else 0


class SessionStore:
    """The sessions, by the digest of their id. ``attach`` shares them through a bucket: every
    change is written there, and the bucket's changes (any replica's) are applied here by
    :meth:`apply` and :meth:`apply_cut`."""

    def __init__(
        self,
        idle_s: float = IDLE_S,
        absolute_s: float = ABSOLUTE_S,
        max_sessions: int = MAX_SESSIONS,
        max_read_only: int = MAX_READ_ONLY_SESSIONS,
        touch_s: float = TOUCH_S,
    ) -> None:
        self._sessions: dict[str, Session] = {}
        self._touch_s = touch_s
        self._idle = idle_s
        self._absolute = absolute_s
        self._max = {False: max_sessions, True: max_read_only}  # by ``read_only``
        # Sessions of a role first written at or below this revision are over: "sign out
        # everywhere" (0: none).
        self._cut = {False: 0, True: 0}
        # When, for records of the version before and for sessions signed in while no bucket
        # was attached (no revision of their own: a local counter mixed with the bucket's
        # revisions once attached, and cuts ended the wrong sessions).
        self._cut_at = {False: 0.0, True: 0.0}
        self._bucket: SessionBucket | None = None
        self._touches: set[asyncio.Task[None]] = set()
        # Sessions ended (signed out, here or anywhere): never taken up again, until when
        # they would have expired anyway.
        self._gone: OrderedDict[str, float] = OrderedDict()
        # Cookies looked up in the bucket and not found (or refused) there: not looked up
        # again until then (time.monotonic).
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._token: TokenDigest = lambda read_only: b""

    def use_tokens(self, token: TokenDigest) -> None:
        """Sessions are good only with the token they signed in with, as ``token`` gives it."""
        self._token = token

    def attach(self, bucket: SessionBucket | None) -> None:
        """Share the sessions through ``bucket`` from now on (None: this process's only).
        Sessions signed in before (not in the bucket) are written by :meth:`share_local`."""
        self._bucket = bucket

    async def share_local(self) -> int:
        """Writes each session signed in while no bucket was attached to the bucket, as its
        first entry (its revision is its ``created_rev`` from then on): unwritten, another
        replica never knew it, and this one ended it at its first check in the bucket.
        Returns how many were written; one not written (the bucket did not answer) stays
        this replica's, and is written at its next last use."""
        written = 0
        for digest, session in list(self._sessions.items()):
            if session.revision <= 0 and not session.over():
                written += await self._write_first(digest, session)
        return written

    async def _write_first(self, digest: str, session: Session) -> int:
        if self._bucket is None:
            return 0
        # Not as a first entry: it stays compared with cuts by its sign-in time on every
        # replica (a cut already in the bucket, not yet delivered here, is below the entry's
        # revision: judged by revision, a session signed in before it survived it everywhere).
        try:
            revision = await self._bucket.put(digest, record_of(session))
        except ApiError as exc:
            log.warning("a web app session was not written to the bucket (%s)", type(exc).__name__)
            return 0
        session.revision = max(session.revision, revision)
        return 1

    @property
    def shared(self) -> bool:
        """Whether the sessions are shared with the other replicas (a sign-out here reaches
        them), or this process's only (the bucket could not be followed)."""
        return self._bucket is not None

    def _ended(self, digest: str) -> None:
        session = self._sessions.pop(digest, None)
        if session is not None:
            session.ended = True  # its open streams stop too

    def _signed_out(self, digest: str, until: float | None = None) -> None:
        """Ended for good: whatever is written under it later is not taken up again."""
        session = self._sessions.get(digest)
        self._ended(digest)
        if until is None:
            until = session.ends_at if session is not None else time.time() + self._absolute
        self._gone[digest] = until
        self._gone.move_to_end(digest)
        while len(self._gone) > MAX_GONE:
            self._gone.popitem(last=False)

    def _is_gone(self, digest: str) -> bool:
        until = self._gone.get(digest)
        if until is None:
            return False
        if time.time() < until:
            return True
        del self._gone[digest]
        return False

    def _known_unknown(self, digest: str) -> bool:
        """Looked up in the bucket a moment ago and not found, or ended here (gone)."""
        if self._is_gone(digest):
            return True
        until = self._unknown.get(digest)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._unknown[digest]
        return False

    def _unknown_for_now(self, digest: str) -> None:
        self._unknown[digest] = time.monotonic() + UNKNOWN_S
        self._unknown.move_to_end(digest)
        while len(self._unknown) > MAX_UNKNOWN:
            self._unknown.popitem(last=False)

    def _expired(self, digest: str) -> None:
        """Ended here as idle or past its lifetime. An idle one is deleted from the bucket too,
        but only if its entry is the one read here: a use written meanwhile by another
        replica keeps it (the watch brings that use, and the session with it)."""
        session = self._sessions.get(digest)
        self._ended(digest)
        if self._bucket is None or session is None or session.revision <= 0:
            return
        if time.time() >= session.ends_at:
            return  # the bucket's TTL removes it
        self._spawn(self._delete_idle(digest, session.revision))

    async def _delete_idle(self, digest: str, revision: int) -> None:
        if self._bucket is None:
            return
        try:
            await self._bucket.delete(digest, last=revision)
        except ApiError as exc:  # it expires in the bucket anyway; each replica ends it
            log.warning("an idle web app session was not deleted (%s)", type(exc).__name__)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)

    async def create(self, actor: str, source: str, read_only: bool = False) -> tuple[str, Session]:
        """A new session; returns its id (for the cookie, never stored) and the session.
        Raises what the bucket raises when it cannot be written (no session then)."""
        self._sweep()
        alike = [d for d, s in self._sessions.items() if s.read_only == read_only]
        if len(alike) >= self._max[read_only]:  # drop the least recently used of its kind
            oldest = min(alike, key=lambda d: self._sessions[d].last_seen)
            await self._end_digest(oldest)
        session_id = secrets.token_urlsafe(32)
        session = Session(actor=actor, source=source, read_only=read_only)
        session.csrf = csrf_token(session_id)
        session.token_mark = token_mark(session_id, self._token(read_only))
        session.ends_at = session.created + self._absolute
        session.idle_s = self._idle
        session.written_seen = session.last_seen
        digest = _digest(session_id)
        if self._bucket is not None:
            revision = await self._bucket.put(digest, record_of(session, first=True))
            session.revision = max(session.revision, revision)
            session.created_rev = revision
        # else created_rev stays 0: cuts compare it by its sign-in time (no bucket revision)
        self._sessions[digest] = session
        return session_id, session

    def _from_record(self, record: SessionRecord, revision: int) -> Session:
        session = Session(
            actor=record.actor,
            source=record.source,
            read_only=record.read_only,
            created=record.created,
            last_seen=record.last_seen,
            token_mark=record.token_mark,
        )
        session.ends_at = record.created + self._absolute
        session.idle_s = self._idle
        session.written_seen = record.last_seen
        session.revision = revision
        session.created_rev = created_rev(record, revision)
        return session

    async def get(self, session_id: str | None) -> Session | None:
        """The live session for a cookie value, refreshed; None when unknown or expired.
        Raises ServiceUnavailable when the cookie could not be checked: this replica does
        not know it and the bucket was not asked or did not answer (a session signed in on
        another replica during a stall was answered as signed out: its form lost)."""
        if not session_id:
            return None
        digest = _digest(session_id)
        session = self._sessions.get(digest)
        if session is None and self._bucket is not None and not self._known_unknown(digest):
            # Signed in elsewhere a moment ago? Not asked, or no answer: ServiceUnavailable
            # (nothing remembered: looked up again at the cookie's next request).
            found = await self._bucket.fetch(digest)
            if found is not None:
                self.apply(digest, *found)
                session = self._sessions.get(digest)
            if session is None:  # the bucket said: not there (or refused it)
                self._unknown_for_now(digest)
        if session is not None and self._bucket is not None and self._bucket.stale():
            session = await self._checked(digest, session)
        if session is None:
            return None
        if not self._current(session, session_id):
            self._signed_out(digest)  # not fetched and refused again at each request
            return None
        if session.over():
            self._expired(digest)
            return None
        session.csrf = csrf_token(session_id)
        session.seen()
        if self._bucket is not None and session.last_seen - session.written_seen >= self._touch_s:
            session.written_seen = session.last_seen
            self._spawn(self._touch(digest, session))
        return session

    async def _checked(self, digest: str, session: Session) -> Session | None:
        """The session as the bucket has it now, for a replica whose watch is not known to
        be good (it may have missed a sign-out). A bucket that does not answer leaves the
        session as this replica knows it, as for a gateway cut off from NATS."""
        assert self._bucket is not None  # noqa: S101  (checked by the caller)
        try:
            found = await self._bucket.refresh(digest, session.read_only)
        except ApiError as exc:
            log.warning("a web app session was not checked in the bucket (%s)", type(exc).__name__)
            return session
        if found is None:
            # Ended here, not remembered as signed out (a sign-out, read as the entry's
            # deletion, is applied by the bucket): a server lagging behind answers "not
            # found" for a session signed in a moment ago, which ended it on this replica
            # for its whole lifetime.
            self._ended(digest)
            return None
        self.apply(digest, *found)
        return self._sessions.get(digest)

    async def _touch(self, digest: str, session: Session) -> None:
        """Write a session's last use, for the idle limit on every replica: only over the
        entry this replica knows (a session signed out meanwhile stays out)."""
        if self._bucket is None or session.over():
            return
        if session.revision <= 0:  # signed in before the bucket was attached, not written yet
            await self._write_first(digest, session)
            return
        try:
            revision = await self._bucket.touch(digest, record_of(session), session.revision)
        except ApiError as exc:  # written again at the next use past TOUCH_S
            session.written_seen = 0.0
            log.warning("a web app session's last use was not written (%s)", type(exc).__name__)
            return
        if revision is None:  # written or deleted elsewhere since
            session.written_seen = 0.0
            await self._reread(digest, session)
            return
        session.revision = max(session.revision, revision)

    async def _reread(self, digest: str, session: Session) -> None:
        """A last use not written: the entry changed since it was read here. The watch
        should bring the change, but a watch that lost it (a sign-out) is not seen stalled:
        the entry is read here (a deletion is a sign-out, no entry ends it here)."""
        assert self._bucket is not None  # noqa: S101  (checked by the caller)
        try:
            found = await self._bucket.refresh(digest, session.read_only)
        except ApiError as exc:  # the watch, or the next use past TOUCH_S
            log.warning("a web app session was not read again (%s)", type(exc).__name__)
            return
        if found is None:
            if self._sessions.get(digest) is session:
                self._ended(digest)
            return
        self.apply(digest, *found)

    async def end(self, session_id: str | None) -> None:
        """Signs one session out, on every replica."""
        if session_id:
            await self._end_digest(_digest(session_id))

    async def _end_digest(self, digest: str) -> None:
        self._signed_out(digest)
        if self._bucket is not None:
            await self._bucket.delete(digest)

    def _current(self, session: Session, session_id: str) -> bool:
        """Signed in with the token the gateway has now (not one since replaced)."""
        mark = token_mark(session_id, self._token(session.read_only))
        return hmac.compare_digest(mark, session.token_mark)

    def live(self) -> list[Session]:
        """Every session not ended or expired, oldest sign-in first (one signed in with a
        token since replaced is among them until its next request ends it: only its cookie
        tells)."""
        self._sweep()
        return sorted(self._sessions.values(), key=lambda s: s.created)

    async def end_all(self, read_only: bool) -> int:
        """Ends every session of one kind (``read_only``: the read-only token's, else the
        admin token's), on every replica: each ends those written to the bucket before the
        cut. Their open streams stop too. Returns how many were live."""
        self._sweep()
        # Counted first: the watch may bring the cut back (and apply it) before the write returns.
        live = sum(s.read_only == read_only for s in self._sessions.values())
        revision = 0  # no bucket: compared by time (a local counter mixed with the bucket's)
        if self._bucket is not None:
            revision = await self._bucket.cut(read_only)
        self.apply_cut(read_only, revision, time.time())
        return live

    def apply(self, digest: str, record: SessionRecord | None, revision: int = 0) -> None:
        """A session written to the bucket (by any replica) at ``revision``, or deleted
        (None). One signed out is never taken up again."""
        if record is None:
            self._signed_out(digest)
            return
        if self._is_gone(digest):
            return
        self._unknown.pop(digest, None)
        session = self._sessions.get(digest)
        first = session.created_rev if session is not None else created_rev(record, revision)
        if self._cut_off(record.read_only, first, record.created):
            # Signed out everywhere (and written since: a last use): for good, or it was
            # fetched and refused again at each request.
            self._signed_out(digest, record.created + self._absolute)
            return
        if session is None:
            session = self._from_record(record, revision)
            if session.over():
                return
            self._sessions[digest] = session
            return
        session.last_seen = max(session.last_seen, record.last_seen)
        session.written_seen = max(session.written_seen, record.last_seen)
        session.revision = max(session.revision, revision)

    def _cut_off(self, read_only: bool, first: int, created: float) -> bool:
        """Whether a session first written at revision ``first`` is ended by its role's cut
        (``first`` 0: a record of the version before, compared by its sign-in time)."""
        if first > 0:
            return first <= self._cut[read_only]
        return created <= self._cut_at[read_only]

    def apply_cut(self, read_only: bool, revision: int, at: float) -> int:
        """Every session of a kind first written at or below ``revision`` (a cut's entry,
        made at ``at``) is over; returns how many live ones that ended here."""
        self._cut[read_only] = max(self._cut[read_only], revision)
        self._cut_at[read_only] = max(self._cut_at[read_only], at)
        gone = [
            d
            for d, s in self._sessions.items()
            if s.read_only == read_only and self._cut_off(read_only, s.created_rev, s.created)
        ]
        live = sum(not self._sessions[d].over() for d in gone)
        for digest in gone:
            self._signed_out(digest)
        return live

    async def stop(self) -> None:
        """Waits for the last uses being written (they are small), then stops sharing."""
        touches = list(self._touches)
        if touches:
            await asyncio.wait(touches, timeout=2.0)
        self._bucket = None

    def _sweep(self) -> None:
        expired = [d for d, s in self._sessions.items() if s.over()]
        for digest in expired:
            self._expired(digest)
        now = time.time()
        while self._gone and next(iter(self._gone.values())) <= now:
            self._gone.popitem(last=False)
