"""The stream that keeps cancels for model-proxies that start later: as bounded as their
memory, replicated like every stream, silent to senders; and a stored cancel's time limits
count from when it was sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.js import api as js_api

from switchyard.bus import subjects
from switchyard.bus.cancel_proof import cancel_proof
from switchyard.config import load_settings
from switchyard.runtime.definitions import cancels_stream_config
from switchyard.workers.modelproxy.cancels import CAPACITY, LONGEST_S, CancelMemory

pytestmark = pytest.mark.unit

KEY = "b" * 64


def test_the_stream_keeps_what_a_model_proxy_would_remember(tmp_path: Path) -> None:
    overrides = {"home": str(tmp_path), "stack": {"nats_nodes": 3}}
    config = cancels_stream_config(load_settings(None, env={}, overrides=overrides))
    assert config.subjects == [subjects.CANCEL]
    assert config.num_replicas == 3
    assert config.storage is js_api.StorageType.FILE
    # Never longer, nor more, than the memory it fills: newest kept.
    assert config.max_age == LONGEST_S
    assert config.max_msgs == CAPACITY
    assert config.discard is js_api.DiscardPolicy.OLD
    assert config.max_bytes is not None
    assert config.max_bytes > 0
    assert config.max_msg_size is not None
    assert config.max_msg_size > 0
    # A sender in the client zone is told nothing (no acknowledgement naming the stream).
    assert config.no_ack


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_cancel_read_back_later_keeps_its_time_limits_from_when_it_was_sent() -> None:
    clock = Clock()
    memory = CancelMemory(clock=clock, longest_s=100, default_s=10)
    sent = clock.now
    clock.now += 8
    for request_id, deadline in (("no-deadline", None), ("far", sent + 10_000)):
        proof = cancel_proof(KEY, request_id)
        memory.remember(request_id, proof, attempt=1, deadline=deadline, sent_at=sent)
    assert memory.holds("no-deadline", KEY, 1)
    clock.now = sent + 11  # the default counts from when it was sent, not from now
    assert not memory.holds("no-deadline", KEY, 1)
    assert memory.holds("far", KEY, 1)
    clock.now = sent + 101
    assert not memory.holds("far", KEY, 1)
    # Sent longer ago than it may be remembered: not kept at all.
    memory.remember("stale", cancel_proof(KEY, "stale"), attempt=1, deadline=None, sent_at=sent)
    assert not memory.holds("stale", KEY, 1)
    # A time of sending in the future (another clock) counts as now.
    memory.remember("ahead", cancel_proof(KEY, "ahead"), attempt=1, deadline=None, sent_at=1e12)
    clock.now += 9
    assert memory.holds("ahead", KEY, 1)
    clock.now += 2
    assert not memory.holds("ahead", KEY, 1)
