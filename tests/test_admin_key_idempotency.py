"""``POST /admin/v1/keys`` with an ``Idempotency-Key``: a CI job that retries a create after a
timeout gets the first answer (the same key id, the secret left out and said so), not a second
key; another body under the same value is a 409. The answers are kept in NATS KV, so every
gateway replica sees them. The session stack."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from subprocess import DEVNULL
from typing import Any

import httpx
import msgspec
import nats
import pytest
from nats.js.api import KeyValueConfig
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from switchyard.admin import key_idempotency
from switchyard.admin.key_idempotency import (
    Claim,
    IdempotentCreates,
    Remembered,
    Replay,
    body_digest,
)
from switchyard.admin.keys import KeyAdmin, KeyIdTaken
from switchyard.bus import identities, subjects
from switchyard.errors import Conflict, ServiceUnavailable
from switchyard.schemas.keys import new_key_id
from switchyard.stack import binaries
from switchyard.stack.ports import accepting
from tests.stacks import Stack
from tests.support import free_port, pause, until

pytestmark = pytest.mark.integration


async def _create(stack: Stack, body: bytes, value: str | None) -> httpx.Response:
    headers = {**stack.admin_headers(), "Content-Type": "application/json"}
    if value is not None:
        headers["Idempotency-Key"] = value
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"{stack.gateway_url}/admin/v1/keys", content=body, headers=headers)


async def _named(stack: Stack, name: str) -> list[dict[str, Any]]:
    listed = await stack.admin("GET", f"/keys?name={name}")
    assert listed.status_code == 200, listed.text
    keys: list[dict[str, Any]] = listed.json()["keys"]
    return keys


def _error(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    return error


async def test_a_retried_create_answers_the_first_key_without_its_secret(stack: Stack) -> None:
    name = f"ci-{secrets.token_hex(4)}"
    value = secrets.token_hex(16)
    first = await _create(stack, json.dumps({"name": name, "team": "ci"}).encode(), value)
    assert first.status_code == 201, first.text
    made = first.json()
    assert made["key"].startswith("sk-")
    assert "idempotent_replay" not in made
    assert "Idempotent-Replayed" not in first.headers

    # The retry: the same fields, in another order and spacing.
    again = await _create(stack, b'{ "team": "ci",  "name": "' + name.encode() + b'" }', value)
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    replay = again.json()
    assert replay["record"] == made["record"]  # the same key, as first answered
    assert replay["key"] is None  # the secret is shown once, never kept
    assert replay["idempotent_replay"] is True
    assert "first answer only" in replay["key_note"]
    assert made["key"] not in again.text
    assert [k["id"] for k in await _named(stack, name)] == [made["record"]["id"]]

    # Another body under the same value: a caller's bug, refused (OpenAI-shaped 409).
    other = await _create(stack, json.dumps({"name": name, "team": "other"}).encode(), value)
    error = _error(other, 409)
    assert error["code"] == "idempotency_key_reused"
    assert other.headers["x-should-retry"] == "false"  # a retry of it can never succeed
    assert error["param"] == "Idempotency-Key"
    # Without the header, a create is a create, as before.
    plain = await _create(stack, json.dumps({"name": name, "team": "ci"}).encode(), None)
    assert plain.status_code == 201, plain.text
    assert len(await _named(stack, name)) == 2


async def test_a_refused_create_frees_its_value_and_a_bad_value_is_a_400(stack: Stack) -> None:
    name = f"ci-{secrets.token_hex(4)}"
    value = secrets.token_hex(16)
    bad = json.dumps({"name": name, "budget_period": "fortnightly"}).encode()
    assert (await _create(stack, bad, value)).status_code == 400
    good = await _create(stack, json.dumps({"name": name}).encode(), value)
    assert good.status_code == 201, good.text  # not a 409: nothing was made the first time
    for wrong in ("x" * 256, "with space"):
        error = _error(await _create(stack, json.dumps({"name": name}).encode(), wrong), 400)
        assert error["param"] == "Idempotency-Key"
        assert error["code"] == "invalid_header"


async def test_the_answers_are_shared_through_nats_kv(stack: Stack) -> None:
    """What one replica answered another finds (the store over its own connection), and a
    create still in progress elsewhere is a 409 to try again, not a second key."""
    name = f"ci-{secrets.token_hex(4)}"
    value = secrets.token_hex(16)
    first = await _create(stack, json.dumps({"name": name}).encode(), value)
    assert first.status_code == 201, first.text
    nc = await stack.connect(identities.ADMIN.name)
    try:
        store = IdempotentCreates(nc.jetstream(timeout=10))

        async def never(_key_id: str) -> bool:
            return False

        found = await store.claim(value, body_digest({"name": name}), never)
        assert isinstance(found, Replay)
        assert found.answer["record"]["id"] == first.json()["record"]["id"]
        assert "key" not in found.answer  # no secret stored

        # Another replica's create under a new value, reserved but its key not written yet.
        busy = secrets.token_hex(16)
        held = await store.claim(busy, body_digest({"name": name}), never)
        assert isinstance(held, Claim)
        assert isinstance(held.held, Remembered)
        assert held.held.at <= time.time()
    finally:
        await nc.close()
    answer = await _create(stack, json.dumps({"name": name}).encode(), busy)
    error = _error(answer, 409)
    assert error["code"] == "idempotency_key_in_use"
    assert answer.headers["Retry-After"] == "1"
    assert len(await _named(stack, name)) == 1


async def _never(_key_id: str) -> bool:
    return False


async def test_a_stalled_create_taken_over_never_makes_a_second_key(stack: Stack) -> None:
    """Replica A reserves a value and stalls past PENDING_S before writing its key; replica B
    takes the reservation over and writes the key; A resumes. Before, B took over with a new
    key id and both wrote a key: two live keys for one value. Now B keeps A's key id and only
    the first to take that id writes it; a retry is answered with that one key."""
    name = f"ci-{secrets.token_hex(4)}"
    value = secrets.token_hex(16)
    digest = body_digest({"name": name})
    nc = await stack.connect(identities.ADMIN.name)
    try:
        a = IdempotentCreates(nc.jetstream(timeout=10), pending_s=0.3)
        b = IdempotentCreates(nc.jetstream(timeout=10), pending_s=0.3)
        first = await a.claim(value, digest, _never)
        assert isinstance(first, Claim)
        await asyncio.sleep(0.6)  # A stalls past PENDING_S
        taken = await b.claim(value, digest, _never)
        assert isinstance(taken, Claim)
        assert taken.key_id == first.key_id  # the reserved id is kept
        keys = KeyAdmin(nc.jetstream(timeout=10))
        _, made = await keys.create(name, key_id=taken.key_id, reserve=b.writer(taken, _never))
        assert made.id == first.key_id
        with pytest.raises(KeyIdTaken):  # A resumes: the id is B's, A writes nothing
            await keys.create(name, key_id=first.key_id, reserve=a.writer(first, _never))
    finally:
        await nc.close()
    async with asyncio.timeout(10):
        while not (listed := await _named(stack, name)):
            await asyncio.sleep(0.1)
    assert [k["id"] for k in listed] == [first.key_id]
    # B never stored its answer: the retry is answered from the key, and makes none.
    again = await _create(stack, json.dumps({"name": name}).encode(), value)
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["record"]["id"] == first.key_id
    assert again.json()["key"] is None
    assert len(await _named(stack, name)) == 1


async def test_a_reservation_ages_by_the_time_nats_stored_it(stack: Stack) -> None:
    """A reservation written by a gateway whose clock runs an hour ahead is still taken over
    once PENDING_S passed (before, its own `at` made it look fresh for an hour and more)."""
    value = secrets.token_hex(16)
    digest = body_digest({"name": "skewed"})
    nc = await stack.connect(identities.ADMIN.name)
    try:
        js = nc.jetstream(timeout=10)
        kv = await js.key_value(subjects.ADMIN_IDEMPOTENCY_BUCKET)
        ahead = Remembered(body=digest, key_id=new_key_id(), at=time.time() + 3600)
        entry = "c." + hashlib.sha256(value.encode()).hexdigest()
        await kv.create(entry, msgspec.json.encode(ahead))
        store = IdempotentCreates(js, pending_s=0.3)
        await asyncio.sleep(0.6)
        taken = await store.claim(value, digest, _never)
        assert isinstance(taken, Claim)
        assert taken.key_id == ahead.key_id
    finally:
        await nc.close()


async def test_a_failed_key_write_does_not_hold_its_value_for_a_day(stack: Stack) -> None:
    """A create took its key id (``w.``) and its key's write failed (a NATS timeout: a 500).
    Before, every retry past PENDING_S took the reservation over, found the id taken and
    answered 409 ``idempotency_key_in_use`` for 24 h; now the stale ``w.`` is taken over and
    the key made, once."""
    name = f"ci-{secrets.token_hex(4)}"
    value = secrets.token_hex(16)
    digest = body_digest({"name": name})
    nc = await stack.connect(identities.ADMIN.name)
    try:
        js = nc.jetstream(timeout=10)
        a = IdempotentCreates(js, pending_s=0.3)
        first = await a.claim(value, digest, _never)
        assert isinstance(first, Claim)
        assert await a.writing(first, _never)  # ...and its key's write failed: no record
        b = IdempotentCreates(js, pending_s=0.3)
        await asyncio.sleep(0.6)
        taken = await b.claim(value, digest, _never)
        assert isinstance(taken, Claim)
        assert taken.key_id == first.key_id
        keys = KeyAdmin(js)
        _, made = await keys.create(name, key_id=taken.key_id, reserve=b.writer(taken, _never))
        assert made.id == first.key_id
        # A third, past PENDING_S again, with the key there: it writes none.
        await asyncio.sleep(0.6)

        async def there(_key_id: str) -> bool:
            return True

        assert not await IdempotentCreates(js, pending_s=0.3).writing(taken, there)
    finally:
        await nc.close()
    async with asyncio.timeout(10):
        while not (listed := await _named(stack, name)):
            await asyncio.sleep(0.1)
    assert [k["id"] for k in listed] == [first.key_id]


async def test_a_gateway_clock_ahead_takes_no_create_in_progress_over(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ages are the NATS server's now less the stored time: a gateway whose clock runs two
    minutes ahead sees a create reserved a moment ago as one in progress (before, it took
    it over, with the reservation's key id, while the first was still writing)."""
    value = secrets.token_hex(16)
    digest = body_digest({"name": "skewed"})
    nc = await stack.connect(identities.ADMIN.name)
    try:
        js = nc.jetstream(timeout=10)
        first = await IdempotentCreates(js).claim(value, digest, _never)
        assert isinstance(first, Claim)
        real = time.time
        monkeypatch.setattr(
            key_idempotency, "time", type("Ahead", (), {"time": staticmethod(lambda: real() + 120)})
        )
        with pytest.raises(Conflict) as refused:
            await IdempotentCreates(js).claim(value, digest, _never)
        assert refused.value.code == "idempotency_key_in_use"
    finally:
        await nc.close()


async def test_retries_racing_on_a_create_in_progress_are_all_409s(stack: Stack) -> None:
    """Retries of a value whose create is in progress, at once: each writes the probe entry
    (``t.``), which the bucket keeps one version of. Before, a second probe write removed the
    first's message and reading it back by its revision raised NotFoundError (a 500); now
    each is a 409 ``idempotency_key_in_use``."""
    value = secrets.token_hex(16)
    digest = body_digest({"name": "racing"})
    nc = await stack.connect(identities.ADMIN.name)
    try:
        js = nc.jetstream(timeout=10)
        first = await IdempotentCreates(js).claim(value, digest, _never)
        assert isinstance(first, Claim)
        stores = [IdempotentCreates(js) for _ in range(12)]
        answers = await asyncio.gather(
            *(store.claim(value, digest, _never) for store in stores), return_exceptions=True
        )
        assert all(isinstance(a, Conflict) for a in answers), answers
        assert {a.code for a in answers if isinstance(a, Conflict)} == {"idempotency_key_in_use"}
    finally:
        await nc.close()


async def test_no_key_write_is_kept_for_a_reconnect(tmp_path: Path) -> None:
    """The gateway's connection to NATS is down when an idempotent create's key is about to
    be written: a 503, nothing sent. Before, nats-py kept the writes in its reconnect buffer
    (the caller got an error after the timeout and retried) and sent them once reconnected,
    maybe after another gateway had taken the reservation over and written a second key."""
    port = free_port()
    store = tmp_path / "js"
    args = ["-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)]

    async def serve() -> asyncio.subprocess.Process:
        server = await asyncio.create_subprocess_exec(
            str(binaries.nats_server()), *args, stdout=DEVNULL, stderr=DEVNULL
        )
        await accepting(port)
        return server

    server = await serve()
    nc = await nats.connect(
        f"nats://127.0.0.1:{port}", reconnect_time_wait=0.2, max_reconnect_attempts=-1
    )
    try:
        js = nc.jetstream(timeout=2)
        await js.create_key_value(KeyValueConfig(bucket=subjects.ADMIN_IDEMPOTENCY_BUCKET))
        await js.create_key_value(KeyValueConfig(bucket=subjects.KEYS_BUCKET, history=5))
        creates = IdempotentCreates(js, nc=nc)
        claim = await creates.claim(secrets.token_hex(16), body_digest({"name": "x"}), _never)
        assert isinstance(claim, Claim)
        keys = KeyAdmin(js)
        await keys.scan()  # (its bucket found, as a gateway's long-lived KeyAdmin has)
        server.terminate()
        await server.wait()
        await until(lambda: not nc.is_connected)
        with pytest.raises(ServiceUnavailable):
            await keys.create("x", key_id=claim.key_id, reserve=creates.writer(claim, _never))
        server = await serve()
        await until(lambda: nc.is_connected, timeout=10)
        await nc.flush()
        kv = await js.key_value(subjects.KEYS_BUCKET)
        assert not [k async for k in _keys(kv)]  # no record written after the reconnect
        taken = await js.key_value(subjects.ADMIN_IDEMPOTENCY_BUCKET)
        with pytest.raises(KeyNotFoundError):
            await taken.get("w." + claim.key_id)
    finally:
        await nc.close()
        server.terminate()
        await server.wait()


async def _keys(kv: KeyValue) -> AsyncIterator[str]:
    try:
        for key in await kv.keys():
            yield key
    except NoKeysError:
        return


async def test_a_lookup_that_went_unanswered_is_not_blamed_on_the_config(tmp_path: Path) -> None:
    """A missing bucket (answered at once) and a lookup NATS did not answer (an outage, a
    JetStream leader election: here the server paused) are not remembered for 15 s as a
    refusal: once the bucket is made, or NATS answers again, the next create goes through.
    Before, both were remembered 15 s, and the unanswered one said to render the NATS config
    of this version (a review: every create after a NATS restart was refused so)."""
    port = free_port()
    args = ["-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp_path / "js")]
    server = await asyncio.create_subprocess_exec(
        str(binaries.nats_server()), *args, stdout=DEVNULL, stderr=DEVNULL
    )
    await accepting(port)
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    try:
        js = nc.jetstream(timeout=10)
        creates = IdempotentCreates(js, nc=nc)
        with pytest.raises(ServiceUnavailable, match="run `switchyard provision`"):
            await creates.claim(secrets.token_hex(16), body_digest({"name": "x"}), _never)
        await js.create_key_value(KeyValueConfig(bucket=subjects.ADMIN_IDEMPOTENCY_BUCKET))
        claim = await creates.claim(secrets.token_hex(16), body_digest({"name": "x"}), _never)
        assert isinstance(claim, Claim)  # the missing bucket was not remembered

        later = IdempotentCreates(js, nc=nc)  # (a gateway that has not looked it up yet)
        await pause(server.pid)
        try:
            with pytest.raises(ServiceUnavailable) as unanswered:
                await later.claim(secrets.token_hex(16), body_digest({"name": "y"}), _never)
        finally:
            server.send_signal(signal.SIGCONT)
        said = str(unanswered.value)
        assert "did not answer (a NATS outage, or the NATS config" in said, said
        assert unanswered.value.retry_after == key_idempotency.LOOKUP_S
        await asyncio.sleep(key_idempotency.LOOKUP_S + 0.2)  # remembered no longer than that
        claim = await later.claim(secrets.token_hex(16), body_digest({"name": "y"}), _never)
        assert isinstance(claim, Claim)
    finally:
        await nc.close()
        server.terminate()
        await server.wait()
