"""A request's prompt in tokens, estimated from its JSON body: ~4 bytes per token, each inline
media part (a base64 image, audio clip or file) at most :data:`MEDIA_TOKENS`.

Two places need it and must agree: the edge admits a request on it against its key's ``tpm``
(:mod:`switchyard.ingress.estimate`), and a model-proxy bills it when the provider reported no
usage (:mod:`switchyard.workers.modelproxy.estimate`). Providers bill an image by its size in
pixels, a few hundred to a thousand tokens, not by its bytes: a 100 KiB image counted as bytes
was ~25,600 tokens. The body is not parsed again (a full parse of every body would cost more
than the rest of the check): see :func:`_media`.
"""

from __future__ import annotations

import re

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
