"""The hash of the secret a caller presented, which the head names beside the key's current
one after a rotation (``Sy-Presented-Hash``), and the cancels a model-proxy lets it prove."""

from __future__ import annotations

import time

import msgspec

from switchyard.bus import headers as h
from switchyard.bus import identities
from switchyard.bus.cancel_proof import cancel_proof
from switchyard.bus.envelope import Envelope
from switchyard.schemas.keys import ClientKey, hash_key
from switchyard.workers.head.callers import stamp
from switchyard.workers.modelproxy.cancels import CancelMemory, Cancels, proving_hashes

OLD, NEW, OTHER = "sk-sy-old-secret", "sk-sy-new-secret", "sk-sy-another-key"
KEY = ClientKey(id="key_1", hash=hash_key(NEW), name="k", team="t")
# The old secret's record after a rotation with a grace: it names the key's current one.
RETIRED = ClientKey(
    id="key_1", hash=hash_key(OLD), name="k", successor=hash_key(NEW), expires_at=2e9
)


def test_the_head_names_the_old_secret_it_was_given_and_only_that() -> None:
    """:func:`~switchyard.workers.head.callers.authorize` says which old secret counts (one
    in its rotation's grace: its retired record); :func:`stamp` names it, and nothing a caller
    claimed."""
    internal = Envelope(request_id="r", authorization=f"Bearer {OLD}")
    stamped = stamp(internal, KEY, "app", RETIRED)
    assert stamped.presented_hash == hash_key(OLD)
    assert stamp(internal, KEY, "app").presented_hash == ""  # its grace ended: none
    batch = Envelope(request_id="r", key_hash=hash_key(OLD))
    assert stamp(batch, KEY, identities.BATCH.name).presented_hash == ""
    current = Envelope(request_id="r", authorization=f"Bearer {NEW}")
    assert stamp(current, KEY, "app").presented_hash == ""  # one hash
    # A caller's own claim is overwritten: another tenant cannot make its hash count.
    forged = Envelope.decode(
        {
            h.REQUEST_ID: "r",
            h.AUTHORIZATION: f"Bearer {NEW}",
            h.PRESENTED_HASH: hash_key(OTHER),
        }
    )
    assert forged.presented_hash == hash_key(OTHER)
    assert stamp(forged, KEY, "app").presented_hash == ""
    assert Envelope.decode(stamped.encode()).presented_hash == hash_key(OLD)  # travels on


def test_a_cancel_proved_with_either_hash_counts_and_another_key_s_never() -> None:
    env = Envelope(request_id="r", key_hash=hash_key(NEW), presented_hash=hash_key(OLD))
    assert proving_hashes(env) == (hash_key(NEW), hash_key(OLD))
    for secret, counts in ((OLD, True), (NEW, True), (OTHER, False)):
        memory = CancelMemory()
        memory.remember("r", cancel_proof(hash_key(secret), "r"), attempt=1, deadline=None)
        assert memory.holds("r", env.key_hash, 1, env.presented_hash) is counts
        assert memory.holds("r", env.key_hash, 1) is (secret == NEW)


def test_a_request_made_during_the_grace_is_cancelled_by_its_maker_after_it() -> None:
    """An internal caller still presenting the old secret makes a request during the grace and
    cancels it after (its caller left): the old secret's proof was refused once the grace
    ended (``Sy-Presented-Until``), so the request, still queued, ran and was billed, and one
    running ran on. A proof is per request id, known only to its maker: it counts for the
    request's whole life. A request made after the grace names no old secret at all."""
    retired = msgspec.structs.replace(RETIRED, expires_at=time.time() + 0.05)
    made = stamp(Envelope(request_id="r", authorization=f"Bearer {OLD}"), KEY, "app", retired)
    time.sleep(0.1)  # the grace is over; the request is still queued
    env = Envelope.decode(made.encode())
    assert proving_hashes(env) == (hash_key(NEW), hash_key(OLD))
    cancels = Cancels()
    cancels.heard({h.REQUEST_ID: "r", h.CANCEL_PROOF: cancel_proof(hash_key(OLD), "r")})
    assert cancels.left(env)
    other = Cancels()
    other.heard({h.REQUEST_ID: "r", h.CANCEL_PROOF: cancel_proof(hash_key(OTHER), "r")})
    assert not other.left(env)
    # The grace ended before the request: the head names no old secret (authorize gives none).
    later = stamp(Envelope(request_id="r2", authorization=f"Bearer {OLD}"), KEY, "app")
    assert proving_hashes(later) == (hash_key(NEW),)
