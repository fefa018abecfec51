"""Which failures count against a deployment in the overview's error share."""

from __future__ import annotations

import pytest

from switchyard.errors import (
    ApiError,
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ServiceUnavailable,
)
from switchyard.schemas.secret import Secret
from switchyard.workers.modelproxy.providers.openai_compat import (
    _Choices,
    checked,
    finishes,
    stream_error,
)
from switchyard.workers.modelproxy.providers.upstream_errors import (
    from_status,
    retryable,
    too_large,
)
from switchyard.workers.modelproxy.traffic import deployment_failed


@pytest.mark.parametrize(
    "failure",
    [
        ProviderError("upstream 500", provider="d1"),
        ProviderRateLimited("busy", provider="d1", upstream_status=429),
        ProviderTimeout("slow", provider="d1"),
        ServiceUnavailable("secret unavailable", code="secret_unavailable"),
        from_status(401, "bad key", provider="d1"),  # our key for the provider: ours to fix
        from_status(503, "overloaded", provider="d1"),
        from_status(
            404, "no such model", provider="d1"
        ),  # the deployment's model, not the client's
    ],
)
def test_what_the_provider_or_the_platform_failed_counts(failure: ApiError) -> None:
    assert deployment_failed(failure)


@pytest.mark.parametrize(
    "failure",
    [
        None,
        InvalidRequest("messages[0].content[0]: expected an object, got a number"),
        PayloadTooLarge("too big"),
        from_status(400, "context too long", provider="d1"),
        from_status(422, "unprocessable", provider="d1"),
        # The provider did its job; the answer is too large for the bus (it counted).
        too_large("d1", 9 * 1024 * 1024, 8 * 1024 * 1024),
    ],
)
def test_what_the_client_got_wrong_does_not(failure: ApiError | None) -> None:
    assert not deployment_failed(failure)


def test_a_failure_reported_inside_a_stream_is_a_provider_error() -> None:
    """OpenAI and vLLM report a failure mid-stream as ``data: {"error": ...}``."""
    key = Secret("sk-live-123456")
    failure = stream_error(
        b'{"error": {"message": "boom with sk-live-123456", "type": "server_error", "code": 500}}',
        "vllm-a",
        key,
    )
    assert isinstance(failure, ProviderError)
    assert failure.retryable
    assert failure.code == "provider_error"  # vLLM's numeric code is not ours to pass on
    assert failure.upstream_status == 500
    assert "boom with ***" in failure.message
    assert "sk-live" not in failure.message
    named = stream_error(b'{"error": {"message": "m", "code": "overloaded"}}', "p", None)
    assert named is not None
    assert named.code == "overloaded"
    assert stream_error(b'{"error": "plain words"}', "p", None) is not None
    # Chunks, even ones that mention an error, are not failures.
    assert stream_error(b'{"choices": [{"delta": {}}], "error": null}', "p", None) is None
    both = b'{"choices": [{"delta": {}}], "error": {"message": "x"}}'
    assert stream_error(both, "p", None) is None
    assert stream_error(b'not json "error"', "p", None) is None


@pytest.mark.parametrize(
    ("status", "said"),
    [
        (401, "refused the API key stored for it (HTTP 401; check or rotate its secret)"),
        (403, "refused the request made with its stored key (HTTP 403)"),
    ],
)
def test_a_provider_refusing_our_key_says_so_not_in_its_own_words(status: int, said: str) -> None:
    """'Incorrect API key provided' (code invalid_api_key) alone reads to a client as its own
    Switchyard key being wrong."""
    failure = from_status(
        status, "Incorrect API key provided", provider="openai", code="invalid_api_key"
    )
    assert isinstance(failure, ProviderError)
    assert failure.status == 502
    assert failure.code == "provider_auth_error"  # never the client key's own code
    assert failure.message == f"provider openai {said}: Incorrect API key provided"


def test_a_chunk_with_a_finish_reason_ends_the_answer() -> None:
    assert finishes(b'{"choices":[{"delta":{},"finish_reason":"stop"}]}')
    assert finishes(b'{"choices": [{"delta": {}, "finish_reason": "length"}]}')
    assert not finishes(b'{"choices":[{"delta":{"content":"a"},"finish_reason":null}]}')
    assert not finishes(b'{"choices": [{"finish_reason": null}]}')
    assert not finishes(b'{"choices":[{"delta":{"content":"a"}}]}')


@pytest.mark.parametrize(
    "payload",
    [
        b'{"error": {"message": "maximum context length is 8192", "type": "BadRequestError",'
        b' "code": 400}}',
        b'{"error": {"message": "bad schema", "type": "invalid_request_error"}}',
        b'{"object": "error", "message": "too long", "type": "BadRequestError", "code": 400}',
        b'{"error": {"message": "nope", "type": ["odd"], "code": 422}}',
    ],
)
def test_a_bad_request_reported_inside_a_stream_cools_nothing(payload: bytes) -> None:
    """It may be the client's request (cooling on it would take the whole route down for
    everyone) or vLLM's engine failing (vLLM says BadRequestError for both): tried elsewhere,
    with no cooldown."""
    failure = stream_error(payload, "vllm-a", None)
    assert isinstance(failure, ProviderError)
    assert failure.status == 502
    assert retryable(failure)
    assert failure.retry_after == 0.0  # no cooldown, no backoff (the head's rule for 0)


@pytest.mark.parametrize("code", [429, 500, 503])
def test_a_rate_limit_or_server_error_inside_a_stream_cools_as_usual(code: int) -> None:
    payload = b'{"error": {"message": "m", "type": "invalid_request_error", "code": %d}}' % code
    failure = stream_error(payload, "p", None)
    assert isinstance(failure, ProviderError)
    assert retryable(failure)
    assert failure.retry_after is None  # the route's cooldown applies


@pytest.mark.parametrize("status", [404, 410])
def test_a_provider_without_the_deployments_model_is_the_deployments_failure(status: int) -> None:
    """The client named a Switchyard alias; a provider answering 404 for the model behind it
    is a deployment to fix and to route around (the route's fallbacks), not the client's 400."""
    failure = from_status(
        status, "The model `gpt-9` does not exist", provider="d1", code="model_not_found"
    )
    assert isinstance(failure, ProviderError)
    assert failure.status == 502
    assert retryable(failure)
    assert failure.code == "provider_model_not_found"  # not Switchyard's own unknown-alias code
    assert f"does not serve this deployment's model (HTTP {status})" in failure.message


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (
            "Item with id 'rs_123' not found. Items are not persisted when `store` is set to "
            "false.",
            "input",
        ),
        ("No such File object: file-abc", "id"),
    ],
)
def test_a_404_for_something_the_client_named_stays_the_clients(message: str, param: str) -> None:
    """A 404 whose error names a field of the client's request (OpenAI's ``param``) is the
    client's: retried, it would cool every deployment for everyone. The client is told the
    provider's 404 (tests/unit/test_provider_not_found.py). One that names nothing is what a
    wrong api_base gets (FastAPI's "Not Found", Azure's "Resource not found"): the
    deployment's."""
    failure = from_status(404, message, provider="d1", code=None, param=param)
    assert isinstance(failure, NotFound)
    assert isinstance(from_status(404, message, provider="d1", code=None), ProviderError)
    assert failure.status == 404
    assert not retryable(failure)
    assert not deployment_failed(failure)


def test_the_callers_deadline_is_not_the_deployments_error() -> None:
    """Queued past its deadline, or too little time left to start: the deployment was full,
    not failing. Run out during the call (a client's ``X-Request-Timeout: 2`` on a healthy
    deployment that takes 5 s showed it at 100% errors): the caller gave up, as one that
    leaves does. A provider too slow for the deployment's own timeouts still counts, and so
    does one silent past its `first_token_s` when the deadline ended the call."""
    assert not deployment_failed(DeadlineExceeded("the request deadline passed while queued"))
    assert not deployment_failed(DeadlineExceeded("passed while the provider worked"))
    worked = DeadlineExceeded("passed while the provider worked")
    assert not deployment_failed(worked, silent_s=2.0, limit_s=60.0)
    assert deployment_failed(worked, silent_s=60.0, limit_s=60.0)
    assert not deployment_failed(DeadlineExceeded("not started", code="deadline_too_short"))
    assert deployment_failed(ProviderTimeout("provider p timed out", provider="p"))
    assert deployment_failed(ServiceUnavailable("no key", code="secret_unavailable"))


def test_a_stream_of_two_choices_ends_when_every_choice_has() -> None:
    """A chunk may carry several choices, the finished one not first (a reviewer's case)."""
    choices = _Choices.of("chat", {"n": 2})
    assert choices is not None
    both = (
        b'{"choices": [{"index": 0, "finish_reason": null}, {"index": 1, "finish_reason": "stop"}]}'
    )
    assert not choices.ended(both)
    assert not choices.ended(b'{"choices": [{"index": 0, "delta": {"content": "x"}}]}')
    assert choices.ended(b'{"choices": [{"index": 0, "finish_reason": "length"}]}')
    assert _Choices.of("chat", {"n": 1}) is None
    assert _Choices.of("chat", {"n": True}) is None


def test_a_completion_of_several_prompts_ends_when_every_prompt_has() -> None:
    """A legacy completion of a list of prompts has ``n`` choices per prompt: the first
    prompt's finish_reason is not the end of the answer (it was taken for it)."""
    choices = _Choices.of("complete", {"prompt": ["a", "b"], "n": 2})
    assert choices is not None
    for index in (0, 1, 2):
        assert not choices.ended(b'{"choices": [{"index": %d, "finish_reason": "stop"}]}' % index)
    assert choices.ended(b'{"choices": [{"index": 3, "finish_reason": "stop"}]}')
    assert _Choices.of("complete", {"prompt": [[1, 2], [3]]}) is not None  # token lists
    assert _Choices.of("complete", {"prompt": [1, 2, 3]}) is None  # one prompt of tokens
    assert _Choices.of("complete", {"prompt": ["only"]}) is None
    assert _Choices.of("complete", {"prompt": "one"}) is None
    assert _Choices.of("chat", {"prompt": ["a", "b"]}) is None  # (not a chat field)


@pytest.mark.parametrize(
    "body",
    [
        b'{"error": {"message": "boom", "type": "server_error"}}',
        b'{"object": "error", "message": "boom", "type": "InternalServerError", "code": 500}',
    ],
)
def test_a_200_answer_holding_an_error_is_the_providers_failure(body: bytes) -> None:
    with pytest.raises(ProviderError) as failed:
        checked("p", body, None)
    assert "answered 200 with an error: boom" in failed.value.message


def test_a_200_answer_reads_its_usage_once_and_passes_error_null() -> None:
    body = (
        b'{"id": "x", "error": null, "choices": [], "usage": {"prompt_tokens": 3,'
        b' "completion_tokens": 2, "total_tokens": 5}}'
    )
    usage = checked("p", body, None)
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 2)
    assert checked("p", b'{"id": "x", "usage": {"prompt_tokens": "three"}}', None) is None
