"""A model-proxy that handed a request back for want of its provider key pauses pulling that
deployment, and pulls again when the key comes, or, at the latest, after a bounded pause, one
message at a time (:mod:`switchyard.workers.modelproxy.key_pause`).

The puller and the key cache are stand-ins here (the pause's own rules are pure logic); the
real ones are in tests/test_key_outage.py and tests/test_jetstream_runtime.py.
"""

from __future__ import annotations

import asyncio

import pytest

from switchyard.errors import ProviderError, SecretMissing
from switchyard.runtime.secret_cache import unavailable
from switchyard.workers.modelproxy.key_pause import KeyPauses

pytestmark = pytest.mark.unit

DEP = "prov--model"
KEY = "openai-prod"


class Puller:
    """Records what the pause asks of a deployment's puller."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.resumed = asyncio.Event()

    def pause(self) -> None:
        self.calls.append("pause")

    async def resume(self, first: int | None = None) -> None:
        self.calls.append(f"resume first={first}")
        self.resumed.set()


class Keys:
    """A key cache that answers what the test says, the last answer from then on: the key
    (None), a failure, or (an event never set) nothing at all."""

    def __init__(self, *answers: Exception | asyncio.Event | None) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def get(self, name: str) -> object:
        self.asked.append(name)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, asyncio.Event):
            await answer.wait()
        elif answer is not None:
            raise answer
        return "sk-value"


def _pauses(puller: Puller | None, keys: Keys, *, secret: str | None = KEY) -> KeyPauses:
    return KeyPauses(
        lambda dep: puller if dep == DEP else None,
        lambda _dep: secret,
        keys.get,
        probe_every_s=0.01,
        longest_s=0.2,
    )


UNREACHABLE = unavailable(KEY, "Vault/OpenBao is unreachable")


async def test_pulls_again_with_its_whole_capacity_once_the_key_is_fetched() -> None:
    puller, keys = Puller(), Keys(UNREACHABLE, UNREACHABLE, None)
    pauses = _pauses(puller, keys)
    pauses.handed_back(DEP)
    assert DEP in pauses
    pauses.handed_back(DEP)  # more hand-backs while paused neither pause again nor lengthen
    await asyncio.wait_for(puller.resumed.wait(), 5)
    assert puller.calls == ["pause", "resume first=None"]
    assert keys.asked == [KEY] * 3
    assert DEP not in pauses
    await pauses.stop()


async def test_without_the_key_the_pause_ends_and_one_message_is_tried() -> None:
    """No model-proxy may have the key: requests must still reach their last delivery (and
    its 503) soon, so the pause is bounded; and a message at a time, since each one pulled
    while the key is missing is handed back again."""
    puller, keys = Puller(), Keys(UNREACHABLE)
    pauses = _pauses(puller, keys)
    pauses.handed_back(DEP)
    await asyncio.wait_for(puller.resumed.wait(), 5)
    assert puller.calls == ["pause", "resume first=1"]
    assert keys.asked  # it was tried meanwhile
    assert DEP not in pauses
    # The message tried is handed back too: paused again.
    pauses.handed_back(DEP)
    assert puller.calls[-1] == "pause"
    await pauses.stop()


async def test_a_secrets_service_that_does_not_answer_does_not_hold_the_pause() -> None:
    never = asyncio.Event()
    puller, keys = Puller(), Keys(never)
    pauses = _pauses(puller, keys)
    pauses.handed_back(DEP)
    await asyncio.wait_for(puller.resumed.wait(), 5)
    assert puller.calls == ["pause", "resume first=1"]
    await pauses.stop()


@pytest.mark.parametrize(
    "answer",
    [
        SecretMissing(f"provider key `{KEY}` is unavailable: no secret named `{KEY}`"),
        ProviderError("odd", provider=DEP, upstream_status=500),
    ],
)
async def test_a_key_that_fails_otherwise_ends_the_pause(answer: Exception) -> None:
    """A key not stored at all fails on every model-proxy (its requests are rerouted, not
    handed back): nothing to wait for. Only a key this model-proxy cannot reach keeps it."""
    puller, keys = Puller(), Keys(answer)
    pauses = _pauses(puller, keys)
    pauses.handed_back(DEP)
    await asyncio.wait_for(puller.resumed.wait(), 5)
    assert puller.calls == ["pause", "resume first=None"]
    await pauses.stop()


async def test_a_deployment_that_needs_no_key_any_more_is_pulled_again() -> None:
    puller, keys = Puller(), Keys(UNREACHABLE)
    pauses = _pauses(puller, keys, secret=None)  # its provider's secret was removed
    pauses.handed_back(DEP)
    await asyncio.wait_for(puller.resumed.wait(), 5)
    assert puller.calls == ["pause", "resume first=None"]
    assert keys.asked == []
    await pauses.stop()


async def test_an_unknown_deployment_is_left_alone() -> None:
    pauses = _pauses(None, Keys(UNREACHABLE))
    pauses.handed_back(DEP)  # its puller is gone (taken out of the routes)
    assert DEP not in pauses
    await pauses.stop()


async def test_forget_pulls_again_at_once_and_stop_ends_every_pause() -> None:
    """A deployment taken out of the routes is pulled to send its queue back to the heads,
    which takes no key."""
    puller, keys = Puller(), Keys(UNREACHABLE)
    pauses = KeyPauses(lambda _dep: puller, lambda _dep: KEY, keys.get, longest_s=60)
    pauses.handed_back(DEP)
    await pauses.forget(DEP)
    assert puller.calls == ["pause", "resume first=None"]
    assert DEP not in pauses
    await pauses.forget(DEP)  # not paused: nothing to do
    pauses.handed_back(DEP)
    await pauses.stop()
    assert DEP not in pauses
    assert puller.calls == ["pause", "resume first=None", "pause"]
    pauses.handed_back(DEP)  # stopped: no new pause
    assert puller.calls == ["pause", "resume first=None", "pause"]
