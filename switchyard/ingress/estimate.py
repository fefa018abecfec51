"""The tokens a request is admitted on against its key's ``tpm``: its prompt and its answer.

Providers count tokens only once they have the request, so the edge estimates, on every
request of a key with limits: the prompt at ~4 bytes per token, plus the most the answer may
take when the request caps it (``max_tokens`` and kin, as OpenAI's own limiter counts it). Once
the answer reports its usage the estimate is replaced by the real total (``Limiter.settle``).

The prompt's part is :func:`switchyard.schemas.prompt_estimate.prompt_tokens` (inline media
counts at most ``MEDIA_TOKENS`` each, a token id one), the one a model-proxy also bills when
the provider reports no usage, so what a key is admitted on and what it is billed agree.
"""

from __future__ import annotations

from switchyard.dialects.probes import MessagesProbe, ResponsesProbe
from switchyard.schemas.openai import ChatProbe, CompletionProbe
from switchyard.schemas.prompt_estimate import prompt_tokens


def answer_cap(probe: object) -> int:
    """The most tokens the request lets its answer take, or 0 when it sets no cap:
    ``max_completion_tokens`` (else ``max_tokens``) of a chat request, ``max_output_tokens``
    of a Responses request, ``max_tokens`` of a Messages or completions request."""
    cap: int | None = None
    if isinstance(probe, ChatProbe):
        cap = probe.max_completion_tokens if probe.max_completion_tokens else probe.max_tokens
    elif isinstance(probe, CompletionProbe | MessagesProbe):
        cap = probe.max_tokens
    elif isinstance(probe, ResponsesProbe):
        cap = probe.max_output_tokens
    return max(0, cap or 0)


def request_tokens(body: bytes, probe: object, tpm: int) -> int:
    """What the request is admitted on: its prompt plus its answer's cap. The cap counts up to
    the key's whole ``tpm`` and no further (``tpm`` 0: no limit on tokens), so a request is
    refused as too large for its prompt only: an Anthropic client's usual ``max_tokens`` of
    32,000 on a key of 20,000 tokens a minute runs, alone in the window, rather than never."""
    if tpm <= 0:  # (no limit to cap the answer at)
        prompt = prompt_tokens(body)
        return prompt + answer_cap(probe)
    return request_estimate(body, probe, tpm)[0]


def request_estimate(body: bytes, probe: object, tpm: int) -> tuple[int, int]:
    """:func:`request_tokens`, and the prompt's part of it (what stays counted when the
    request ends without usage: the answer's cap was never spent). (0, 0) for a key without
    ``tpm``: nothing counts tokens, so the body is not read for them."""
    if tpm <= 0:
        return 0, 0
    prompt = prompt_tokens(body)
    total = prompt + answer_cap(probe)
    if tpm > 0:
        total = min(total, max(prompt, tpm))
    return total, prompt
