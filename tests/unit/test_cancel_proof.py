"""A cancel names its request's key by a proof for that one request id (``Sy-Cancel-Proof``),
which any language can compute, and the model-proxy accepts it (or a trusted edge's key hash,
or an older caller's ``Authorization``) only for the request made with that key."""

from __future__ import annotations

import json
import time

import pytest
from nats.aio.msg import Msg

from switchyard.bus import headers as h
from switchyard.bus.cancel_proof import (
    cancel_headers,
    cancel_proof,
    parse_proof,
    presented_key_hash,
)
from switchyard.bus.envelope import Envelope
from switchyard.schemas.keys import hash_key
from switchyard.workers.modelproxy.cancels import Cancels
from switchyard.workers.modelproxy.heartbeat import InFlight
from switchyard.workers.modelproxy.job import Job

pytestmark = pytest.mark.unit

KEY = "sk-sy-example"
OTHER = "sk-sy-someone-else"


def test_the_proof_is_the_documented_hmac_of_the_request_id_keyed_by_the_key_hash() -> None:
    """The example docs/nats-api.md gives, computed independently with coreutils and openssl::

    KEY_HASH=$(printf sk-sy-example | sha256sum | cut -c1-64)
    printf job-7 | openssl dgst -sha256 -hmac "$KEY_HASH"
    """
    key_hash = hash_key(KEY)
    assert key_hash == "0fb8b0895cd31ee206e7437b4879329c78996b71310bea45f3d8ddb9280040a5"
    proof = cancel_proof(key_hash, "job-7")
    assert proof == "cca048014e917118ae41ef6c19ea18ef930f1d50cff6304a9a6ae3429405acc6"
    assert cancel_proof(key_hash, "job-8") != proof  # one request id only
    assert cancel_proof(hash_key(OTHER), "job-7") != proof  # one key only


def test_the_key_an_authorization_presents_is_read_as_the_head_reads_it() -> None:
    assert presented_key_hash(f"Bearer {KEY}") == hash_key(KEY)
    assert presented_key_hash(f"bearer   {KEY} ") == hash_key(KEY)
    assert presented_key_hash(KEY) == hash_key(KEY)  # a bare key
    assert presented_key_hash("") == ""
    assert presented_key_hash("   ") == ""


def test_a_proof_header_is_64_hex_digits_or_nothing() -> None:
    proof = cancel_proof(hash_key(KEY), "job-7")
    assert parse_proof(proof) == proof
    assert parse_proof(proof.upper()) == proof
    assert parse_proof(None) == ""
    assert parse_proof("") == ""
    assert parse_proof(proof[:-1]) == ""
    assert parse_proof(proof + "0") == ""
    assert parse_proof("g" * 64) == ""


def _pulled(cancels: Cancels, request_id: str, key: str, attempt: int = 1) -> bool:
    """Would a model-proxy drop this dispatched request (made with ``key``) unserved?"""
    env = Envelope(request_id=request_id, attempt=attempt, key_hash=hash_key(key))
    return cancels.left(env)


def _from(cn: str) -> dict[str, str]:
    """The header nats-server writes on a cancel from a CLIENT-zone identity."""
    info = {"acc": "CLIENT", "user": f"CN={cn},OU=client,O=Switchyard", "rtt": 1}
    return {h.REQUEST_INFO: json.dumps(info)}


def test_a_proof_cancels_the_request_of_its_key_only() -> None:
    cancels = Cancels()
    cancels.heard({h.REQUEST_ID: "r1", h.CANCEL_PROOF: "not-a-proof"})
    assert len(cancels.memory) == 0
    cancels.heard({h.REQUEST_ID: "r1", h.CANCEL_PROOF: cancel_proof(hash_key(KEY), "r1")})
    assert _pulled(cancels, "r1", KEY)
    assert not _pulled(cancels, "r1", OTHER)  # the same id, made with another key
    assert not _pulled(cancels, "r2", KEY)
    assert not cancels.left(Envelope(request_id="r1"))  # made with no key at all


def test_a_proof_for_another_request_id_cancels_nothing() -> None:
    """Seen on the bus, a proof for one request is no use for the key's other requests."""
    cancels = Cancels()
    cancels.heard({h.REQUEST_ID: "r2", h.CANCEL_PROOF: cancel_proof(hash_key(KEY), "r1")})
    assert len(cancels.memory) == 1
    assert not _pulled(cancels, "r2", KEY)
    assert not _pulled(cancels, "r1", KEY)


def test_another_keys_cancel_neither_counts_nor_displaces_the_owners() -> None:
    cancels = Cancels()
    cancels.heard({h.REQUEST_ID: "r1", h.CANCEL_PROOF: cancel_proof(hash_key(OTHER), "r1")})
    assert not _pulled(cancels, "r1", KEY)
    cancels.heard({h.REQUEST_ID: "r1", h.CANCEL_PROOF: cancel_proof(hash_key(KEY), "r1")})
    cancels.heard({h.REQUEST_ID: "r1", h.CANCEL_PROOF: cancel_proof(hash_key("x"), "r1")})
    assert len(cancels.memory) == 3
    assert _pulled(cancels, "r1", KEY)
    assert _pulled(cancels, "r1", OTHER)  # (that key's own request with this id)


@pytest.mark.parametrize(
    "named",
    [
        # Older clients (and non-Python ones following older docs) present the key itself; a
        # malformed proof beside it is no proof.
        {h.AUTHORIZATION: f"Bearer {KEY}"},
        {h.AUTHORIZATION: f"Bearer {KEY}", h.CANCEL_PROOF: "0" * 63},
        # The edges and the batch runner name it by hash, trusted by their NATS identity.
        {h.KEY_HASH: hash_key(KEY)} | _from("tail"),
        {h.KEY_HASH: hash_key(KEY)} | _from("gateway"),
        {h.KEY_HASH: hash_key(KEY)} | _from("batch"),
    ],
    ids=["authorization", "authorization-bad-proof", "tail", "gateway", "batch"],
)
def test_a_key_named_the_other_ways_is_kept_as_its_proof(named: dict[str, str]) -> None:
    """One memory format: the same request's later cancel by proof (of a later attempt)
    extends that very entry."""
    cancels = Cancels()
    cancels.heard({h.REQUEST_ID: "r1", h.ATTEMPT: "1"} | named)
    assert _pulled(cancels, "r1", KEY)
    assert not _pulled(cancels, "r1", OTHER)
    assert not _pulled(cancels, "r1", KEY, attempt=2)
    proof = cancel_proof(hash_key(KEY), "r1")
    cancels.heard({h.REQUEST_ID: "r1", h.ATTEMPT: "3", h.CANCEL_PROOF: proof})
    assert len(cancels.memory) == 1
    assert _pulled(cancels, "r1", KEY, attempt=3)


def test_a_key_hash_from_anyone_else_is_no_proof() -> None:
    """An internal client must prove the key: a hash it names is taken from nobody, and
    neither is a proof it was not given for that request."""
    cancels = Cancels()
    named = {h.REQUEST_ID: "r1", h.KEY_HASH: hash_key(KEY)}
    cancels.heard(named)
    cancels.heard(named | _from("billing-bot"))
    assert len(cancels.memory) == 0
    cancels.heard(named | {h.CANCEL_PROOF: cancel_proof(hash_key(KEY), "r1")})
    assert _pulled(cancels, "r1", KEY)


def _serving(request_id: str, key_hash: str) -> Job:
    """A request in hand (its provider call not yet begun: nothing to interrupt)."""
    stored = time.time_ns() - 1_000_000
    msg = Msg(
        _client=None,  # type: ignore[arg-type]  # never used: nothing is acked here
        subject="llm.v1.dispatch.fake.echo",
        reply=f"$JS.ACK.DISPATCH.mp.1.7.7.{stored}.0",
        data=b"{}",
    )
    env = Envelope(request_id=request_id, op="chat", reply="_INBOX_x.1", key_hash=key_hash)
    inflight = InFlight(reply=env.reply, msg=msg, last_sent=0.0, last_progress=0.0)
    return Job(msg=msg, env=env, deployment_id="fake.echo", inflight=inflight)


def test_a_request_in_hand_is_stopped_by_its_own_keys_proof_only() -> None:
    cancels = Cancels()
    mine, theirs, keyless = (
        _serving("r1", hash_key(KEY)),
        _serving("r1", hash_key(OTHER)),
        _serving("r1", ""),
    )
    for job in (mine, theirs, keyless):
        cancels.track(job)
    cancels.heard({h.REQUEST_ID: "r1", h.CANCEL_PROOF: cancel_proof("", "r1")})
    assert not keyless.cancelled  # no key, nothing to prove
    cancels.heard({h.REQUEST_ID: "r1", h.CANCEL_PROOF: cancel_proof(hash_key(KEY), "r1")})
    assert (mine.cancelled, theirs.cancelled) == (True, False)


def test_a_cancel_is_made_only_for_a_request_that_names_a_key() -> None:
    """A keyless request (an edge's listing of the aliases) got a cancel with no proof when its
    caller left, and every model-proxy counted it as refused (``no_proof``): none is made."""
    keyless = Envelope(request_id="r-1")
    assert cancel_headers(keyless, 1, ("", "")) is None
    by_hash = cancel_headers(keyless.with_(key_hash=hash_key(KEY)), 2, ("", ""))
    assert by_hash is not None
    assert by_hash[h.CANCEL_PROOF] == cancel_proof(hash_key(KEY), "r-1")
    assert by_hash[h.ATTEMPT] == "2"
    own = f"Bearer {KEY}"
    by_key = cancel_headers(keyless.with_(authorization=own), 1, (own, hash_key(KEY)))
    assert by_key is not None
    assert by_key[h.CANCEL_PROOF] == cancel_proof(hash_key(KEY), "r-1")
    assert KEY not in json.dumps(by_key)  # the key itself never goes out
