"""The admin web app's pure parts: error placement, sessions, CSRF origin checks, the key index."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest
from starlette.requests import Request

from switchyard.admin.key_index import KeyIndex
from switchyard.admin.ui import csrf, signin_guard
from switchyard.admin.ui.app import _over_tls
from switchyard.admin.ui.forms import field_name, place, split_validation
from switchyard.admin.ui.pages.secrets import _checked
from switchyard.admin.ui.pages.spend import _cell, csv_text
from switchyard.admin.ui.render import ENV, usd
from switchyard.admin.ui.sessions import SessionStore
from switchyard.admin.ui.signin_guard import SigninGuard
from switchyard.schemas.keys import KEY_ENCODER, ClientKey
from switchyard.schemas.routing import Route, RouteTable

pytestmark = pytest.mark.unit


def test_msgspec_errors_name_the_form_field() -> None:
    doc = {"deployments": [{"provider": "p", "model": "m", "weight": -1}]}
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert(doc, Route)
    message, path = split_validation(str(caught.value))
    assert path == "deployments[0].weight"
    assert ">= 0" in message
    assert field_name(path) == "deployments-0-weight"


def test_api_params_land_on_the_deepest_known_field() -> None:
    fields = ["alias", "fallbacks", "deployments", "deployments-0-provider"]
    assert place("routes.r1.fallbacks[0]", fields, "routes.r1.") == "fallbacks"
    assert place("routes.r1.deployments[0].provider", fields, "routes.r1.") == (
        "deployments-0-provider"
    )
    assert place("routes.r1.deployments[3].timeouts", fields, "routes.r1.") == "deployments"
    assert place("(document)", fields) == ""
    assert place(None, fields) == ""


async def test_sessions_expire_when_idle_and_end_at_sign_out() -> None:
    store = SessionStore(idle_s=60, absolute_s=3600)
    sid, session = await store.create("ada", "127.0.0.1")
    assert await store.get(sid) is session
    assert await store.get("forged") is None
    session.last_seen = time.time() - 61
    assert await store.get(sid) is None
    assert session.ended
    sid, session = await store.create("ada", "127.0.0.1")
    await store.end(sid)
    assert await store.get(sid) is None
    assert session.ended
    assert sid not in repr(store.__dict__)  # only digests are kept


def _request(headers: dict[str, str]) -> Request:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/ui/keys",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    return Request(scope)


async def test_csrf_needs_the_token_and_this_origin() -> None:
    _, session = await SessionStore().create("ada", "")
    host = {"host": "gw:8081"}
    assert csrf.valid(_request(host), session, session.csrf)
    assert csrf.valid(_request({**host, "x-csrf-token": session.csrf}), session, None)
    assert csrf.valid(_request({**host, "origin": "http://gw:8081"}), session, session.csrf)
    assert not csrf.valid(_request(host), session, None)
    assert not csrf.valid(_request(host), session, "wrong")
    assert not csrf.valid(_request({**host, "origin": "http://evil"}), session, session.csrf)
    assert not csrf.valid(_request({**host, "origin": "null"}), session, session.csrf)


def test_templates_escape_what_people_typed() -> None:
    html = ENV.from_string("<td>{{ name }}</td>").render(name="<img src=x onerror=alert(1)>")
    assert "<img" not in html
    assert "&lt;img" in html


def _key(i: int, **fields: Any) -> bytes:
    record = ClientKey(
        id=f"key_{i:04d}", hash=f"{i:064x}", name=f"app-{i}", created_at=float(i), **fields
    )
    return KEY_ENCODER.encode(record)


def test_key_index_pages_searches_and_follows_changes() -> None:
    index = KeyIndex.__new__(KeyIndex)  # no bucket: feed entries by hand
    KeyIndex.__init__(index, js=None)  # type: ignore[arg-type]
    for i in range(1, 121):
        index._on_entry(f"k.{i:064x}", _key(i, team="red" if i % 2 else "blue"), i)
    first = index.search(limit=50)
    assert (first.total, first.count) == (120, 120)
    assert [k.id for k in first.keys[:2]] == ["key_0120", "key_0119"]  # newest first
    assert [k.id for k in index.search(offset=110, limit=50).keys][-1] == "key_0001"
    assert index.search("app-7", limit=5).total == 11  # app-7 and app-70 to app-79
    assert index.search(team="blue").total == 60
    index._on_entry(f"k.{7:064x}", _key(7, disabled=True), 200)
    assert [k.id for k in index.search(state="revoked").keys] == ["key_0007"]
    index._on_entry(f"k.{8:064x}", None, 201)
    assert index.get("key_0008") is None
    assert index.search().total == 119
    assert index.record_name("key_0009") == f"k.{9:064x}"


def test_deleting_a_secret_strands_only_routes_with_nothing_else_to_answer() -> None:
    table = msgspec.convert(
        {
            "providers": {
                "vault": {"kind": "openai", "secret": "k"},
                "other": {"kind": "openai", "secret": "j"},
            },
            "routes": {
                "only": {"deployments": [{"provider": "vault", "model": "m"}]},
                "mixed": {
                    "deployments": [
                        {"provider": "vault", "model": "m"},
                        {"provider": "other", "model": "m"},
                    ]
                },
                "backed": {
                    "deployments": [{"provider": "vault", "model": "n"}],
                    "fallbacks": ["elsewhere"],
                },
                "elsewhere": {"deployments": [{"provider": "other", "model": "n"}]},
            },
        },
        RouteTable,
    )
    users = table.secret_users("k")
    providers, routes = users.providers, users.routes
    assert (providers, routes) == (["vault"], ["backed", "mixed", "only"])
    assert users.stranded == ["only"]


async def test_swept_evicted_and_old_sessions_end_their_open_streams() -> None:
    """A stream stops when its session is over; only get() and sign-out used to say so."""
    store = SessionStore(idle_s=60, absolute_s=3600, max_sessions=2)
    _, idle = await store.create("ada", "")
    idle.last_seen = time.time() - 61
    await store.create("bob", "")  # a sign-in sweeps the expired ones
    assert idle.over()
    _, oldest = await store.create("cy", "")
    oldest.last_seen = 0.0  # the least recently used
    await store.create("dee", "")  # evicts it
    assert oldest.over()
    _, old = await store.create("eve", "")
    assert not old.over()
    old.ends_at = time.time() - 1  # 24 hours after its sign-in, however busy
    assert old.over()


async def test_read_only_sign_ins_never_end_an_admins_session() -> None:
    """One cap (10,000, least recently used ended) for every session: a script signing in
    with the read-only token signed every idle admin out. Read-only sessions have their own."""
    store = SessionStore(idle_s=60, absolute_s=3600, max_sessions=2, max_read_only=2)
    _, admin = await store.create("ada", "")
    admin.last_seen = time.time() - 59  # idle, the least recently used of all
    viewers = [(await store.create(f"viewer {i}", "", read_only=True))[1] for i in range(5)]
    assert not admin.over()
    assert [v.over() for v in viewers] == [True, True, True, False, False]
    _, second = await store.create("bob", "")
    _, third = await store.create("cy", "")  # an admin's sign-in ends the least recent admin
    assert admin.over()
    assert not second.over()
    assert not third.over()
    assert not viewers[-1].over()


async def test_a_live_stream_and_a_request_follow_one_idle_rule() -> None:
    """An open live stream never counted as use, so an admin watching the overview was
    signed out at the next click, while the stream ran on past the idle limit."""
    store = SessionStore(idle_s=60, absolute_s=3600)
    _, left = await store.create("bob", "")
    left.last_seen = time.time() - 61
    assert left.over()  # a stream still open on it ends, as the next request would
    sid, watched = await store.create("ada", "")
    watched.last_seen = time.time() - 59
    watched.seen()  # what the stream does as it sends
    watched.last_seen -= 30
    assert not watched.over()
    assert await store.get(sid) is watched  # the next click finds the session


def test_the_sign_in_hint_says_a_changed_token_file_needs_a_restart() -> None:
    """The page said "This stack's token: cat <file>" after the file was replaced without a
    restart, and the token it showed was refused."""
    page = ENV.get_template("signin.html").render(token_command="cat /srv/admin-token")
    assert "cat /srv/admin-token" in page
    assert "a token written to that file since works after a restart" in page


def test_wrong_tokens_block_their_address_for_a_while() -> None:
    guard = SigninGuard(limit=3, window_s=60)
    assert guard.wait_s("10.0.0.1", now=0) == 0
    assert [guard.failed("10.0.0.1", now=t) for t in (1, 2, 3)] == [False, False, True]
    assert guard.wait_s("10.0.0.1", now=10) == pytest.approx(51)
    assert guard.wait_s("10.0.0.2", now=10) == 0  # another address is not held
    assert guard.wait_s("10.0.0.1", now=61.5) == 0  # the first failure has aged out


def test_the_session_cookie_is_secure_behind_a_tls_proxy() -> None:
    assert not _over_tls(_request({"host": "gw"}))
    assert _over_tls(_request({"host": "gw", "x-forwarded-proto": "https"}))
    assert _over_tls(_request({"host": "gw", "x-forwarded-proto": "HTTPS, http"}))
    assert not _over_tls(_request({"host": "gw", "x-forwarded-proto": "http"}))


def test_exported_names_never_become_spreadsheet_formulas() -> None:
    assert _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _cell("@SUM(A1)") == "'@SUM(A1)"
    assert _cell("-2+3") == "'-2+3"
    assert _cell("payments") == "payments"
    assert _cell("") == ""


@pytest.mark.parametrize("separator", [";", ",", "\t"])
def test_exported_names_stay_text_in_a_spreadsheet_that_splits_on_another_separator(
    separator: str,
) -> None:
    """A key named ``=1+2;=cmd`` was written unquoted: Excel with ``;`` as its separator
    (many locales) made ``=cmd`` a cell of its own, and a formula."""
    name = f"=1+2{separator}=cmd{separator} -1{separator}@x"
    line = csv_text([[_cell(name), _cell("plain"), 3]]).rstrip("\r\n")
    assert line.startswith('"')  # every field quoted
    assert line.endswith('"')
    for split in (";", ",", "\t"):  # a spreadsheet splitting on any of them, quotes or not
        for cell in line.split(split):
            shown = cell.strip(' "')
            assert shown[:1] not in ("=", "+", "-", "@"), (split, cell)
    assert _cell("payments; ops") == "payments; ops"  # a name without a formula is as typed


def test_an_ipv6_client_is_counted_by_its_64_and_all_addresses_share_a_recording_cap() -> None:
    """One host holds a whole /64; and many addresses together must not flood the log."""
    guard = SigninGuard(limit=3, window_s=60, recorded=3, record_window_s=60)
    for host in ("2001:db8::1", "2001:db8::2", "2001:db8::3"):
        guard.failed(host, now=1)
    assert guard.wait_s("2001:db8::ffff", now=2) > 0  # the same /64
    assert guard.wait_s("2001:db8:0:1::1", now=2) == 0  # another /64
    assert [guard.record("10.0.0.1", now=t) for t in (1, 2, 3, 4)] == [
        signin_guard.Record.YES,
        signin_guard.Record.YES,
        signin_guard.Record.LAST,
        signin_guard.Record.NO,
    ]
    assert guard.summary(now=63.5) is not None  # the window is over: its summary, then
    assert guard.record("10.0.0.1", now=63.5) is signin_guard.Record.YES  # a new window


def test_ipv4_clients_on_a_dual_stack_socket_are_counted_one_by_one() -> None:
    """``::ffff:198.51.100.7`` was counted as ``::/64``: every IPv4 client of a gateway on
    ``::`` shared one count, and one of them blocked them all."""
    guard = SigninGuard(limit=3, window_s=60)
    for t in (1, 2, 3):
        guard.failed("::ffff:198.51.100.7", now=t)
    assert guard.wait_s("::ffff:198.51.100.7", now=4) > 0
    assert guard.wait_s("198.51.100.7", now=4) > 0  # the same client either way
    assert guard.wait_s("::ffff:198.51.100.8", now=4) == 0
    assert guard.wait_s("::1", now=4) == 0


def test_wrong_tokens_past_the_cap_are_summed_up_once_per_window() -> None:
    """A flood from many addresses fills the cap; an intruder's wrong token past it (or one
    refused while its address waits) gets no entry of its own, but the window's one summary
    entry counts it and its address: nobody is invisible, and at most cap + 1 entries a
    window come from wrong tokens."""
    guard = SigninGuard(limit=10, window_s=300, recorded=5, record_window_s=3600)
    verdicts = [guard.record(f"198.51.100.{i}", now=10 + i) for i in range(8)]
    assert verdicts.count(signin_guard.Record.NO) == 3
    guard.record("203.0.113.66", now=100)  # the intruder
    guard.skip("198.51.100.5", now=200)  # an address told to wait (seen already)
    assert guard.window_left(now=10) == 3600
    assert guard.summary(now=3000) is None  # the window is still open
    summary = guard.summary(now=3611)
    assert summary is not None
    assert (summary.count, summary.addresses, summary.start) == (5, 4, 10)
    detail = signin_guard.unrecorded_detail(summary)
    assert detail.startswith("5 more wrong admin tokens, not recorded one by one, from 4 addresses")
    assert guard.summary(now=3612) is None  # given once
    assert guard.window_left(now=3612) == 0
    assert guard.record("198.51.100.1", now=3700) is signin_guard.Record.YES  # a new window
    assert guard.summary(now=7400) is None  # nothing went unrecorded in it


def test_a_stop_cuts_the_window_short_and_sums_it_up_at_once() -> None:
    """The gateway's stop dropped a window's count: its summary waited for the hour's end."""
    guard = SigninGuard(limit=10, window_s=300, recorded=1, record_window_s=3600)
    assert guard.record("198.51.100.1", now=10) is signin_guard.Record.LAST
    guard.record("198.51.100.2", now=20)
    guard.record("198.51.100.3", now=30)
    assert guard.summary(now=100) is None  # still open
    summary = guard.summary(now=100, cut=True)
    assert summary is not None
    assert (summary.count, summary.addresses, summary.start, summary.end) == (2, 2, 10, 100)
    assert guard.summary(now=101, cut=True) is None  # given once
    assert not guard.counting()


def test_a_window_left_unsummarised_keeps_its_count_until_it_is_taken() -> None:
    guard = SigninGuard(recorded=1, record_window_s=60)
    guard.record("10.0.0.1", now=0)
    guard.record("10.0.0.2", now=1)  # unrecorded
    assert guard.record("10.0.0.3", now=100) is signin_guard.Record.NO  # not yet summed up
    summary = guard.summary(now=101)
    assert summary is not None
    assert summary.count == 2


@pytest.mark.parametrize(
    ("value", "digits", "shown"),
    [
        (0.000001, 2, "$0.000001"),  # an explorer's budget read "$0.0000"
        (0.0042, 2, "$0.0042"),
        (0.00001234, 4, "$0.000012"),
        (0.009999, 4, "$0.0100"),
        (1e-12, 2, "<$0.00000001"),
        (0.0, 2, "$0.00"),
        (1234.5, 2, "$1,234.50"),
        (None, 2, "\u2013"),
    ],
)
def test_amounts_below_a_cent_keep_two_significant_digits(
    value: float | None, digits: int, shown: str
) -> None:
    assert usd(value, digits) == shown


def test_a_window_opened_while_the_last_ones_summary_waits_is_still_counting() -> None:
    """A reviewer's case: a wrong token just after a window ended opened the next one while
    the first window's summary task still slept; that task found the new window open, wrote
    nothing and ended, and nothing was left to sum the new window up. The task now goes on
    while the guard is `counting`."""
    guard = SigninGuard(limit=10, window_s=300, recorded=1, record_window_s=60)
    assert not guard.counting()
    guard.record("198.51.100.1", now=0)
    guard.record("198.51.100.2", now=1)  # past the cap: counted
    assert guard.counting()
    assert guard.summary(now=60.05) is not None  # the sign-in that follows takes it first
    assert not guard.counting()
    guard.record("198.51.100.3", now=60.06)  # opens the next window: recorded
    assert not guard.counting()
    guard.skip("198.51.100.3", now=60.07)  # its address waits: counted
    assert guard.counting()  # so the sleeping task, waking now, sleeps on to 120.06
    assert guard.summary(now=60.1) is None
    assert guard.summary(now=120.1) is not None
    assert not guard.counting()


def test_a_secret_value_of_two_lines_is_said_as_such_on_the_form() -> None:
    """The one-line rule's refusal read "Enter the key (1 to 16,384 characters)"."""
    assert "one line" in _checked("ok", "sk-a\tb")["value"]
    assert "16,384" in _checked("ok", "")["value"]
    assert _checked("ok", "sk-fine") == {}
