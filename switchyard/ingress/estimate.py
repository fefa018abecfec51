"""The tokens a request is admitted on against its key's ``tpm``: its prompt and its answer.

Providers count tokens only once they have the request, so the edge estimates, on every
request of a key with limits: the prompt at ~4 bytes per token, plus the most the answer may
take when the request caps it (``max_tokens`` and kin, as OpenAI's own limiter counts it). Once
the answer reports its usage the estimate is replaced by the real total (``Limiter.settle``).

Media sent inline (base64 images, audio, files) is billed by providers at a few hundred to a
thousand tokens, not by its bytes: a 100 KiB image once counted ~25,600 tokens. So each JSON
string that is base64, whatever its field (``data:...;base64,`` URLs of images and files,
Anthropic's ``source.data``, ``input_audio.data``, ``file_data``, ``b64_json``), counts as at
most :data:`MEDIA_TOKENS`. They are found without parsing the body again: the probe has
decoded it once, keeping only the fields routing needs, and a second full parse on every
request would cost more than the rest of the check.
"""

from __future__ import annotations

import re

from switchyard.dialects.probes import MessagesProbe, ResponsesProbe
from switchyard.schemas.openai import ChatProbe, CompletionProbe

# What one inline image, audio clip or file counts for at most: above what providers bill a
# typical image (OpenAI ~85-1,100 tokens by size, Anthropic ~1,600 for the largest), as a
# recording or a document billed by its text may cost more. The answer corrects it.
MEDIA_TOKENS = 1000
# Only a string longer than MEDIA_TOKENS x 4 bytes counts for less than its bytes, so the body
# is looked at every _STRIDE bytes, under half that: each such string has a look in its base64.
_STRIDE = 2048
_RUN = re.compile(rb"[A-Za-z0-9+/]{64}")
# The opening of a data URL's string: its header, then base64.
_DATA_URL = re.compile(rb'"data:[^",;\\]{0,128};base64,[A-Za-z0-9+/]{64}')
# The field a bare base64 string is media in (Anthropic's source.data, input_audio.data,
# file_data, b64_json), up to the string's opening quote.
_MEDIA_FIELD = re.compile(rb'"(?:data|file_data|b64_json)"\s*:\s*"$')


def prompt_tokens(body: bytes) -> int:
    """The prompt's estimate: ~4 bytes per token, each inline media part at most
    :data:`MEDIA_TOKENS` (at least 1)."""
    tokens = 0
    at = 0
    for opens, closes in _media(body):
        tokens += (opens - at) // 4 + MEDIA_TOKENS
        at = closes
    return max(1, tokens + (len(body) - at) // 4)


def _media(body: bytes) -> list[tuple[int, int]]:
    """The JSON strings of ``body`` that are inline media longer than ``MEDIA_TOKENS`` x 4
    bytes, in order: where each opens, and past where it closes.

    A look every ``_STRIDE`` bytes, then byte searches (the C library's) from the hits: a
    regular expression over the whole body reads it a character at a time (~0.8 ms for
    150 KiB of base64), and so does a search for a field name in text. A string is media when
    it is a ``data:...;base64,`` URL or the value of a media field (``data``, ``file_data``,
    ``b64_json``: base64 elsewhere, in a text part, is billed as text), holds no space or
    escape, which base64 never does, and is base64 wherever it is looked at. Each string is
    looked at once, whatever it turns out to be: the next look starts past its end (a look
    every stride inside one long string made the scan quadratic, 0.3 s for 4 MB).
    """
    found: list[tuple[int, int]] = []
    at = _STRIDE
    while at < len(body):
        if _RUN.match(body, at) is None:
            at += _STRIDE
            continue
        opens = body.rfind(b'"', 0, at)
        closes = body.find(b'"', at)
        if closes < 0:  # (not JSON after all: the probe read it, so never)
            break
        if (
            opens >= 0
            and closes - opens > 4 * MEDIA_TOKENS
            and _is_media_value(body, opens)
            and body.find(b" ", opens, closes) < 0
            and body.find(b"\\", opens, closes) < 0
            and all(_RUN.match(body, a) for a in range(at + _STRIDE, closes - 64, _STRIDE))
        ):
            found.append((opens, closes + 1))
        at = closes + _STRIDE
    return found


def _is_media_value(body: bytes, opens: int) -> bool:
    """Whether the string opening at ``opens`` is a base64 data URL, or base64 as the value
    of a media field (a look at the ~24 bytes before it for the field's name)."""
    if _DATA_URL.match(body, opens) is not None:
        return True
    return _MEDIA_FIELD.search(body, max(0, opens - 24), opens + 1) is not None


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
