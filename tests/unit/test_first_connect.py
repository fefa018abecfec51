"""What a first NATS connection keeps of its failed attempts (``bus.connect.FirstConnect``).

A refused login is kept once, however the caller connects: the error raised when the
connect gives up names what the attempts failed with, each once. A service (unlimited
reconnects) keeps only refused logins, and gives up once every server refused it more than
once over a while. The failures are the exceptions nats-py reports to ``error_cb``; the
existing ``tests/test_connect_refused.py`` drives the same path with a real nats-server.
"""

from __future__ import annotations

import nats.errors

from switchyard.bus.connect import LOGIN_REFUSALS, REFUSED_FOR_S, FirstConnect

# What nats-py reports when the server refuses the login during a first connect.
REFUSED = "nats: 'Authorization Violation'"


def test_a_one_shot_callers_refused_login_is_kept_once() -> None:
    first = FirstConnect(2, one_shot=True)
    down = ConnectionRefusedError()
    refusal = nats.errors.Error(REFUSED)
    first.failed(down)
    first.failed(refusal)
    assert first.failures == [down, refusal]
    assert first.reason(nats.errors.NoServersError()) == REFUSED


def test_a_service_keeps_refused_logins_once_and_gives_up_on_them_after_a_while() -> None:
    now = [0.0]
    first = FirstConnect(2, one_shot=False, clock=lambda: now[0])
    first.failed(ConnectionRefusedError())  # a node restarting: tried again, not kept
    refusals = [nats.errors.Error(REFUSED) for _ in range(LOGIN_REFUSALS * 2)]
    for refusal in refusals:
        first.failed(refusal)
    assert first.failures == refusals
    assert not first.refused.is_set()  # every server refused, but within a moment
    now[0] = REFUSED_FOR_S
    first.failed(nats.errors.AuthorizationError())
    assert first.refused.is_set()
    assert first.reason(nats.errors.NoServersError()) == "nats: authorization failed"


def test_a_refused_login_is_the_reason_whatever_came_after_it() -> None:
    """The attempt after a refusal can fail writing to the connection the server closed: the
    error said only "Broken pipe", not that the server does not know the certificate."""
    first = FirstConnect(1, one_shot=True)
    first.failed(nats.errors.Error(REFUSED))
    first.failed(BrokenPipeError(32, "Broken pipe"))
    assert first.login_refused
    assert first.reason(nats.errors.NoServersError()) == REFUSED


def test_without_a_refused_login_the_last_failure_is_the_reason() -> None:
    first = FirstConnect(1, one_shot=True)
    first.failed(ConnectionRefusedError())
    first.failed(BrokenPipeError(32, "Broken pipe"))
    assert not first.login_refused
    assert first.reason(nats.errors.NoServersError()) == "[Errno 32] Broken pipe"
