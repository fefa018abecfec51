"""The hash of the secret a caller presented, which the head names beside the key's current
one after a rotation (``Sy-Presented-Hash``), and the cancels a model-proxy lets it prove."""

from __future__ import annotations

from switchyard.bus import headers as h
from switchyard.bus import identities
from switchyard.bus.cancel_proof import cancel_proof
from switchyard.bus.envelope import Envelope
from switchyard.schemas.keys import ClientKey, hash_key
from switchyard.workers.head.callers import stamp
from switchyard.workers.modelproxy.cancels import CancelMemory, proving_hashes

OLD, NEW, OTHER = "sk-sy-old-secret", "sk-sy-new-secret", "sk-sy-another-key"
KEY = ClientKey(id="key_1", hash=hash_key(NEW), name="k", team="t")


def test_the_head_names_the_old_secret_it_was_given_and_only_that() -> None:
    """:func:`~switchyard.workers.head.callers.authorize` says which old secret counts (one
    in its rotation's grace); :func:`stamp` names it, and nothing a caller claimed."""
    internal = Envelope(request_id="r", authorization=f"Bearer {OLD}")
    assert stamp(internal, KEY, "app", hash_key(OLD)).presented_hash == hash_key(OLD)
    assert stamp(internal, KEY, "app").presented_hash == ""  # its grace ended: none
    batch = Envelope(request_id="r", key_hash=hash_key(OLD))
    assert stamp(batch, KEY, identities.BATCH.name).presented_hash == ""
    current = Envelope(request_id="r", authorization=f"Bearer {NEW}")
    assert stamp(current, KEY, "app", hash_key(NEW)).presented_hash == ""  # one hash
    # A caller's own claim is overwritten: another tenant cannot make its hash count.
    forged = Envelope.decode(
        {h.REQUEST_ID: "r", h.AUTHORIZATION: f"Bearer {NEW}", h.PRESENTED_HASH: hash_key(OTHER)}
    )
    assert forged.presented_hash == hash_key(OTHER)
    assert stamp(forged, KEY, "app").presented_hash == ""
    stamped = stamp(internal, KEY, "app", hash_key(OLD))
    assert Envelope.decode(stamped.encode()).presented_hash == hash_key(OLD)  # travels on


def test_a_cancel_proved_with_either_hash_counts_and_another_key_s_never() -> None:
    env = Envelope(request_id="r", key_hash=hash_key(NEW), presented_hash=hash_key(OLD))
    assert proving_hashes(env) == (hash_key(NEW), hash_key(OLD))
    for secret, counts in ((OLD, True), (NEW, True), (OTHER, False)):
        memory = CancelMemory()
        memory.remember("r", cancel_proof(hash_key(secret), "r"), attempt=1, deadline=None)
        assert memory.holds("r", env.key_hash, 1, env.presented_hash) is counts
        assert memory.holds("r", env.key_hash, 1) is (secret == NEW)
