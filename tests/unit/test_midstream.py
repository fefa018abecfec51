"""What a failure after part of an answer was sent cools, and how followers take such a write:
pure policy, no servers."""

from __future__ import annotations

import time

import aiohttp
import msgspec
import pytest
from nats.aio.client import Client as NATS

from switchyard.errors import (
    ApiError,
    DeadlineExceeded,
    InvalidRequest,
    SecretMissing,
    ServiceUnavailable,
)
from switchyard.runtime.cooldowns import CooldownBook
from switchyard.schemas.health import PREFIX, Cooldown
from switchyard.workers.modelproxy.midstream import cooldown_after_sent
from switchyard.workers.modelproxy.providers import upstream_errors as ue
from switchyard.workers.modelproxy.providers.openai_compat import stream_error


def _reported(error: dict[str, object]) -> ApiError:
    failure = stream_error(msgspec.json.encode({"error": error}), "p", None)
    assert failure is not None
    return failure


@pytest.mark.parametrize(
    ("failure", "seconds"),
    [
        (_reported({"message": "engine died", "type": "server_error"}), 7.0),
        (_reported({"message": "overloaded", "code": 503}), 7.0),
        (ue.from_status(503, "busy", provider="p", retry_after=30.0), 30.0),
        (ue.from_status(429, "slow down", provider="p"), 7.0),
        (ue.timed_out("p", "the end of the stream"), 7.0),
        (ue.connection_failed("p", aiohttp.ServerDisconnectedError()), 7.0),
        (ue.cut_short("p"), 7.0),
        # A bad request reported in the stream may be the client's own (retry_after 0).
        (_reported({"message": "bad", "type": "invalid_request_error"}), 0.0),
        (_reported({"message": "bad", "code": 400}), 0.0),
        # The caller's doing, or nothing the provider did.
        (DeadlineExceeded("the request deadline passed while the provider worked"), 0.0),
        (InvalidRequest("no"), 0.0),
        (ue.from_status(400, "no", provider="p"), 0.0),
        (SecretMissing("no key"), 0.0),
        (ServiceUnavailable("vault down", code=ue.KEY_UNAVAILABLE), 0.0),
    ],
)
def test_a_failure_after_content_cools_as_a_head_would(failure: ApiError, seconds: float) -> None:
    assert cooldown_after_sent(failure, default_s=7.0) == seconds


def _put(book: CooldownBook, entry: Cooldown) -> None:
    book._on_entry(f"{PREFIX}{entry.deployment}", msgspec.json.encode(entry), 1)


def test_a_write_never_shortens_a_running_cooldown_and_a_delete_ends_it() -> None:
    """A model-proxy writes without reading the bucket: its routing.cooldown_s must not cut a
    head's longer Retry-After short on any head that follows the bucket."""
    book = CooldownBook(NATS().jetstream())  # never started: entries are fed by hand
    now = time.time()
    long = Cooldown(deployment="d", until=now + 60, status=429, reason="rate limited", since=now)
    _put(book, long)
    _put(book, Cooldown(deployment="d", until=now + 5, status=502, reason="broke", since=now))
    assert book.remaining("d", now) == pytest.approx(60)
    longer = Cooldown(deployment="d", until=now + 90, status=502, reason="again", since=now)
    _put(book, longer)
    assert book.remaining("d", now) == pytest.approx(90)
    book._on_entry(f"{PREFIX}d", None, 2)  # ended by the admin API or a stored key
    assert not book.cooling("d", now)
    _put(book, Cooldown(deployment="d", until=now + 5, status=502, reason="broke", since=now))
    assert book.remaining("d", now) == pytest.approx(5)
    # A cooldown already over is replaced by any new one.
    _put(book, Cooldown(deployment="e", until=now - 1, status=502, reason="old", since=now - 6))
    _put(book, Cooldown(deployment="e", until=now + 3, status=502, reason="new", since=now))
    assert book.remaining("e", now) == pytest.approx(3)
