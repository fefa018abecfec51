"""The web app's sessions in the ``sy_admin_sessions`` bucket, shared by every gateway replica.

Each session is one entry, ``s.<digest>`` (the SHA-256 of the cookie's value: the bucket never
holds the value itself, nor the CSRF token derived from it), holding who signed in, from
where, when, and when last used, and the revision of its first entry; "sign out everywhere"
writes ``cut.<role>``: every session of that role first written before it (at a lower
revision) is over. Revisions, not times: the replicas' clocks need not agree. Every replica
follows the bucket live (:class:`~switchyard.runtime.kvwatch.KvFollower`) into its
:class:`SessionStore`, so a sign-in, a sign-out or a cut made on one replica holds on every
other within milliseconds, and a page view reads memory only. The bucket's TTL is a
session's absolute lifetime (24 hours): an entry not written for that long is gone, and a
cut is forgotten only once every session it ended would have expired anyway.

The sign-in guard's wrong-token counts are shared the same way, through a bucket of their
own (:mod:`switchyard.admin.ui.failure_share`): nothing anyone sends without a token is
written here.

A replica whose watch has not been confirmed good for :data:`FOLLOW_STALE_S` (the follower
checks it every 10 s and opens it again when it stalls) may have missed a sign-out: until it
is confirmed again, each request looks its session, and its role's cut, up in the bucket
(:meth:`SessionShare.refresh`), unless the bucket did not answer such a look-up within
:data:`REFRESH_TIMEOUT_S`, or answered it with an error, a moment ago (then, for a
follower's check interval, requests are served from memory, as while disconnected: each
waited 2 s; the window closes as soon as the bucket answers again: its watch delivers, the
follower confirms it, or a request sent after it opened is answered). A replica that cannot
follow the bucket at all (at start) keeps its sessions to itself, and says so wherever it
would claim to reach every replica (:attr:`SessionStore.shared`: the Sessions page, the
sign-out's message and audit entry), and tries again in the background until it can (then
shares from there on).

The gateway's start waits at most :data:`START_WAIT_S` for the two buckets, followed at once
(not one after the other): a bucket the admin identity may not read (an older version's
NATS config) answers nothing until the JetStream timeout, and the two, waited out in turn,
held each gateway's start 20 s.

The gateway's admin connection (identity ``admin``) reads and writes the bucket and the
provisioner creates it (:func:`switchyard.stack.provision.provision_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from switchyard.admin.ui.failure_share import (
    PROVISION_ADVICE,
    UNEXPECTED,
    FailureShare,
    WriteBudget,
)
from switchyard.admin.ui.sessions import SessionRecord, SessionStore
from switchyard.admin.ui.signin_guard import SigninGuard
from switchyard.bus import subjects
from switchyard.errors import ServiceUnavailable
from switchyard.runtime.kvwatch import CHECK_S, RETRY_S, KvFollower, follow_later, try_follow
from switchyard.runtime.tasks import TaskSupervisor

log = logging.getLogger("switchyard.admin.ui")

SESSION_PREFIX = "s."
CUT_PREFIX = "cut."
FOLLOW_STALE_S = 3 * CHECK_S  # the watch unconfirmed this long: each request checks the bucket
REFRESH_TIMEOUT_S = 2.0  # such a check, at most (then the session as this replica knows it)
START_WAIT_S = 5.0  # the start waits this long at most for the buckets (then: followed later)
_WRONG_LAST = (10071, 10164)  # JetStream: the expected last revision is not the last
_ROLE_KEYS = {False: "admin", True: "read-only"}  # by ``read_only``
_ROLES = {name: read_only for read_only, name in _ROLE_KEYS.items()}
_ENCODE = msgspec.json.Encoder()
_RECORD = msgspec.json.Decoder(SessionRecord)


class Cut(msgspec.Struct):
    # When it was made (shown to people, and what replicas of the version before compare);
    # this version ends the sessions first written below the cut entry's own revision (and
    # compares the time with records of the version before, that hold no revision).
    at: float


_CUT = msgspec.json.Decoder(Cut)

UNAVAILABLE = (
    "the web app's sessions cannot be written now (the gateway's NATS connection did not "
    "answer); try again in a moment"
)


class SessionShare:
    """Follows the bucket into ``store`` and writes the store's changes to it."""

    def __init__(
        self,
        js: JetStreamContext,
        store: SessionStore,
        guard: SigninGuard | None = None,
        *,
        check_s: float = CHECK_S,
        stale_s: float = FOLLOW_STALE_S,
        start_wait_s: float = START_WAIT_S,
        retry_s: float = RETRY_S,
    ) -> None:
        self._js = js
        self._start_wait_s = start_wait_s
        self._retry_s = retry_s
        self._loops = TaskSupervisor("session-share")
        self._why = ""  # why the bucket could not be followed, the last time
        self._refused = False  # whether by NATS (not provisioned, no rights), or unexpectedly
        self._store = store
        self._failures = None if guard is None else FailureShare(js, guard, WriteBudget())
        self._kv: KeyValue | None = None
        self._stale_s = stale_s
        self._check_s = check_s
        # Until when (time.monotonic) the bucket is not asked at a request: it did not answer
        # within REFRESH_TIMEOUT_S (JetStream down, the connection up), and each request
        # waited that long again. Over as soon as the bucket answers a request sent after
        # ``_quiet_since`` (:meth:`_answered`), or the follower confirms its watch after it.
        self._quiet_until = 0.0
        self._quiet_since = 0.0
        self._follower = KvFollower(
            js, subjects.ADMIN_SESSIONS_BUCKET, self._on_entry, check_s=check_s
        )

    def stale(self) -> bool:
        """Whether the watch has not been confirmed good for ``stale_s`` while connected (a
        sign-out made on another replica may not have arrived: :meth:`refresh` each session
        used). Not while the connection is down: nothing answers then (a gateway cut off
        from NATS keeps the sessions it knew), and a request is not held for a lookup."""
        if self._kv is None or not self._connected() or self._quiet():
            return False
        return time.monotonic() - self._follower.confirmed_at >= self._stale_s

    def _quiet(self) -> bool:
        """Whether the bucket did not answer a moment ago (within ``check_s``) and has not
        answered since: requests are served from memory meanwhile, as while disconnected.
        Any look-up that failed opens the window (a random cookie's too: each request must
        not wait REFRESH_TIMEOUT_S in an outage, nor each made-up cookie cost a read and a
        warning while JetStream errs); it closes at once when the bucket shows it
        answers again (the watch delivers an entry, the follower confirms its watch, or a
        write or read here succeeds), not only after ``check_s``: a session signed in on
        another replica was refused here for up to 10 s after a stall ended."""
        if time.monotonic() >= self._quiet_until:
            return False
        return self._follower.confirmed_at < self._quiet_since

    def _not_answering(self) -> None:
        self._quiet_since = time.monotonic()
        self._quiet_until = self._quiet_since + self._check_s

    def _answered(self, started: float) -> None:
        """The bucket answered an operation begun at ``started`` (time.monotonic), or its
        watch delivered then: it is not quiet, unless that operation began before the
        window opened. (Any answer ended it: one to a request sent before the bucket went
        slow, a background last use's, so while it answered slowly each request waited
        REFRESH_TIMEOUT_S again and again.)"""
        if started >= self._quiet_since:
            self._quiet_until = 0.0

    def _connected(self) -> bool:
        return bool(getattr(getattr(self._js, "_nc", None), "is_connected", True))

    async def refresh(self, digest: str, read_only: bool) -> tuple[SessionRecord, int] | None:
        """Reads a session and its role's cut from the bucket itself (the cut is applied,
        and so is a sign-out: the entry's deletion); None when the session is not there.
        Raises ServiceUnavailable when the bucket does not answer."""
        kv = self._bucket()
        started = time.monotonic()
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT_S):
                found = await self._read(kv, digest, read_only)
        except (NatsError, TimeoutError) as exc:
            self._not_answering()  # (any failure: see fetch)
            raise ServiceUnavailable(UNAVAILABLE) from exc
        self._answered(started)
        return found

    async def _read(
        self, kv: KeyValue, digest: str, read_only: bool
    ) -> tuple[SessionRecord, int] | None:
        try:
            cut = await kv.get(CUT_PREFIX + _ROLE_KEYS[read_only])
        except KeyNotFoundError:
            pass
        else:
            if cut.value:
                try:
                    at = _CUT.decode(cut.value).at
                except msgspec.DecodeError as exc:  # as the watch does: ignored, not a 500
                    log.warning("ignored a malformed cut of the web app's sessions (%s)", exc)
                else:
                    self._store.apply_cut(read_only, int(cut.revision or 0), at)
        try:
            entry = await kv.get(SESSION_PREFIX + digest)
        except KeyNotFoundError as exc:
            # A deletion's marker (``entry``): signed out, for good. No entry at all may be a
            # server that lags behind answering (a direct get is answered by any replica of
            # the stream): the session ends here only, and comes back if the entry does.
            if exc.entry is not None:
                self._store.apply(digest, None)
            return None
        self._follower.behind(int(entry.revision or 0))  # a watch that lags is opened again
        if entry.value is None or entry.operation in ("DEL", "PURGE"):
            return None
        try:
            return _RECORD.decode(entry.value), int(entry.revision or 0)
        except msgspec.DecodeError as exc:  # not a session (as :meth:`fetch`): not there
            log.warning("ignored a malformed entry of the web app's sessions (%s)", exc)
            return None

    async def start(self) -> bool:
        """Returns once every session in the bucket is known here (the store shares from
        then), or after ``start_wait_s`` at most. A bucket that cannot be followed (not
        provisioned yet, or a NATS config without the admin identity's rights to it: an
        upgrade half done) is logged as an error and the sessions stay this replica's, as
        before, rather than the gateway not starting; it is tried again in the background
        after ``retry_s``, then less often, until it can be followed. The sign-in guard's
        bucket is followed at the same time, the same way. Returns whether the sessions are
        shared on return."""
        tried = [asyncio.Event()]  # each set once its bucket's first try is over
        self._loops.spawn(self._share(tried[0]), name="session-share-follow")
        if self._failures is not None:
            tried.append(asyncio.Event())
            failures = self._failures.start(self._retry_s, tried[1])
            self._loops.spawn(failures, name="failure-share-follow")
        with contextlib.suppress(TimeoutError):  # (then it goes on in the background)
            async with asyncio.timeout(self._start_wait_s):
                for event in tried:
                    await event.wait()
        if not tried[0].is_set():
            log.warning(
                "the web app's sessions are this gateway replica's until the %s bucket answers "
                "(not within %.0f s: is the NATS config of this version rendered?); the "
                "gateway starts, and follows it once it can",
                subjects.ADMIN_SESSIONS_BUCKET,
                self._start_wait_s,
            )
        return self._store.shared

    async def _share(self, tried: asyncio.Event) -> None:
        try:
            followed = await try_follow(self._follow)
        finally:  # (set whatever happens: the start must not wait its whole bound for it)
            tried.set()
        if followed:
            return
        log.error(
            "the web app's sessions are this gateway replica's only: the %s bucket cannot "
            "be followed (%s). %s; trying again in %.0f s, then less often",
            subjects.ADMIN_SESSIONS_BUCKET,
            self._why,
            PROVISION_ADVICE if self._refused else UNEXPECTED,
            self._retry_s,
        )
        await follow_later(self._follow, self._retry_s)
        log.info(
            "the web app's sessions are shared with the other gateway replicas from now on "
            "(the %s bucket is followed)",
            subjects.ADMIN_SESSIONS_BUCKET,
        )

    async def _follow(self) -> bool:
        try:
            return await self._follow_once()
        except Exception as exc:  # (logged by try_follow, with its traceback)
            self._why, self._refused = type(exc).__name__, False
            raise

    async def _follow_once(self) -> bool:
        follower = KvFollower(
            self._js, subjects.ADMIN_SESSIONS_BUCKET, self._on_entry, check_s=self._check_s
        )
        try:
            kv = await self._js.key_value(subjects.ADMIN_SESSIONS_BUCKET)
            await follower.start()
        except (NatsError, TimeoutError, OSError) as exc:
            await follower.stop()
            self._why, self._refused = type(exc).__name__, True
            return False
        except BaseException:  # cancelled (a stop) mid-start: its watch must not outlive it
            await follower.stop()
            raise
        # A try before this one may have got this far and then raised (in share_local): its
        # follower is stopped here, not left running beside this one (each entry twice).
        earlier, self._kv, self._follower = self._follower, kv, follower
        await earlier.stop()
        self._store.attach(self)
        await self._store.share_local()  # sessions signed in before: into the bucket
        return True

    async def stop(self) -> None:
        await self._loops.cancel_all()
        if self._failures is not None:
            await self._failures.stop()
        await self._store.stop()
        await self._follower.stop()

    def _on_entry(self, key: str, value: bytes | None, revision: int) -> None:
        self._answered(time.monotonic())  # the watch delivers now: the bucket answers again
        try:
            self._apply(key, value, revision)
        except msgspec.DecodeError as exc:  # (msgspec.ValidationError is one)
            log.warning("ignored a malformed entry of the web app's sessions (%s)", exc)

    def _apply(self, key: str, value: bytes | None, revision: int) -> None:
        if key.startswith(SESSION_PREFIX):
            digest = key.removeprefix(SESSION_PREFIX)
            record = None if value is None else _RECORD.decode(value)
            self._store.apply(digest, record, revision)
        elif key.startswith(CUT_PREFIX) and value is not None:
            read_only = _ROLES.get(key.removeprefix(CUT_PREFIX))
            if read_only is not None:
                self._store.apply_cut(read_only, revision, _CUT.decode(value).at)

    def _bucket(self) -> KeyValue:
        if self._kv is None:
            raise ServiceUnavailable(UNAVAILABLE)
        return self._kv

    async def put(self, digest: str, record: SessionRecord) -> int:
        """Writes a new session; returns its entry's revision."""
        started = time.monotonic()
        try:
            revision = await self._bucket().put(SESSION_PREFIX + digest, _ENCODE.encode(record))
        except (NatsError, TimeoutError) as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc
        self._answered(started)
        return revision

    async def touch(self, digest: str, record: SessionRecord, last: int) -> int | None:
        """Writes a session's last use over its entry at revision ``last`` only; None when
        the entry changed since (written by another replica, or deleted: a sign-out)."""
        started = time.monotonic()
        try:
            revision = await self._bucket().update(
                SESSION_PREFIX + digest, _ENCODE.encode(record), last=last
            )
        except KeyWrongLastSequenceError:
            self._answered(started)
            return None
        except (NatsError, TimeoutError) as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc
        self._answered(started)
        return int(revision)

    async def delete(self, digest: str, last: int | None = None) -> bool:
        """Deletes a session (``last``: only if its entry is still at that revision; False
        when it is not)."""
        started = time.monotonic()
        try:
            await self._bucket().delete(SESSION_PREFIX + digest, last=last)
        except APIError as exc:  # nats-py raises a plain API error here (``update``: its own)
            if exc.err_code not in _WRONG_LAST:
                raise ServiceUnavailable(UNAVAILABLE) from exc
            self._answered(started)
            return False
        except (NatsError, TimeoutError) as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc
        self._answered(started)
        return True

    async def cut(self, read_only: bool) -> int:
        """Writes a role's cut; returns its revision."""
        value = _ENCODE.encode(Cut(time.time()))
        started = time.monotonic()
        try:
            revision = await self._bucket().put(CUT_PREFIX + _ROLE_KEYS[read_only], value)
        except (NatsError, TimeoutError) as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc
        self._answered(started)
        return revision

    async def fetch(self, digest: str) -> tuple[SessionRecord, int] | None:
        """A session signed in elsewhere that the watch has not brought yet, and its entry's
        revision; None when the bucket answered that it is not there. Raises
        ServiceUnavailable when it was not asked or did not answer within
        :data:`REFRESH_TIMEOUT_S` (the caller must not remember the cookie as unknown: a
        session signed in on another replica and looked up during a stall was refused for a
        while after it). Not looked up while the connection is down, nor while the bucket is
        quiet: any cookie at all is looked up here, and a request is not held for a lookup.
        (It waited the connection's JetStream timeout, 10 s, for every such cookie, a random
        one from anyone included.)"""
        if self._kv is None or not self._connected() or self._quiet():
            raise ServiceUnavailable(UNAVAILABLE)
        started = time.monotonic()
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT_S):
                entry = await self._kv.get(SESSION_PREFIX + digest)
        except KeyNotFoundError:
            self._answered(started)
            return None
        except (NatsError, TimeoutError) as exc:
            # Any failure, not only a timeout, opens the quiet window: one answered at once
            # (no responders: the stream gone or JetStream down) was asked again, and
            # logged, at every request of every made-up cookie.
            self._not_answering()
            log.warning("a web app session was not looked up (%s)", type(exc).__name__)
            raise ServiceUnavailable(UNAVAILABLE) from exc
        self._answered(started)
        if entry.value is None or entry.operation in ("DEL", "PURGE"):
            return None
        try:
            return _RECORD.decode(entry.value), int(entry.revision or 0)
        except msgspec.DecodeError:
            return None
