"""A request's prompt in tokens, estimated from its JSON body: ~4 bytes per token, each inline
image or audio clip (its base64 in one line or wrapped in lines, of either alphabet; in a bare
media field, only base64 that opens with a known file's signature) :data:`MEDIA_TOKENS`, each
inline video a token per :data:`VIDEO_CHARS` characters of its base64 and each inline document
(a PDF, or a data URL of another type) a token per :data:`DOCUMENT_CHARS`, both at least
``MEDIA_TOKENS``, an inline text file (a data URL of ``text/*``, or base64 that decodes to
text: a byte-order mark, or readable UTF-8) a token per 4 bytes of its text (per 4
characters in Latin UTF-16 and UTF-32), and a prompt
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
under ``tpm`` at 1,000 and billed 1,000 when no usage came (:data:`DOCUMENT_CHARS`). So did
a video, which providers bill by its length (Gemini ~300 tokens a second: a 20 MB clip is
~30,000; :data:`VIDEO_CHARS`). And a text file was counted by what its first bytes looked
like: one in UTF-16 (Windows' "Unicode" text, ``FF FE`` first) passed for an MP3 frame, and
one whose text opens as a signature does ("ID3 tags...", "RIFF...") for that file, 1,000
tokens for megabytes of text; one in a data URL of another type (``application/json``,
``application/octet-stream``) was a document, a sixth of its text. Text is now counted as
text wherever it comes (:func:`_is_text`), a token per 4 bytes once decoded (its base64 is a
third longer), or per 4 characters in UTF-16 (two bytes each: by its bytes it counted double).
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
# A video's characters of base64 per token: a token per 768 bytes of the file. Providers bill
# video by its length (Gemini: 258 tokens a second of frames at its default resolution, 32 of
# sound), which its bytes tell without parsing it only roughly: a web or phone MP4 at 720p is
# 1.5-3 Mbit/s, 190-375 KB a second, so ~250-500 tokens a second here, a 20 MB clip ~27,000.
# A low-bitrate clip counts less than it is billed, a 1080p one more, until its usage corrects
# it; 1,000 flat was a thirtieth of a 20 MB clip's bill.
VIDEO_CHARS = 1024
# Only a string longer than MEDIA_TOKENS x 4 bytes counts for less than its bytes, so the body
# is looked at every _STRIDE bytes, under half that: each such string has a look in its base64.
# (Base64 of text counts 3/16 of its bytes, so a shorter one counts a third more: no matter.)
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
# The media types of a data URL counted as one image or recording; video/* is counted by its
# size, text/* as text; any other type is a document (unless its bytes are text: _is_text).
_MEDIA_TYPES = (b"image/", b"audio/")
# What an inline file counts as (:func:`_media`).
_MEDIA, _VIDEO, _DOCUMENT, _TEXT, _TEXT16, _TEXT32 = range(6)
# The bytes of a text file per token, by its kind: UTF-8's 4; Latin UTF-16's 8 (a token per 4
# characters, as UTF-8's), and other UTF-32's too (4 bytes a character where UTF-16 takes 2:
# counted as the same text in UTF-16); Latin UTF-32's 16 (a token per 4 characters).
_TEXT_BYTES = {_TEXT: 4, _TEXT16: 8, _TEXT32: 16}
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
# tag, OGG, FLAC), besides MP4's, M4A's and HEIC's "ftyp" at their 4th byte (:func:`_ftyp`),
# Matroska/WebM's (a video) and an MPEG audio frame (:func:`_mpeg_audio`). Text may open as
# some do ("ID3 tags..."): it is told apart first (:func:`_is_text`), as a file's first bytes
# (binary sizes, versions, flags) are never all readable.
_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF8",
    b"RIFF",
    b"%PDF-",
    b"ID3",
    b"OggS",
    b"fLaC",
)
_MATROSKA = b"\x1a\x45\xdf\xa3"
# The brands of an "ftyp" file that are no video: M4A/M4B/M4P audio, HEIF/HEIC/AVIF images.
_FTYP_NOT_VIDEO = frozenset(
    {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B ", b"heic", b"heix", b"hevc", b"hevx"}
    | {b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
)
# Byte-order marks: UTF-8's, UTF-16's and UTF-32's, little- and big-endian (UTF-32LE's opens
# as UTF-16LE's does: looked for first).
_UTF32 = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")
_UTF16 = (b"\xff\xfe", b"\xfe\xff")
_BOMS = (b"\xef\xbb\xbf", *_UTF32, *_UTF16)
# The characters of base64 a UTF-16 or UTF-32 text is judged Latin or not from (3 KiB of it:
# hundreds of characters, not the first few, which a title or a header may be).
_SAMPLE_CHARS = 4096
# Characters of readable text besides the printable ones: tab, line feed, form feed, return.
_LAYOUT = str.maketrans("", "", "\t\n\x0c\r")
# The characters of base64 read for a file's first bytes (:func:`_head`): within the first
# line of wrapped base64 (at least _MIN_WIDTH), enough to tell text from a file.
_HEAD_CHARS = 32
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
    ``closes``, base64 at ``at``, counts for as an inline file longer than ``MEDIA_TOKENS`` x 4
    bytes; 0 when it is no such file (its bytes count).

    It is when it is a ``data:...;base64,`` URL or a file's base64 as the value of a media
    field (``data``, ``file_data``, ``b64_json``: base64 elsewhere, in a text part, is billed
    as text; :func:`_media_content`), holds no space, which base64 never does, and is base64
    wherever it is looked at: unbroken (no escape), or wrapped in lines (:func:`_wrapped`).
    An image or a recording counts ``MEDIA_TOKENS``, a video a token per ``VIDEO_CHARS`` of
    its base64 and a document a token per ``DOCUMENT_CHARS`` (both at least ``MEDIA_TOKENS``),
    a text file a token per 4 bytes of its text (3 bytes per 4 characters of base64).
    """
    if closes - opens <= 4 * MEDIA_TOKENS:
        return 0
    content, kind = _media_content(body, opens, closes)
    if content < 0 or body.find(b" ", opens, closes) >= 0:
        return 0
    escape = body.find(b"\\", content, closes)
    if escape >= 0:  # in lines: their breaks are no base64
        size = _wrapped(body, content, escape, closes)
    elif all(_RUN.match(body, a) for a in range(at + _STRIDE, closes - 64, _STRIDE)):
        size = closes - content
    else:
        size = 0
    if not size:
        return 0
    if kind in _TEXT_BYTES:  # 3 bytes per 4 characters of base64
        return size * 3 // (4 * _TEXT_BYTES[kind])
    if kind == _VIDEO:
        return max(MEDIA_TOKENS, size // VIDEO_CHARS)
    if kind == _DOCUMENT:
        return max(MEDIA_TOKENS, size // DOCUMENT_CHARS)
    return MEDIA_TOKENS


def _wrapped(body: bytes, content: int, escape: int, closes: int) -> int:
    """The characters of base64 (its line breaks left out) of the string from ``content`` up
    to ``closes`` when it is in lines of one width (its first line's, at least
    ``_MIN_WIDTH``) ended by the escape at ``escape``, a JSON ``\\n`` or ``\\r\\n``, as
    encoders wrap it; else 0. Every ``_STRIDE`` bytes, the 64 bytes looked at are base64 and
    their line ends where the width says (the last line may be shorter): a few bytes each,
    however long the lines."""
    width = escape - content
    brk = b"\\r\\n" if body.startswith(b"\\r\\n", escape) else b"\\n"
    if width < _MIN_WIDTH or not body.startswith(brk, escape):
        return 0
    line = width + len(brk)
    # The last line ends with a break too, as encoders write it (the string may end there).
    last = closes - len(brk) if body.startswith(brk, closes - len(brk)) else closes
    for a in range(content, closes, _STRIDE):
        end = a - (a - content) % line + width  # where the line of ``a`` breaks
        if end + len(brk) <= closes and not body.startswith(brk, end):
            return 0
        stop = min(a + 64, end, last)
        if a < stop and _LINE.fullmatch(body, a, stop) is None:
            return 0
    return (last - content) - (last - content) // line * len(brk)


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


def _media_content(body: bytes, opens: int, closes: int) -> tuple[int, int]:
    """Where the base64 of the string opening at ``opens`` starts when it is a base64 data
    URL, or base64 of a file or of text as the value of a media field (a look at the ~24
    bytes before it for the field's name, then at the file's first bytes: readable text in
    the URL-safe alphabet, as in an Anthropic text document's ``data``, decodes to neither),
    -1 when it is neither; and what it counts as (:func:`_url_kind`, :func:`_field_kind`)."""
    url = _DATA_URL.match(body, opens)
    if url is not None:
        return url.end(), _url_kind(_head(body, url.end(), closes), url["type"].lower())
    if _MEDIA_FIELD.search(body, max(0, opens - 24), opens + 1) is not None:
        kind = _field_kind(_head(body, opens + 1, closes))
        if kind is not None:
            return opens + 1, kind
    return -1, _MEDIA


def _url_kind(head: bytes, declared: bytes) -> int:
    """What a data URL's file of the media type ``declared``, opening with ``head``, counts
    as: a PDF a document, text (``text/*``, or :func:`_is_text`) text, whatever type the URL
    says; else ``video/*`` a video, ``image/*`` and ``audio/*`` media, any other a document."""
    if head.startswith(b"%PDF-"):
        return _DOCUMENT
    if declared.startswith(b"text/") or _is_text(head):
        return _text_kind(head)
    if declared.startswith(b"video/"):
        return _VIDEO
    return _MEDIA if declared.startswith(_MEDIA_TYPES) else _DOCUMENT


def _field_kind(head: bytes) -> int | None:
    """What a media field's file opening with ``head`` counts as: a PDF a document, text
    (:func:`_is_text`) text, else as its signature says; None without one (no file)."""
    if head.startswith(b"%PDF-"):
        return _DOCUMENT
    if _is_text(head):
        return _text_kind(head)
    if head.startswith(_MATROSKA):
        return _VIDEO
    if head[4:8] == b"ftyp":
        return _MEDIA if head[8:12] in _FTYP_NOT_VIDEO else _VIDEO
    if head.startswith(_SIGNATURES) or _mpeg_audio(head):
        return _MEDIA
    return None


def _text_kind(head: bytes) -> int:
    """A text file's, from its first bytes (:func:`_head`: a sample of ``_SAMPLE_CHARS`` for
    UTF-16 and UTF-32). Latin UTF-16 (its byte-order mark, then characters at least half of
    which are below U+0100) counts by its characters, two bytes each, as a token per 4 bytes
    of it counted twice what the same text in UTF-8 does. Other UTF-16 (CJK: two bytes a
    character, three in UTF-8) keeps a token per 4 bytes: by characters it counted a third of
    its UTF-8 (a review). UTF-32 counts as the same text in UTF-16 would (it counted as
    UTF-16, twice that). Judged from the first 11 characters, a Latin title before CJK text
    made the whole of it Latin, and one curly quote in them made English text CJK."""
    if head.startswith(_UTF32):
        codec, latin, other = "utf-32", _TEXT32, _TEXT16
    elif head.startswith(_UTF16):
        codec, latin, other = "utf-16", _TEXT16, _TEXT
    else:
        return _TEXT
    text = head.decode(codec, errors="ignore")
    latin_chars = len(text.encode("latin-1", errors="ignore"))
    return latin if text and 2 * latin_chars >= len(text) else other


def _is_text(head: bytes) -> bool:
    """Whether ``head``, a file's first bytes, are a text file's: a byte-order mark, or UTF-8
    (its last character maybe cut) of printable characters, tabs and line breaks only. No
    binary format's opening is: its sizes, versions and flags hold control bytes."""
    if head.startswith(_BOMS):
        return True
    try:
        text = head.decode()
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3 or exc.reason != "unexpected end of data":
            return False
        text = head[: exc.start].decode()
    return len(text) >= 8 and text.translate(_LAYOUT).isprintable()


def _head(body: bytes, content: int, closes: int) -> bytes:
    """The first bytes the base64 at ``content`` decodes to (24, of either alphabet: the
    first line of wrapped base64 is longer); empty when its first ``_HEAD_CHARS`` characters
    are not base64. For UTF-16 and UTF-32 text (its byte-order mark), the bytes of its first
    ``_SAMPLE_CHARS`` characters (before ``closes``), its line breaks left out."""
    try:
        head = binascii.a2b_base64(
            body[content : content + _HEAD_CHARS].translate(_STANDARD), strict_mode=True
        )
    except binascii.Error:
        return b""
    if not head.startswith((*_UTF32, *_UTF16)):
        return head
    sample = body[content : min(closes, content + _SAMPLE_CHARS)]
    sample = sample.replace(b"\\r", b"").replace(b"\\n", b"").translate(_STANDARD)
    try:
        return binascii.a2b_base64(sample[: len(sample) // 4 * 4])
    except binascii.Error:
        return head


def _mpeg_audio(head: bytes) -> bool:
    """Whether ``head`` opens with an MPEG audio frame's header (an MP3 without an ID3 tag):
    its 11 bits of sync, then a version, layer, bitrate and sample rate that exist (text made
    of "_" or "/", which decode to sync bits, has none)."""
    if len(head) < 3 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    return version != 1 and layer != 0 and head[2] >> 4 != 15 and (head[2] >> 2) & 3 != 3
