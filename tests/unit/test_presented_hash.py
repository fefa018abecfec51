"""The hash of the secret a caller presented, which the head names beside the key's current
one after a rotation (``Sy-Presented-Hash``), and the cancels a model-proxy lets it prove."""

from __future__ import annotations

import time

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
    in its rotation's grace: its retired record); :func:`stamp` names it with the grace's
    end, and nothing a caller claimed."""
    internal = Envelope(request_id="r", authorization=f"Bearer {OLD}")
    stamped = stamp(internal, KEY, "app", RETIRED)
    assert stamped.presented_hash == hash_key(OLD)
    assert stamped.presented_until == str(int(RETIRED.expires_at * 1000))
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
            h.PRESENTED_UNTIL: "99999999999999",
        }
    )
    assert (forged.presented_hash, forged.presented_until) == (hash_key(OTHER), "99999999999999")
    overwritten = stamp(forged, KEY, "app")
    assert (overwritten.presented_hash, overwritten.presented_until) == ("", "")
    decoded = Envelope.decode(stamped.encode())  # travels on
    assert (decoded.presented_hash, decoded.presented_until) == (
        hash_key(OLD),
        stamped.presented_until,
    )


def test_a_cancel_proved_with_either_hash_counts_and_another_key_s_never() -> None:
    env = Envelope(request_id="r", key_hash=hash_key(NEW), presented_hash=hash_key(OLD))
    assert proving_hashes(env) == (hash_key(NEW), hash_key(OLD))
    for secret, counts in ((OLD, True), (NEW, True), (OTHER, False)):
        memory = CancelMemory()
        memory.remember("r", cancel_proof(hash_key(secret), "r"), attempt=1, deadline=None)
        assert memory.holds("r", env.key_hash, 1, env.presented_hash) is counts
        assert memory.holds("r", env.key_hash, 1) is (secret == NEW)


def test_the_old_secret_cancels_nothing_once_its_grace_ended() -> None:
    """A request queued during the grace and served after it: the old secret's proof used to
    cancel it until its deadline (an hour at most), after the secret was refused everywhere
    else. The grace's end travels with the request (``Sy-Presented-Until``)."""
    now = time.time()
    during = Envelope(
        request_id="r",
        key_hash=hash_key(NEW),
        presented_hash=hash_key(OLD),
        presented_until=str(int((now + 60) * 1000)),
    )
    after = during.with_(presented_until=str(int((now - 1) * 1000)))
    assert proving_hashes(during) == (hash_key(NEW), hash_key(OLD))
    assert proving_hashes(after) == (hash_key(NEW),)
    assert proving_hashes(after.with_(presented_until="soon")) == (hash_key(NEW),)
    for env, counts in ((during, True), (after, False)):
        cancels = Cancels()
        cancels.heard({h.REQUEST_ID: "r", h.CANCEL_PROOF: cancel_proof(hash_key(OLD), "r")})
        assert cancels.left(env) is counts
        cancels.heard({h.REQUEST_ID: "r", h.CANCEL_PROOF: cancel_proof(hash_key(NEW), "r")})
        assert cancels.left(env)  # the key's current secret cancels it, grace or not
