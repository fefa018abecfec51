"""A request's prompt in tokens, estimated from its JSON body: ~4 bytes per token, each inline
image, audio clip or video (its base64 in one line or wrapped in lines, of either alphabet;
in a bare media field, only base64 that opens with a known file's signature)
:data:`MEDIA_TOKENS`, each inline document (a PDF, or a data URL of another type) a token
per :data:`DOCUMENT_CHARS` characters of its base64, at least ``MEDIA_TOKENS``, and a prompt
sent as token ids (an embedding ``input`` or a completion ``prompt`` of integers) one token
per id.

Two places need it and must agree: the edge admits a request on it against its key's ``tpm``
(:mod:`switchyard.ingress.estimate`), and a model-proxy bills it when the provider reported no
usage (:mod:`switchyard.workers.modelproxy.estimate`). Providers bill an image by its size in
pixels, a few hundred to a thousand tokens, not by its bytes: a 100 KiB image counted as bytes
was ~25,600 tokens. The body is not parsed again (a full parse of every body would cost more
than the rest of the check): see :func:`_spans`. Token ids were counted as bytes too, ~1.5
tokens each ("1234," is 5 bytes), so 14,000 ids in LangChain's usual pre-tokenized embedding
request were ~21,000 tokens, refused for good on a key of 20,000; and base64 wrapped at 76
characters (``base64 photo.jpg`` in a shell, Python's ``base64.encodebytes``) or URL-safe
was text, a 400 KB image ~100,000 tokens. Readable text written in the URL-safe alphabet (an
Anthropic text document's ``data: "the_quick_brown_fox_..."``) passed for base64 where it was
looked at, 886 KB of it ~1,000 tokens: a bare field's string is media only when its first
bytes decode to a file's signature, which text never does. A document counted 1,000 tokens
too, where providers bill it by its text: a 3 MB PDF is 100,000 tokens and more, admitted
under ``tpm`` at 1,000 and billed 1,000 when no usage came (:data:`DOCUMENT_CHARS`).
"""

from __future__ import annotations

import binascii
import re

# What one inline image, audio clip or video counts for: above what providers bill a typical
# image (OpenAI ~85-1,100 tokens by size, Anthropic ~1,600 for the largest), as a long
# recording may cost more. The answer corrects it. A document counts at least as much.
MEDIA_TOKENS = 1000
# A document's characters of base64 per token: a token per 24 bytes of the file (4 characters
# of base64 are 3 bytes). Providers bill a PDF by its text, not a fixed allowance (Anthropic
# ~1,500-3,000 tokens a page of text, which includes a picture of the page), and a page of a
# text PDF, its text compressed beside its share of fonts and structure, is a few tens of KB:
# 48 KB at 24 bytes a token is 2,000 tokens, a 3 MB PDF ~130,000. A scanned PDF, hundreds of
# KB a page, counts more than it is billed until its usage corrects it; its bytes as text (3
# bytes a token) would refuse as ``request_too_large`` documents a key can run.
DOCUMENT_CHARS = 32
# Only a string longer than MEDIA_TOKENS x 4 bytes counts for less than its bytes, so the body
# is looked at every _STRIDE bytes, under half that: each such string has a look in its base64.
_STRIDE = 2048
# Base64, of either alphabet (URL-safe: "-" and "_" for "+" and "/").
_RUN = re.compile(rb"[A-Za-z0-9+/_-]{64}")
# The fewest characters a line of wrapped base64 holds (76 of MIME, 64 of PEM): text broken
# into shorter lines ("line\n" again and again) is text.
_MIN_WIDTH = 32
# One line of wrapped base64 (its padding too), looked at whole.
_LINE = re.compile(rb"[A-Za-z0-9+/=_-]+")
# The opening of a data URL's string: its header (its media type), up to its base64.
_DATA_URL = re.compile(
    rb'"data:(?P<type>[^",;\\]{0,128});base64,(?=[A-Za-z0-9+/_-]{%d})' % _MIN_WIDTH
)
# The media types of a data URL counted as one image, recording or video; text/* is text,
# counted by its bytes; any other type is a document.
_MEDIA_TYPES = (b"image/", b"audio/", b"video/")
# What a look lands in: base64 (``media``), unbroken or wrapped in lines (JSON-escaped "\n" or
# "\r\n" breaks, as `base64` in a shell and MIME write it, every 76 characters: up to the
# next break, taken whole, then the next line); else maybe an array of token ids (integers,
# commas, brackets, spaces). One expression, so a look in text that is neither is one call.
_LOOK = re.compile(
    rb"(?P<media>[A-Za-z0-9+/_-]{64}|[A-Za-z0-9+/_-]{0,63}+\\(?:r\\)?n[A-Za-z0-9+/_-]{16})"
    rb"|[0-9,\[\]\s]{16}"
)
# From the closing quote of a field's name to the opening of its array of ids, or of its
# array of arrays of ids: its first id.
_IDS_OPEN = re.compile(rb'"\s*:\s*\[\s*(?:\[\s*)?[0-9]')
# A field's name up to its closing quote, after the "{" or "," before it: a quote that opens a
# string (a text that starts ': [1') has a ":", "[" or "," before it, never a name.
_IDS_NAME = re.compile(rb'[{,]\s*"[A-Za-z_][A-Za-z0-9_]{0,63}"$')
# All an array of ids holds: its integers, commas, brackets and whitespace.
_IDS_BYTES = b"0123456789,[] \t\r\n"
# The field a bare base64 string is media in (Anthropic's source.data, input_audio.data,
# file_data, b64_json), up to the string's opening quote.
_MEDIA_FIELD = re.compile(rb'"(?:data|file_data|b64_json)"\s*:\s*"$')
# How the files a media field holds start (PNG, JPEG, GIF, RIFF: WEBP and WAV, PDF, MP3's ID3
# tag, OGG, FLAC, Matroska/WebM), besides MP4's, M4A's and HEIC's "ftyp" at their 4th byte
# and an MPEG audio frame (:func:`_mpeg_audio`). Readable text decodes to none of them.
_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF8",
    b"RIFF",
    b"%PDF-",
    b"ID3",
    b"OggS",
    b"fLaC",
    b"\x1a\x45\xdf\xa3",
)
# The URL-safe alphabet's two characters, as the standard alphabet writes them.
_STANDARD = bytes.maketrans(b"-_", b"+/")


def prompt_tokens(body: bytes) -> int:
    """The prompt's estimate: ~4 bytes per token, each inline image, audio clip or video
    :data:`MEDIA_TOKENS`, each inline document a token per :data:`DOCUMENT_CHARS` of its
    base64 (at least ``MEDIA_TOKENS``), each token id one (at least 1)."""
    tokens = 0
    at = 0
    for opens, closes, counted in _spans(body):
        tokens += (opens - at) // 4 + counted
        at = closes
    return max(1, tokens + (len(body) - at) // 4)


def _spans(body: bytes) -> list[tuple[int, int, int]]:
    """The parts of ``body`` not counted by their bytes, in order: where each opens, past
    where it closes, and the tokens it counts for. Inline media (:func:`_media`) and arrays
    of token ids (:func:`_token_ids`), found by a look every ``_STRIDE`` bytes, then byte
    searches (the C library's) from the hits: a regular expression over the whole body reads
    it a character at a time (~0.8 ms for 150 KiB of base64), and so does a search for a
    field name in text. Each JSON string, or stretch between two strings, is looked at once,
    whatever it turns out to be: the next look starts past its end (a look every stride
    inside one long string made the scan quadratic, 0.3 s for 4 MB).
    """
    found: list[tuple[int, int, int]] = []
    at = _STRIDE
    while at < len(body):
        look = _LOOK.match(body, at)
        if look is None:
            at += _STRIDE
            continue
        media = look.lastgroup == "media"
        opens = body.rfind(b'"', 0, at)
        closes = body.find(b'"', at)
        if media:
            if closes < 0:  # (not JSON after all: the probe read it, so never)
                break
            counted = _media(body, opens, closes, at) if opens >= 0 else 0
            if counted:
                found.append((opens, closes + 1, counted))
        else:
            closes = len(body) if closes < 0 else closes  # (ids last in the body)
            ids = _token_ids(body, opens, closes, at)
            if ids is not None:
                found.append(ids)
        at = closes + _STRIDE
    return found


def _media(body: bytes, opens: int, closes: int, at: int) -> int:
    """The tokens the JSON string of ``body`` from the quote at ``opens`` to the one at
    ``closes``, base64 at ``at``, counts for as inline media longer than ``MEDIA_TOKENS`` x 4
    bytes; 0 when it is not such media (its bytes count).

    It is when it is a ``data:...;base64,`` URL or a file's base64 as the value of a media
    field (``data``, ``file_data``, ``b64_json``: base64 elsewhere, in a text part, is billed
    as text; :func:`_media_content`), holds no space, which base64 never does, and is base64
    wherever it is looked at: unbroken (no escape), or wrapped in lines (:func:`_wrapped`).
    A document counts a token per ``DOCUMENT_CHARS`` of its base64, anything else
    ``MEDIA_TOKENS``.
    """
    if closes - opens <= 4 * MEDIA_TOKENS:
        return 0
    content, document = _media_content(body, opens)
    if content < 0 or body.find(b" ", opens, closes) >= 0:
        return 0
    escape = body.find(b"\\", content, closes)
    if escape >= 0:
        encoded = _wrapped(body, content, escape, closes)
    else:
        encoded = all(_RUN.match(body, a) for a in range(at + _STRIDE, closes - 64, _STRIDE))
    if not encoded:
        return 0
    return max(MEDIA_TOKENS, (closes - content) // DOCUMENT_CHARS) if document else MEDIA_TOKENS


def _wrapped(body: bytes, content: int, escape: int, closes: int) -> bool:
    """Whether the string's base64 from ``content`` up to ``closes`` is in lines of one width
    (its first line's, at least ``_MIN_WIDTH``) ended by the escape at ``escape``, a JSON
    ``\\n`` or ``\\r\\n``, as encoders wrap it. Every ``_STRIDE`` bytes, the 64 bytes looked
    at are base64 and their line ends where the width says (the last line may be shorter):
    a few bytes each, however long the lines."""
    width = escape - content
    brk = b"\\r\\n" if body.startswith(b"\\r\\n", escape) else b"\\n"
    if width < _MIN_WIDTH or not body.startswith(brk, escape):
        return False
    line = width + len(brk)
    # The last line ends with a break too, as encoders write it (the string may end there).
    last = closes - len(brk) if body.startswith(brk, closes - len(brk)) else closes
    for a in range(content, closes, _STRIDE):
        end = a - (a - content) % line + width  # where the line of ``a`` breaks
        if end + len(brk) <= closes and not body.startswith(brk, end):
            return False
        stop = min(a + 64, end, last)
        if a < stop and _LINE.fullmatch(body, a, stop) is None:
            return False
    return True


def _token_ids(body: bytes, opens: int, closes: int, at: int) -> tuple[int, int, int] | None:
    """The array of token ids between the quotes at ``opens`` and ``closes``, around ``at``:
    where it opens, past where it closes, and how many ids it holds; None when there is none.

    The quote at ``opens`` must close a field's name (``"input": [``), not open a string (a
    text of ``: [1``, spaces and 1 MB of words counted 16 tokens) nor be one inside a text
    (escaped), and the array it opens must hold nothing but integers or arrays of integers
    (``"input": [[1, 2], [3]]``): anything else in it is text. Its ids are its commas and one:
    ``n`` ids in ``k`` arrays have ``n - k`` commas inside them and ``k - 1`` between them (an
    empty array, which providers refuse, counts one).
    """
    if opens <= 0 or _IDS_OPEN.match(body, opens) is None:
        return None
    if _IDS_NAME.search(body, max(0, opens - 128), opens + 1) is None:
        return None
    end = body.rfind(b"]", at, closes) + 1
    if end <= 0:
        return None
    first = body.index(b"[", opens)
    if body[first:end].translate(None, _IDS_BYTES):
        return None  # (not only ids: a text)
    return first, end, body.count(b",", first, end) + 1


def _media_content(body: bytes, opens: int) -> tuple[int, bool]:
    """Where the base64 of the string opening at ``opens`` starts when it is a base64 data
    URL (not of text), or base64 of a file as the value of a media field (a look at the ~24
    bytes before it for the field's name, then at the file's first bytes: readable text in
    the URL-safe alphabet, as in an Anthropic text document's ``data``, is no file), -1 when
    it is neither; and whether it is a document: a PDF, or a data URL of a type other than
    an image's, a recording's or a video's."""
    url = _DATA_URL.match(body, opens)
    if url is not None:
        kind = url["type"].lower()
        if kind.startswith(b"text/"):
            return -1, False
        document = not kind.startswith(_MEDIA_TYPES)
        return url.end(), document or _head(body, url.end()).startswith(b"%PDF-")
    if _MEDIA_FIELD.search(body, max(0, opens - 24), opens + 1) is not None:
        head = _head(body, opens + 1)
        if head.startswith(_SIGNATURES) or head[4:8] == b"ftyp" or _mpeg_audio(head):
            return opens + 1, head.startswith(b"%PDF-")
    return -1, False


def _head(body: bytes, content: int) -> bytes:
    """The first 12 bytes the base64 at ``content`` decodes to (of either alphabet: the first
    line of wrapped base64 is longer); empty when its first 16 characters are not base64."""
    try:
        return binascii.a2b_base64(
            body[content : content + 16].translate(_STANDARD), strict_mode=True
        )
    except binascii.Error:
        return b""


def _mpeg_audio(head: bytes) -> bool:
    """Whether ``head`` opens with an MPEG audio frame's header (an MP3 without an ID3 tag):
    its 11 bits of sync, then a version, layer, bitrate and sample rate that exist (text made
    of "_" or "/", which decode to sync bits, has none)."""
    if len(head) < 3 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    return version != 1 and layer != 0 and head[2] >> 4 != 15 and (head[2] >> 2) & 3 != 3
