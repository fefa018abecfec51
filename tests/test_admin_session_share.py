"""Two gateway replicas' session stores sharing the ``sy_admin_sessions`` bucket of one real
nats-server: what one writes, the other applies within a moment (sign-in, sign-out, a sign-out
everywhere, the last use that the idle limit is judged by), and a replica started later learns
it all from the bucket. Sessions lived in each replica's memory: none of this held."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy
from nats.js.errors import KeyNotFoundError

from switchyard.admin.ui.app import AdminUi
from switchyard.admin.ui.failure_share import WRITE_BURST
from switchyard.admin.ui.session_share import REFRESH_TIMEOUT_S, SessionShare
from switchyard.admin.ui.sessions import (
    COOKIE,
    SessionRecord,
    SessionStore,
    _digest,
    token_mark,
)
from switchyard.admin.ui.signin_guard import LIMIT, WINDOW_S, SigninGuard
from switchyard.bus import subjects
from switchyard.config import Settings
from switchyard.errors import ServiceUnavailable
from switchyard.runtime.definitions import (
    ADMIN_SESSION_TTL_S,
    ADMIN_SIGNIN_FAILURES_MAX_BYTES,
)
from switchyard.stack.provision import _ensure_sessions_bucket
from tests.support import jetstream_server, until

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def _replica(
    nc: NATS, guard: SigninGuard | None = None, **options: float
) -> AsyncIterator[SessionStore]:
    """One replica's session store (and sign-in guard), sharing through the bucket."""
    store = SessionStore(**options)  # type: ignore[arg-type]
    share = SessionShare(nc.jetstream(timeout=5), store, guard)
    await share.start()
    try:
        yield store
    finally:
        await share.stop()


@pytest.fixture
async def nc(tmp_path: Path) -> AsyncIterator[NATS]:
    async with jetstream_server(tmp_path / "js") as (client, _):
        await _ensure_sessions_bucket(client.jetstream(), Settings())  # as provisioned
        yield client


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[NATS, asyncio.subprocess.Process]]:
    """The client and its nats-server process (to freeze it: JetStream not answering while
    the connection stays up)."""
    async with jetstream_server(tmp_path / "js") as (client, server):
        await _ensure_sessions_bucket(client.jetstream(), Settings())
        yield client, server


@contextlib.contextmanager
def _frozen(server: asyncio.subprocess.Process) -> Iterator[None]:
    """The server stopped (SIGSTOP): nothing answers, and the client still thinks it
    connected (no ping is missed this soon)."""
    os.kill(server.pid, signal.SIGSTOP)
    _stopped(server.pid)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def _stopped(pid: int) -> None:
    """Returns once every thread of ``pid`` is stopped: the signal is sent at once, but a
    thread busy in the kernel (a JetStream write's fsync) stops only when it is done, and a
    request sent meanwhile could still be answered (a new test's frozen look-up was)."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that just ended
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        if states and all(state in "tT" for state in states):
            return
        time.sleep(0.005)
    raise AssertionError(f"nats-server {pid} did not stop")


async def _took(work: object) -> tuple[object, float]:
    began = time.monotonic()
    result = await work  # type: ignore[misc]
    return result, time.monotonic() - began


async def test_the_bucket_expires_sessions_at_their_lifetime(nc: NATS) -> None:
    info = await nc.jetstream().stream_info(f"KV_{subjects.ADMIN_SESSIONS_BUCKET}")
    assert info.config.max_age == ADMIN_SESSION_TTL_S == 24 * 3600


async def test_a_session_signed_in_on_one_replica_is_good_and_ended_on_the_other(nc: NATS) -> None:
    async with _replica(nc) as one, _replica(nc) as two:
        sid, session = await one.create("ada", "10.0.0.1")
        # At once, before the watch brings it: looked up in the bucket, with the same CSRF.
        seen = await two.get(sid)
        assert seen is not None
        assert (seen.actor, seen.source, seen.read_only) == ("ada", "10.0.0.1", False)
        assert seen.csrf == session.csrf
        assert [s.actor for s in two.live()] == ["ada"]
        assert await two.get("forged") is None

        await two.end(sid)  # signed out on the other replica
        began = time.monotonic()
        await until(lambda: session.ended, timeout=2.0)
        assert time.monotonic() - began < 2.0
        assert await one.get(sid) is None
        assert one.live() == []


async def test_signing_out_everywhere_holds_on_every_replica_and_later_ones(nc: NATS) -> None:
    async with _replica(nc) as one, _replica(nc) as two:
        reader_id, _ = await one.create("rita", "10.0.0.2", read_only=True)
        other_id, _ = await two.create("rob", "10.0.0.3", read_only=True)
        admin_id, _ = await two.create("ada", "10.0.0.1")
        await until(lambda: len(one.live()) == 3 and len(two.live()) == 3, timeout=2.0)
        readers = [s for s in one.live() if s.read_only]

        assert await two.end_all(read_only=True) == 2
        await until(lambda: all(s.ended for s in readers), timeout=2.0)
        assert await one.get(reader_id) is None
        assert await one.get(other_id) is None
        assert await one.get(admin_id) is not None
        assert [s.actor for s in one.live()] == ["ada"]

        # A later read-only sign-in is good; an ended one written again (a last use sent by
        # a replica that had not heard of the cut yet) stays ended.
        later_id, _ = await one.create("rhea", "10.0.0.4", read_only=True)
        assert await two.get(later_id) is not None
        kv = await nc.jetstream().key_value(subjects.ADMIN_SESSIONS_BUCKET)
        old = SessionRecord("rita", "10.0.0.2", True, readers[0].created, time.time())
        await kv.put(f"s.{_digest(reader_id)}", msgspec.json.encode(old))
        await asyncio.sleep(0.3)
        assert await one.get(reader_id) is None
        assert await two.get(reader_id) is None

        # A replica started now learns the cut and the sessions from the bucket alone.
        async with _replica(nc) as three:
            assert sorted(s.actor for s in three.live()) == ["ada", "rhea"]
            assert await three.get(reader_id) is None
            assert await three.get(admin_id) is not None


async def test_the_idle_limit_counts_a_use_on_any_replica(nc: NATS) -> None:
    """An admin busy on one replica is not signed out as idle by the other."""
    async with _replica(nc, idle_s=2.0, touch_s=0.2) as one, _replica(nc, idle_s=2.0) as two:
        sid, _ = await one.create("ada", "10.0.0.1")
        on_two = await two.get(sid)
        assert on_two is not None
        for _ in range(6):  # used on the first replica for 3 s, never on the second
            await asyncio.sleep(0.5)
            assert await one.get(sid) is not None
        assert not on_two.over()
        assert await two.get(sid) is on_two
        # Without a use anywhere, both end it.
        await asyncio.sleep(2.2)
        assert await one.get(sid) is None
        assert await two.get(sid) is None


async def test_a_replaced_token_ends_the_sessions_signed_in_with_the_old_one(nc: NATS) -> None:
    """A restart ended every session, so replacing a token (and restarting) locked out who
    signed in with the old one; sessions that outlive restarts must still end then."""
    old = {False: hashlib.sha256(b"old admin token").digest(), True: b""}
    new = {False: hashlib.sha256(b"new admin token").digest(), True: b""}
    async with _replica(nc) as before, _replica(nc) as after:
        before.use_tokens(old.__getitem__)
        after.use_tokens(new.__getitem__)
        sid, _ = await before.create("ada", "10.0.0.1")
        reader_id, _ = await before.create("rita", "10.0.0.2", read_only=True)
        assert await after.get(sid) is None  # the admin token was replaced: over
        assert await after.get(reader_id) is not None  # the read-only one was not
        assert [s.actor for s in after.live()] == ["rita"]
        assert await before.get(sid) is not None  # a replica still on the old token


async def test_the_bucket_keeps_no_cookie_nor_csrf_token(nc: NATS) -> None:
    async with _replica(nc) as one:
        sid, session = await one.create("ada", "10.0.0.1")
        await one.end_all(read_only=True)
        kv = await nc.jetstream().key_value(subjects.ADMIN_SESSIONS_BUCKET)
        stored = b""
        for key in await kv.keys():
            stored += key.encode() + ((await kv.get(key)).value or b"")
        assert f"s.{_digest(sid)}".encode() in stored
        assert sid.encode() not in stored
        assert session.csrf.encode() not in stored


async def test_without_the_bucket_sessions_stay_the_replicas_and_the_gateway_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade half done (the bucket not provisioned yet) must not stop the gateway."""
    async with jetstream_server(tmp_path / "js") as (client, _):
        store = SessionStore()
        share = SessionShare(client.jetstream(timeout=2), store)
        assert not await share.start()
        assert "sessions are this gateway replica's only" in caplog.text
        sid, _ = await store.create("ada", "10.0.0.1")
        assert await store.get(sid) is not None
        await share.stop()


async def test_a_replica_that_shares_later_keeps_its_sessions_and_the_buckets_apart(
    tmp_path: Path,
) -> None:
    """A replica that could not follow the bucket at start and follows it later: its own
    sessions and "sign out everywhere" were ordered by a counter of its own, compared with
    the bucket's revisions once attached (a replayed cut ended its sessions, its own cut
    refused the bucket's), and its sessions, never written to the bucket, were unknown to
    the other replicas."""
    async with jetstream_server(tmp_path / "js") as (client, _):
        store = SessionStore()
        share = SessionShare(client.jetstream(timeout=2), store, retry_s=0.5)
        assert not await share.start()  # no bucket yet
        try:
            for n in range(3):  # signed in, then signed out everywhere, here only
                await store.create(f"old{n}", "10.0.0.1")
            before_cut = time.time()
            await store.end_all(read_only=False)
            assert store.live() == []
            ro_sid, _ = await store.create("bea", "10.0.0.2", read_only=True)
            admin_sid, _ = await store.create("cy", "10.0.0.3")

            # The bucket, as another replica left it: an admin session, then cuts of the
            # read-only role made before those sign-ins (other replicas' cuts, high revisions).
            js = client.jetstream()
            await _ensure_sessions_bucket(js, Settings())
            kv = await js.key_value(subjects.ADMIN_SESSIONS_BUCKET)
            other_sid = "other-replicas-cookie"
            now = time.time()
            record = SessionRecord(
                "dee", "10.0.0.4", False, now, now, token_mark(other_sid, b""), first=True
            )
            await kv.put(f"s.{_digest(other_sid)}", msgspec.json.encode(record))
            for _ in range(5):
                await kv.put("cut.read-only", msgspec.json.encode({"at": before_cut - 60}))

            await until(lambda: store.shared)
            await until(lambda: all(s.revision > 0 for s in store.live()), timeout=5)
            assert sorted(s.actor for s in store.live()) == ["bea", "cy", "dee"]
            assert await store.get(other_sid) is not None
            assert await store.get(ro_sid) is not None
            assert await store.get(admin_sid) is not None
            async with _replica(client) as other:  # they are every replica's now
                assert await other.get(ro_sid) is not None
                assert await other.get(admin_sid) is not None
                await other.end_all(read_only=True)  # and cuts reach them
                await until(lambda: [s.actor for s in store.live()] == ["cy", "dee"], timeout=5)
        finally:
            await share.stop()


class _FirstTryFails(SessionShare):
    """A share whose first try to follow fails with an error nobody expected (as a bug, or a
    library's error of a kind not caught, would)."""

    tries = 0

    async def _follow(self) -> bool:
        self.tries += 1
        if self.tries == 1:
            raise RuntimeError("unexpected")
        return await super()._follow()


async def test_an_unexpected_error_at_the_first_try_neither_holds_the_start_nor_ends_the_tries(
    nc: NATS,
) -> None:
    """The first try's event was set only after a try that returned: any other error held the
    gateway's start its whole bound (then a warning blaming the NATS config) and ended the
    background tries: the sessions stayed the replica's until a restart."""
    store = SessionStore()
    share = _FirstTryFails(nc.jetstream(timeout=5), store, start_wait_s=5.0, retry_s=0.2)
    try:
        _, took = await _took(share.start())
        assert took < 2.0, f"the start took {took:.1f} s"
        await until(lambda: store.shared, timeout=5)
        assert share.tries >= 2
    finally:
        await share.stop()


async def test_a_malformed_entry_is_ignored_and_the_rest_followed(nc: NATS) -> None:
    kv = await nc.jetstream().key_value(subjects.ADMIN_SESSIONS_BUCKET)
    await kv.put("s.malformed", b"not json")
    await kv.put("cut.admin", b'{"at": "not a time"}')
    async with _replica(nc) as one:
        sid, _ = await one.create("ada", "10.0.0.1")
        async with _replica(nc) as two:
            assert await two.get(sid) is not None
            await kv.put("s.malformed", b"[1, 2]")
            await one.end(sid)
            await until(lambda: two.live() == [], timeout=5)


async def test_wrong_tokens_count_on_every_replica_together(nc: NATS) -> None:
    """A guesser spread over the replicas got LIMIT wrong tokens a window on each."""
    one_guard, two_guard = SigninGuard(), SigninGuard()
    async with _replica(nc, one_guard), _replica(nc, two_guard):
        half = LIMIT // 2
        for _ in range(half):
            assert one_guard.wait_s("203.0.113.9") == 0
            one_guard.failed("203.0.113.9")
        await until(lambda: len(two_guard._recent("203.0.113.9", time.time())) == half, 2.0)
        for _ in range(LIMIT - half):
            assert two_guard.wait_s("203.0.113.9") == 0
            two_guard.failed("203.0.113.9")
        assert two_guard.wait_s("203.0.113.9") > 0
        await until(lambda: one_guard.wait_s("203.0.113.9") > 0, 2.0)
        assert one_guard.wait_s("203.0.113.8") == 0  # another address is not held up
        # A replica started later knows the count from the bucket.
        three_guard = SigninGuard()
        async with _replica(nc, three_guard):
            assert three_guard.wait_s("203.0.113.9") > 0


async def test_a_last_use_written_after_a_sign_out_does_not_bring_the_session_back(
    nc: NATS,
) -> None:
    """A replica that had not heard of a sign-out yet wrote the session's last use with a
    plain put: the key was back, and every replica (and every later one) took it up again."""
    async with _replica(nc) as one:
        store = SessionStore(touch_s=0.0)  # writes a last use at each request
        share = SessionShare(nc.jetstream(timeout=5), store)
        await share.start()
        try:
            sid, _ = await one.create("ada", "10.0.0.1")
            assert await store.get(sid) is not None
            await asyncio.wait(list(store._touches), timeout=2.0)
            await share._follower.stop()  # this replica hears nothing more for a while
            await one.end(sid)
            assert await store.get(sid) is not None  # not heard of the sign-out yet
            assert store._touches
            await asyncio.wait(list(store._touches), timeout=2.0)
        finally:
            await share.stop()
        kv = await nc.jetstream().key_value(subjects.ADMIN_SESSIONS_BUCKET)
        with pytest.raises(KeyNotFoundError):
            await kv.get(f"s.{_digest(sid)}")
        await asyncio.sleep(0.3)
        assert await one.get(sid) is None
        async with _replica(nc) as later:
            assert later.live() == []
            assert await later.get(sid) is None


async def test_a_session_signed_out_is_not_taken_up_again_whatever_is_written(nc: NATS) -> None:
    """A plain write after a sign-out (a replica of the version before, in a rolling upgrade)
    does not bring a session back on a replica that saw the sign-out."""
    async with _replica(nc) as one, _replica(nc) as two:
        sid, session = await one.create("ada", "10.0.0.1")
        assert await two.get(sid) is not None
        await two.end(sid)
        await until(lambda: session.ended, timeout=2.0)
        kv = await nc.jetstream().key_value(subjects.ADMIN_SESSIONS_BUCKET)
        again = SessionRecord(
            "ada", "10.0.0.1", False, session.created, time.time(), session.token_mark
        )
        await kv.put(f"s.{_digest(sid)}", msgspec.json.encode(again))
        await asyncio.sleep(0.3)
        assert await one.get(sid) is None
        assert await two.get(sid) is None
        assert one.live() == []
        assert two.live() == []


async def test_signing_out_everywhere_does_not_depend_on_the_replicas_clocks(nc: NATS) -> None:
    """Cuts compared one replica's clock with another's: a cut made where the clock ran an
    hour ahead ended every sign-in of that hour, one made where it ran behind spared the
    sessions it was meant to end. A cut is written as such a replica writes it."""
    kv = await nc.jetstream().key_value(subjects.ADMIN_SESSIONS_BUCKET)
    async with _replica(nc) as one, _replica(nc) as two:
        before_id, before = await one.create("ada", "10.0.0.1")
        await kv.put("cut.admin", msgspec.json.encode({"at": time.time() - 3600}))  # behind
        await until(lambda: before.ended, timeout=2.0)
        assert await two.get(before_id) is None

        await kv.put("cut.admin", msgspec.json.encode({"at": time.time() + 3600}))  # ahead
        await asyncio.sleep(0.2)
        after_id, _ = await one.create("bob", "10.0.0.2")
        assert await one.get(after_id) is not None
        assert await two.get(after_id) is not None
        async with _replica(nc) as later:
            assert [s.actor for s in later.live()] == ["bob"]
        # A cut made now, on either replica, ends it.
        assert await two.end_all(read_only=False) == 1
        await until(lambda: one.live() == [], timeout=2.0)


async def test_the_bucket_gives_no_way_to_test_a_token_nor_to_forge_a_session(nc: NATS) -> None:
    """Every record held the same mark, a function of the admin token alone: anyone reading
    the bucket (or a NATS backup) could test token guesses offline, past the sign-in guard,
    and anyone writing it could copy the mark into a record of a cookie of their own."""
    token = {False: hashlib.sha256(b"admin token of this test").digest(), True: b""}
    kv = await nc.jetstream().key_value(subjects.ADMIN_SESSIONS_BUCKET)
    async with _replica(nc) as one, _replica(nc) as two:
        one.use_tokens(token.__getitem__)
        two.use_tokens(token.__getitem__)
        first_id, _ = await one.create("ada", "10.0.0.1")
        second_id, _ = await one.create("bob", "10.0.0.2")
        marks = set()
        for sid in (first_id, second_id):
            entry = await kv.get(f"s.{_digest(sid)}")
            marks.add(msgspec.json.decode(entry.value or b"", type=SessionRecord).token_mark)
        assert len(marks) == 2  # a mark follows from the token and the cookie, not the token

        entry = await kv.get(f"s.{_digest(first_id)}")
        forged_id = "a-cookie-of-my-own-making-0123456789"
        await kv.put(f"s.{_digest(forged_id)}", entry.value or b"")  # the record copied
        await asyncio.sleep(0.2)
        assert await two.get(forged_id) is None
        assert await one.get(forged_id) is None
        assert await two.get(first_id) is not None  # the real one is good


async def test_a_replica_whose_watch_is_not_known_good_checks_the_bucket_at_each_request(
    nc: NATS,
) -> None:
    """A replica whose watch had stopped delivering kept a session signed out elsewhere (or
    ended by a sign-out everywhere) good, with no bound, until the follower noticed."""
    async with _replica(nc) as one:
        store = SessionStore()
        share = SessionShare(nc.jetstream(timeout=5), store)
        await share.start()
        try:
            sid, _ = await one.create("ada", "10.0.0.1")
            reader_id, _ = await one.create("rita", "10.0.0.2", read_only=True)
            kept_id, _ = await one.create("bob", "10.0.0.3")
            for cookie in (sid, reader_id, kept_id):
                assert await store.get(cookie) is not None
            await share._follower.stop()  # its watch is gone, and nothing noticed yet
            share._follower.confirmed_at = float("-inf")  # not known good for long
            await one.end(sid)
            await one.end_all(read_only=True)
            assert await store.get(sid) is None
            assert await store.get(reader_id) is None
            assert await store.get(kept_id) is not None
        finally:
            await share.stop()


async def test_wrong_tokens_are_kept_apart_from_the_sessions_briefly_and_capped(
    nc: NATS,
) -> None:
    """Each wrong token from anyone was a write to the sessions' bucket, kept 24 hours in a
    bucket of no size limit: endless addresses (IPv6 /64s) grew it without bound."""
    js = nc.jetstream()
    sessions = await js.stream_info(f"KV_{subjects.ADMIN_SESSIONS_BUCKET}")
    failures = await js.stream_info(f"KV_{subjects.ADMIN_SIGNIN_FAILURES_BUCKET}")
    assert failures.config.max_age == WINDOW_S == 300
    assert failures.config.max_bytes == ADMIN_SIGNIN_FAILURES_MAX_BYTES
    assert failures.config.discard == DiscardPolicy.OLD
    guard = SigninGuard()
    async with _replica(nc, guard) as one:
        sid, _ = await one.create("ada", "10.0.0.1")
        for i in range(200):  # a flood, from as many addresses
            guard.failed(f"2001:db8:{i:x}::1")
        await asyncio.sleep(0.5)
        assert await one.get(sid) is not None
    after = await js.stream_info(f"KV_{subjects.ADMIN_SESSIONS_BUCKET}")
    assert after.state.messages == sessions.state.messages + 1  # the sign-in only
    written = await js.stream_info(f"KV_{subjects.ADMIN_SIGNIN_FAILURES_BUCKET}")
    assert 0 < written.state.messages <= WRITE_BURST + 10  # the write budget, not 200


async def test_an_unknown_or_refused_cookie_is_looked_up_briefly_and_not_again_at_once(
    served: tuple[NATS, asyncio.subprocess.Process],
) -> None:
    """A cookie this replica did not know was looked up in the bucket at every request, with
    no bound but the connection's JetStream timeout (10 s in the gateway): any random cookie
    from anyone, and every request of a session ended by a cut or a replaced token (ended
    here only: fetched and refused again). With JetStream not answering, each such request
    hung that long."""
    nc, server = served
    old = {False: hashlib.sha256(b"old admin token").digest(), True: b""}
    new = {False: hashlib.sha256(b"new admin token").digest(), True: b""}
    async with _replica(nc) as one, _replica(nc) as two:
        one.use_tokens(old.__getitem__)
        two.use_tokens(new.__getitem__)
        old_token_id, _ = await one.create("ada", "10.0.0.1")
        reader_id, reader = await one.create("rita", "10.0.0.2", read_only=True)
        await one.end_all(read_only=True)
        await until(lambda: reader.ended, timeout=2.0)
        await asyncio.sleep(0.3)  # the cut reaches the other replica too
        for cookie in (old_token_id, reader_id, "random"):
            assert await two.get(cookie) is None  # looked up, and refused
        with _frozen(server):
            for cookie in (old_token_id, reader_id, "random"):  # not looked up again
                found, took = await _took(two.get(cookie))
                assert found is None
                assert took < 0.5, (cookie, took)
            began = time.monotonic()
            with pytest.raises(ServiceUnavailable):  # looked up, within a bound: no answer
                await two.get("another random")
            assert time.monotonic() - began < REFRESH_TIMEOUT_S + 0.5
        # A sign-in on another replica is still found within a moment: the watch brings it.
        # (Not "at once": the bucket is not asked for the 10 s after it did not answer, and
        # the watch's delivery can come after the writer's acknowledgement: a CI failure.)
        later_id, _ = await one.create("bob", "10.0.0.3", read_only=True)
        await until(lambda: _digest(later_id) in two._sessions, timeout=3.0)
        assert await two.get(later_id) is not None


async def test_a_bucket_that_does_not_answer_holds_one_request_not_each(
    served: tuple[NATS, asyncio.subprocess.Process],
) -> None:
    """JetStream not answering while the connection stays up: the watch is never confirmed
    again, so each request looked its session up in the bucket and waited the 2 s bound."""
    nc, server = served
    async with _replica(nc) as one:
        store = SessionStore()
        share = SessionShare(nc.jetstream(timeout=5), store)
        await share.start()
        try:
            sid, _ = await one.create("ada", "10.0.0.1")
            assert await store.get(sid) is not None
            with _frozen(server):
                # Not known good for long (set once the server is frozen: a check answered
                # just before would confirm the watch again, and the get not look it up).
                share._follower.confirmed_at = float("-inf")
                share._quiet_until = 0.0  # (nor quiet: a slow call at start under load was)
                found, took = await _took(store.get(sid))  # looked up: no answer
                assert found is not None
                assert REFRESH_TIMEOUT_S - 0.2 < took < REFRESH_TIMEOUT_S + 0.5
                for _ in range(3):  # served from memory meanwhile
                    found, took = await _took(store.get(sid))
                    assert found is not None
                    assert took < 0.5, took
        finally:
            await share.stop()


async def test_a_session_the_bucket_does_not_hold_for_a_moment_is_not_ended_for_good(
    nc: NATS,
) -> None:
    """A replica checking a session found "not found" (a direct get answered by a server
    lagging behind, as here an entry that is not there for a moment) and remembered the
    session as signed out for its whole lifetime on that replica. A sign-out (the entry's
    deletion) still ends it for good."""
    kv = await nc.jetstream().key_value(subjects.ADMIN_SESSIONS_BUCKET)
    async with _replica(nc) as one:
        store = SessionStore()
        share = SessionShare(nc.jetstream(timeout=5), store)
        await share.start()
        try:
            sid, _ = await one.create("ada", "10.0.0.1")
            out_id, _ = await one.create("bob", "10.0.0.2")
            for cookie in (sid, out_id):
                assert await store.get(cookie) is not None
            key = f"s.{_digest(sid)}"
            entry = await kv.get(key)
            share._follower.confirmed_at = float("-inf")  # not known good: each use checks
            stream = f"KV_{subjects.ADMIN_SESSIONS_BUCKET}"
            await nc.jetstream().purge_stream(stream, subject=f"$KV.{stream[3:]}.{key}")
            assert await store.get(sid) is None  # not there now
            assert entry.value is not None
            await kv.put(key, entry.value)  # there again (the lagging server caught up)
            await asyncio.sleep(0.3)
            assert await store.get(sid) is not None

            out = await kv.get(f"s.{_digest(out_id)}")
            await share._follower.stop()  # a sign-out the watch does not bring
            await one.end(out_id)
            assert await store.get(out_id) is None
            assert out.value is not None
            await kv.put(out.key, out.value)  # written back: stays out
            assert await store.get(out_id) is None
        finally:
            await share.stop()


async def test_a_sign_out_the_watch_lost_ends_the_session_at_its_next_last_use(
    nc: NATS,
) -> None:
    """A replica whose watch lost a sign-out (not stalled: its checks find it keeping up)
    kept the session good: its last use's compare-and-set failed each time, and that was
    thrown away."""
    async with _replica(nc) as one:
        store = SessionStore(touch_s=0.2)
        share = SessionShare(nc.jetstream(timeout=5), store)
        await share.start()
        try:
            sid, _ = await one.create("ada", "10.0.0.1")
            session = await store.get(sid)
            assert session is not None
            await share._follower.stop()  # the sign-out is lost; the watch still counts good
            assert not share.stale()
            await one.end(sid)
            await asyncio.sleep(0.3)
            assert await store.get(sid) is not None  # its last use is written: refused
            await until(lambda: session.ended, timeout=2.0)
            assert await store.get(sid) is None
        finally:
            await share.stop()


async def test_a_session_looked_up_while_the_bucket_did_not_answer_is_found_once_it_does(
    served: tuple[NATS, asyncio.subprocess.Process],
) -> None:
    """A look-up the bucket did not answer (a stall, or not asked while quiet) was remembered
    as "not there" for 5 s: a session signed in on another replica, used during a JetStream
    stall, was refused for 5 s after the stall ended."""
    nc, server = served
    async with _replica(nc) as one:
        store = SessionStore()
        share = SessionShare(nc.jetstream(timeout=5), store)
        await share.start()
        try:
            await share._follower.stop()  # only a look-up finds what the other replica writes
            sid, _ = await one.create("ada", "10.0.0.1")
            with _frozen(server), pytest.raises(ServiceUnavailable):
                await store.get(sid)  # no answer: not checked now (not "signed out")
            share._quiet_until = 0.0  # (the quiet window is another matter)
            assert await store.get(sid) is not None  # asked again once it answers
            quiet_id, _ = await one.create("bob", "10.0.0.2")
            share._not_answering()  # not asked while quiet: not remembered either
            with pytest.raises(ServiceUnavailable):
                await store.get(quiet_id)
            share._quiet_until = 0.0
            assert await store.get(quiet_id) is not None
            assert await store.get("random") is None
            assert _digest("random") in store._unknown  # "not there": not asked for a while
        finally:
            await share.stop()


async def test_the_bucket_is_asked_again_as_soon_as_it_answers_after_a_stall(
    served: tuple[NATS, asyncio.subprocess.Process],
) -> None:
    """Any look-up that timed out (a random cookie's too) kept the bucket "quiet" for 10 s:
    unknown cookies were not looked up, so a session signed in on another replica right
    after a stall was refused here until the window ended, though the bucket answered."""
    nc, server = served
    async with _replica(nc) as one:
        store = SessionStore()
        share = SessionShare(nc.jetstream(timeout=5), store)
        await share.start()
        try:
            with _frozen(server), pytest.raises(ServiceUnavailable):
                await store.get("random")  # no answer within 2 s: quiet
            assert share._quiet()
            sid, _ = await one.create("ada", "10.0.0.1")
            with contextlib.suppress(ServiceUnavailable):  # not asked while quiet, unless
                await store.get(sid)  # the watch brought it already
            await until(lambda: _digest(sid) in store._sessions, timeout=3.0)
            assert await store.get(sid) is not None  # the watch's delivery takes effect
            assert not share._quiet()  # and shows the bucket answers
            await share._follower.stop()  # from now on only a look-up finds another's sign-in
            later_id, _ = await one.create("bob", "10.0.0.2")
            assert await store.get(later_id) is not None

            with _frozen(server), pytest.raises(ServiceUnavailable):
                await store.get("another random")
            assert share._quiet()
            await store.create("cy", "10.0.0.3")  # a write here succeeds: not quiet
            third_id, _ = await one.create("dee", "10.0.0.4")
            assert await store.get(third_id) is not None

            share._not_answering()
            fourth_id, _ = await one.create("eve", "10.0.0.5")  # in the bucket: found if asked
            with pytest.raises(ServiceUnavailable):  # not asked while quiet
                await store.get(fourth_id)
            assert _digest(fourth_id) not in store._unknown  # nor remembered as not there
            share._follower.confirmed_at = time.monotonic()  # the follower confirms: answers
            assert await store.get(fourth_id) is not None
        finally:
            await share.stop()


async def test_an_answer_to_a_request_sent_before_the_bucket_went_quiet_keeps_it_quiet(
    served: tuple[NATS, asyncio.subprocess.Process],
) -> None:
    """Any answer ended the quiet window, one to a write sent before it opened (a last use
    written in the background) included: while the bucket answered, but slowly, each
    request waited REFRESH_TIMEOUT_S again and again. An answer to a write sent after the
    window opened still ends it."""
    nc, server = served
    store = SessionStore()
    share = SessionShare(nc.jetstream(timeout=5), store)
    await share.start()
    try:
        await share._follower.stop()  # no watch delivery: only the answers count here
        with _frozen(server):
            early = asyncio.create_task(store.create("ada", "10.0.0.1"))  # sent, unanswered
            await asyncio.sleep(0.1)
            with pytest.raises(ServiceUnavailable):
                await store.get("random")  # no answer within 2 s: quiet from now
            assert share._quiet()
        await early  # answered now, but it was sent before the window opened
        assert share._quiet()
        await store.create("bob", "10.0.0.2")  # sent after it opened, answered
        assert not share._quiet()
    finally:
        await share.stop()


async def test_a_cookie_that_could_not_be_checked_is_not_answered_as_signed_out(
    nc: NATS,
) -> None:
    """A cookie this replica did not know, with the bucket not answering (a stall, or quiet
    after one), was answered as signed out: a page went to sign-in, a form lost its work
    ("Your session ended ... not saved"), a script got 401, though the session was good on
    the replica it signed in on. Now 503 with Retry-After; the sign-in page shows its form."""
    async with _replica(nc) as one:
        ui = AdminUi(lambda: None)
        share = SessionShare(nc.jetstream(timeout=5), ui.sessions)
        await share.start()
        app = FastAPI()
        for router in ui.routers():
            app.include_router(router)
        transport = httpx.ASGITransport(app=app)
        base = "http://gateway.test"
        try:
            await share._follower.stop()  # only a look-up finds what the other replica writes
            sid, _ = await one.create("ada", "10.0.0.1")
            share._not_answering()  # quiet: the bucket is not asked
            async with httpx.AsyncClient(
                transport=transport, base_url=base, cookies={COOKIE: sid}
            ) as web:
                page = await web.get("/ui/")
                assert page.status_code == 503, page.headers
                assert page.headers["retry-after"] == "5"
                assert "text/html" in page.headers["content-type"]
                assert "could not be checked" in page.text
                assert 'href="/ui/signin"' in page.text  # a way out for a cookie gone for good
                form = await web.post("/ui/keys", data={"name": "k"}, headers={"Origin": base})
                assert form.status_code == 503
                assert "text/html" in form.headers["content-type"]
                api = await web.get("/ui/api/overview", headers={"Accept": "application/json"})
                assert api.status_code == 503
                assert api.json()["status"] == 503
                assert api.headers["retry-after"] == "5"
                signin = await web.get("/ui/signin")
                assert signin.status_code == 200
                assert 'name="token"' in signin.text
        finally:
            await share.stop()


async def test_a_bucket_that_errs_at_once_is_not_asked_at_each_made_up_cookie(
    nc: NATS, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a timeout opened the quiet window: a look-up that failed at once (no responders:
    the stream gone, JetStream down) was made, and logged as a warning, at every request of
    every made-up cookie, not "one bucket read each per 5 seconds" as the docs said."""
    store = SessionStore()
    share = SessionShare(nc.jetstream(timeout=5), store)
    await share.start()
    try:
        await share._follower.stop()
        await nc.jetstream().delete_stream(f"KV_{subjects.ADMIN_SESSIONS_BUCKET}")
        caplog.set_level("WARNING", logger="switchyard.admin.ui")
        for n in range(5):
            with pytest.raises(ServiceUnavailable):
                await store.get(f"made up {n}")
        looked_up = [r for r in caplog.records if "was not looked up" in r.getMessage()]
        assert len(looked_up) == 1, [r.getMessage() for r in caplog.records]
        assert share._quiet()
    finally:
        await share.stop()


async def test_a_malformed_cut_or_entry_is_ignored_at_a_check_not_a_server_error(
    nc: NATS,
) -> None:
    """A replica whose watch was not known good read the cut and the entry at each request
    and decoded them unguarded: a malformed ``cut.admin`` made each of its requests a 500."""
    kv = await nc.jetstream().key_value(subjects.ADMIN_SESSIONS_BUCKET)
    await kv.put("cut.admin", b'{"at": "not a time"}')
    async with _replica(nc) as one:
        sid, _ = await one.create("ada", "10.0.0.1")
        bad_sid, _ = await one.create("bob", "10.0.0.2")
        store = SessionStore()
        share = SessionShare(nc.jetstream(timeout=5), store)
        await share.start()
        try:
            assert await store.get(bad_sid) is not None
            share._follower.confirmed_at = float("-inf")  # not known good: each request checks
            assert await store.get(sid) is not None  # the malformed cut ignored
            await kv.put(f"s.{_digest(bad_sid)}", b"not json")
            assert await store.get(bad_sid) is None  # not a session: not there
        finally:
            await share.stop()


class _ShareLocalFailsOnce(SessionStore):
    """A store whose first share_local raises an error nobody expected (after the attach)."""

    shares = 0

    async def share_local(self) -> int:
        self.shares += 1
        if self.shares == 1:
            raise RuntimeError("unexpected")
        return await super().share_local()


class _CountingShare(SessionShare):
    """Counts the entries its followers deliver."""

    def __init__(self, *args: object, **options: float) -> None:
        super().__init__(*args, **options)  # type: ignore[arg-type]
        self.delivered: list[str] = []

    def _on_entry(self, key: str, value: bytes | None, revision: int) -> None:
        self.delivered.append(key)
        super()._on_entry(key, value, revision)


async def test_a_try_that_fails_after_the_attach_leaves_one_follower_not_two(nc: NATS) -> None:
    """share_local raising after the follower was set made the try a failure, and the retry
    started a second follower over the first, left running: each entry was applied twice."""
    store = _ShareLocalFailsOnce()
    share = _CountingShare(nc.jetstream(timeout=5), store, retry_s=0.2)
    await share.start()
    try:
        await until(lambda: store.shares == 2, timeout=5)  # tried again
        await asyncio.sleep(0.2)  # (its share_local done)
        kv = await nc.jetstream().key_value(subjects.ADMIN_SESSIONS_BUCKET)
        await kv.put("cut.read-only", msgspec.json.encode({"at": time.time()}))
        await until(lambda: "cut.read-only" in share.delivered, timeout=5)
        await asyncio.sleep(0.3)  # a second follower's delivery would be in by now
        assert share.delivered.count("cut.read-only") == 1
    finally:
        await share.stop()


async def test_an_unexpected_error_is_named_in_the_log_and_not_blamed_on_the_nats_config(
    nc: NATS, caplog: pytest.LogCaptureFixture
) -> None:
    """After an error nobody expected the log said "cannot be followed ()" (no reason) and
    advised provisioning with this version's NATS config, which it was not about."""
    store = _ShareLocalFailsOnce()
    share = SessionShare(nc.jetstream(timeout=5), store, retry_s=0.2)
    await share.start()
    try:
        await until(lambda: "cannot be followed" in caplog.text, timeout=5)
        said = next(r.getMessage() for r in caplog.records if "cannot be followed" in r.message)
        assert "cannot be followed (RuntimeError)" in said
        assert "An unexpected error" in said
        assert "Provision" not in said
    finally:
        await share.stop()


async def test_a_bucket_not_provisioned_is_named_and_provisioning_advised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with jetstream_server(tmp_path / "js") as (client, _):
        share = SessionShare(client.jetstream(timeout=2), SessionStore(), retry_s=60)
        assert not await share.start()
        await share.stop()
    said = next(r.getMessage() for r in caplog.records if "cannot be followed" in r.message)
    assert "cannot be followed (BucketNotFoundError)" in said
    assert "Provision (`switchyard provision`" in said


class _CutWhileSharing(SessionStore):
    """A store whose sessions are written at the attach just after another replica's "sign
    out everywhere" reached the bucket (after the watch's replay, before its delivery)."""

    kv: Any = None

    async def share_local(self) -> int:
        await self.kv.put("cut.admin", msgspec.json.encode({"at": time.time()}))
        return await super().share_local()


async def test_a_session_written_at_a_late_attach_is_still_ended_by_an_earlier_cut(
    nc: NATS,
) -> None:
    """A session signed in while the replica was not sharing was written at the attach as a
    first entry: its revision, above a cut already in the bucket but not yet delivered, made
    it outlive that "sign out everywhere" on every replica, though signed in before it."""
    store = _CutWhileSharing()
    sid, _ = await store.create("ada", "10.0.0.1")  # not shared yet: this replica's only
    await asyncio.sleep(0.05)  # the cut is made after the sign-in
    store.kv = await nc.jetstream().key_value(subjects.ADMIN_SESSIONS_BUCKET)
    share = SessionShare(nc.jetstream(timeout=5), store)
    assert await share.start()
    try:
        for _ in range(60):  # the cut's delivery ends it here
            if await store.get(sid) is None:
                break
            await asyncio.sleep(0.05)
        assert await store.get(sid) is None
        async with _replica(nc) as other:  # and on every other replica
            assert await other.get(sid) is None
    finally:
        await share.stop()
