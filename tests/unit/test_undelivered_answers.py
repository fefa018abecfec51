"""An answer the provider gave that could not be passed on (larger than one bus message, a
streamed line past 4 MiB) is billed its prompt's estimate: the provider charges for it. An
embeddings answer too large says how many inputs of its size fit, not "stream it"."""

from __future__ import annotations

import pytest

from switchyard.errors import ProviderError
from switchyard.workers.modelproxy import billing
from switchyard.workers.modelproxy.providers import upstream_errors as ue
from tests.unit.test_deadline_billing import BODY, _job

pytestmark = pytest.mark.unit

MIB = 2**20


def test_an_answer_that_could_not_be_passed_on_is_billed_its_prompt() -> None:
    job = _job(ProviderError.status)
    assert billing.billed(job) is None  # a failure that produced nothing to bill
    job.undelivered = True
    found = billing.billed(job)
    assert found is not None
    usage, estimated = found
    assert estimated
    assert usage.prompt_tokens == len(BODY) // 4
    assert usage.completion_tokens == 0  # not guessed from the answer's size
    # A request that capped its answers is billed that cap: the provider made a long answer
    # (a client asking for logprobs on 16,384 tokens got them made unbilled).
    job.msg.data = b'{"model": "m", "n": 2, "max_tokens": 16384, "messages": []}'
    found = billing.billed(job)
    assert found is not None
    assert found[0].completion_tokens == 2 * 16384
    assert isinstance(ue.too_large("p", 9 * MIB, 8 * MIB), ue.Undelivered)
    assert isinstance(ue.line_too_long("p"), ue.Undelivered)
    assert ue.line_too_long("p").retryable  # as before: another deployment may answer
    assert ue.no_cooldown(ue.line_too_long("p"))  # but the deployment is not cooled for it


def test_an_embeddings_answer_too_large_says_how_many_inputs_fit() -> None:
    exc = ue.too_large("p", 16 * MIB, 8 * MIB)
    assert "stream it" in exc.message  # chat: it can be streamed
    floats = ue.sized_for(exc, "embed", {"input": ["a"] * 300})
    assert "stream it" not in floats.message
    assert "(about 150 inputs of this size fit)" in floats.message
    assert "encoding_format base64" in floats.message
    as_base64 = ue.sized_for(exc, "embed", {"input": ["a"] * 300, "encoding_format": "base64"})
    assert "encoding_format" not in as_base64.message
    unread = ue.sized_for(ue.too_large("p", None, 8 * MIB), "embed", {"input": ["a"] * 300})
    assert "(fewer than 300 inputs of this size fit)" in unread.message
    tokens = ue.sized_for(exc, "embed", {"input": [1, 2, 3]})  # one input, as token ids
    assert "not one input's vector fits" in tokens.message
    assert ue.sized_for(exc, "chat", {"input": ["a"]}) is exc


def test_an_answer_too_large_is_a_413_no_sdk_retries() -> None:
    """A 502 was retried by every SDK, each retry a provider call billed for an answer the
    client never got; the same request gets the same answer, from any deployment."""
    exc = ue.sized_for(ue.too_large("p", 16 * MIB, 8 * MIB), "embed", {"input": ["a"] * 300})
    assert (exc.status, exc.type, exc.code) == (413, "invalid_request_error", "answer_too_large")
    assert exc.no_retry  # x-should-retry: false
    assert not exc.retryable  # tried on no other deployment, as before
    assert ue.no_cooldown(exc)
