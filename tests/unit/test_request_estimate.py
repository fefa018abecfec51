"""The tokens the edge admits a request on against its key's ``tpm`` (ingress/estimate.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from switchyard.dialects.probes import probe_messages, probe_responses
from switchyard.ingress.estimate import request_tokens
from switchyard.schemas.openai import probe
from switchyard.schemas.prompt_estimate import (
    DOCUMENT_CHARS,
    MEDIA_TOKENS,
    VIDEO_CHARS,
    prompt_tokens,
)

pytestmark = pytest.mark.unit

# 100 KiB of a PNG image: ~136,000 characters of base64.
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
IMAGE = base64.b64encode(PNG + bytes(range(256)) * 400).decode()


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _chat(content: Any, **extra: Any) -> bytes:
    return _json({"model": "m", "messages": [{"role": "user", "content": content}], **extra})


def _tokens(op: str, body: bytes, tpm: int = 0) -> int:
    if op == "responses":
        return request_tokens(body, probe_responses(body), tpm)
    if op == "messages":
        return request_tokens(body, probe_messages(body), tpm)
    return request_tokens(body, probe(op, body), tpm)


def test_text_counts_four_bytes_a_token_as_before() -> None:
    body = _chat("a question of some length, " * 400)
    assert _tokens("chat", body) == len(body) // 4
    assert _tokens("chat", _json({"model": "m", "messages": [{}]})) >= 1
    # Long strings that are not base64 are text: spaces, escapes (a JSON "\n"), punctuation.
    for text in ("word " * 2000, "line\n" * 2000, "https://example.com/a?b=c&d=e;" * 300):
        assert _tokens("chat", _chat(text)) == len(_chat(text)) // 4


def test_the_answers_cap_counts_as_openai_counts_it() -> None:
    capped = _chat("hi", max_tokens=500)
    assert _tokens("chat", capped) == len(capped) // 4 + 500
    # max_completion_tokens replaces max_tokens in OpenAI's chat API.
    both = _chat("hi", max_tokens=500, max_completion_tokens=300)
    assert _tokens("chat", both) == len(both) // 4 + 300
    completion = _json({"model": "m", "prompt": "hi", "max_tokens": 200})
    assert _tokens("complete", completion) == len(completion) // 4 + 200
    responses = _json({"model": "m", "input": "hi", "max_output_tokens": 700})
    assert _tokens("responses", responses) == len(responses) // 4 + 700
    messages = _json(
        {"model": "m", "max_tokens": 1024, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert _tokens("messages", messages) == len(messages) // 4 + 1024
    embed = _json({"model": "m", "input": "hi"})
    assert _tokens("embed", embed) == len(embed) // 4


def test_the_cap_counts_up_to_the_whole_tpm_and_the_prompt_decides_too_large() -> None:
    messages = _json(
        {"model": "m", "max_tokens": 32000, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert _tokens("messages", messages, tpm=20000) == 20000  # runs alone in the window
    assert _tokens("messages", messages, tpm=0) == len(messages) // 4 + 32000
    long = _chat("words and words " * 2000, max_tokens=100)
    assert _tokens("chat", long, tpm=1000) == len(long) // 4  # too large by its prompt


def test_inline_media_counts_a_fixed_allowance_not_its_bytes() -> None:
    text = _chat([{"type": "text", "text": "what is in this picture?"}])
    base = prompt_tokens(text)
    image_url = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMAGE}"}}
    chat = _chat([{"type": "text", "text": "what is in this picture?"}, image_url])
    assert len(chat) > 100 * 1024
    assert base + MEDIA_TOKENS <= prompt_tokens(chat) <= base + MEDIA_TOKENS + 20
    # Two images, two allowances.
    two = _chat([{"type": "text", "text": "what is in this picture?"}, image_url, image_url])
    assert base + 2 * MEDIA_TOKENS <= prompt_tokens(two) <= base + 2 * MEDIA_TOKENS + 40
    anthropic = _json(
        {
            "model": "m",
            "max_tokens": 100,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": IMAGE},
                        },
                        {"type": "text", "text": "describe it"},
                    ],
                }
            ],
        }
    )
    assert MEDIA_TOKENS + 100 <= _tokens("messages", anthropic) <= MEDIA_TOKENS + 200
    audio = _chat([{"type": "input_audio", "input_audio": {"data": IMAGE, "format": "wav"}}])
    assert MEDIA_TOKENS <= prompt_tokens(audio) <= MEDIA_TOKENS + 50
    video = {"type": "image_url", "image_url": {"url": f"data:video/mp4;base64,{IMAGE}"}}
    assert MEDIA_TOKENS <= prompt_tokens(_chat([video])) <= MEDIA_TOKENS + 50


def test_small_media_counts_its_bytes() -> None:
    small = IMAGE[:2000]  # under MEDIA_TOKENS x 4 bytes: fewer tokens than the allowance
    body = _chat([{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{small}"}}])
    assert prompt_tokens(body) == len(body) // 4


def test_base64_in_a_text_part_counts_as_text() -> None:
    """Providers bill it as text: counted as media, ten such requests passed a tpm 20x over
    (reviewer)."""
    text = _chat([{"type": "text", "text": IMAGE}])
    assert prompt_tokens(text) >= len(IMAGE) // 4


def test_a_long_string_that_is_not_media_is_read_once() -> None:
    """Each look inside one long string searched the whole string again: a 4 MB string of no
    spaces took 0.3 s of the edge's loop (reviewer). Counted, it is 4 MB of looks, not 2,000
    times that: the number of byte searches is bounded by a few per string."""
    calls = 0
    real_find = bytes.find

    class Counted(bytes):
        def find(self, *args: object) -> int:
            nonlocal calls
            calls += 1
            return real_find(self, *args)  # type: ignore[arg-type]

        def rfind(self, *args: object) -> int:
            nonlocal calls
            calls += 1
            return bytes.rfind(self, *args)  # type: ignore[arg-type]

    body = Counted(json.dumps({"model": "m", "messages": [{"content": "A" * 4_000_000}]}).encode())
    assert prompt_tokens(body) >= 1_000_000
    assert calls < 10


# A pre-tokenized embedding request, as LangChain's OpenAIEmbeddings sends one by default: 20
# chunks of 700 token ids (of 1 to 6 digits).
IDS = [[(i * 7919 + j * 104729) % 200_000 for j in range(700)] for i in range(20)]


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("separators", [(", ", ": "), (",", ":")])
def test_token_ids_count_one_token_each(separators: tuple[str, str], indent: int | None) -> None:
    """14,000 ids counted at 4 bytes a token were ~21,000-24,000 tokens: 429
    ``request_too_large`` for good on a key of 20,000 (explorer). Compact or indented."""

    def body(doc: dict[str, Any]) -> bytes:
        return json.dumps(doc, separators=separators, indent=indent).encode()

    def rest(doc: dict[str, Any], field: str) -> int:  # the bytes around the ids, as tokens
        return len(body({**doc, field: []})) // 4

    docs: list[tuple[dict[str, Any], int]] = [
        ({"model": "text-embedding-3-small", "input": IDS, "encoding_format": "float"}, 14000),
        ({"input": IDS, "model": "m"}, 14000),  # the ids first, or last in the body
        ({"model": "m", "input": IDS}, 14000),
        ({"model": "m", "input": IDS[0] * 5}, 3500),  # one list of ids
    ]
    for doc, ids in docs:
        near = rest(doc, "input") + ids
        assert near - 1 <= _tokens("embed", body(doc), tpm=20000) <= near + 1
    completion = {"model": "m", "prompt": IDS[1] * 4, "max_tokens": 100}
    near = rest(completion, "prompt") + 2800
    assert near - 1 <= _tokens("complete", body(completion), tpm=20000) - 100 <= near + 1


def test_numbers_in_text_count_as_text() -> None:
    """Only an array of integers is ids: numbers in a text, a list of strings, or a request
    quoted in a message (its quotes escaped) are billed as text. So is a text that starts like
    an array of ids after a field's name (``: [1``): the quote before it opens the text, it
    closes no name (a 1 MB message so made counted 16 tokens, past ``tpm`` and
    ``request_too_large``, and was billed 16 without usage: reviewer)."""
    numbers = ", ".join(str(i) for i in range(3000))
    quoted = json.dumps({"model": "m", "input": IDS[:3]})  # escaped in the message
    for body in (
        _chat(numbers),
        _chat(f"sum these: {numbers}"),
        _chat(quoted),
        _json({"model": "m", "input": [numbers, numbers]}),
        _json({"model": "m", "input": [str(i) for i in range(3000)]}),
        _chat(": [1 " + " " * 2048 + "x" * 1_000_000 + "]"),  # words in the "array"
        _chat(": [1" + " " * 100_000 + "]"),  # nothing but what ids hold: still a text
        _json({"model": "m", "input": [*range(3000), 0.5]}),  # not all integers
    ):
        assert prompt_tokens(body) == len(body) // 4


def test_token_ids_are_counted_in_a_few_byte_searches() -> None:
    """Each id is not looked at: the array is found by the looks every 2 KiB and its ids are
    its commas, counted by one byte search."""
    calls = 0

    class Counted(bytes):
        def find(self, *args: object) -> int:
            nonlocal calls
            calls += 1
            return bytes.find(self, *args)  # type: ignore[arg-type]

        def rfind(self, *args: object) -> int:
            nonlocal calls
            calls += 1
            return bytes.rfind(self, *args)  # type: ignore[arg-type]

        def count(self, *args: object) -> int:
            nonlocal calls
            calls += 1
            return bytes.count(self, *args)  # type: ignore[arg-type]

    body = Counted(_json({"model": "m", "input": IDS}))
    assert 14000 <= prompt_tokens(body) <= 14010
    assert calls < 10


def _wrapped(data: bytes, width: int = 76, brk: str = "\n", *, url_safe: bool = False) -> str:
    """Base64 in lines, as `base64 photo.jpg` in a shell or MIME writes it (76 characters)."""
    flat = (base64.urlsafe_b64encode if url_safe else base64.b64encode)(data).decode()
    return "".join(flat[i : i + width] + brk for i in range(0, len(flat), width))


PHOTO = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 1600  # 400 KiB of a JPEG


def test_base64_in_lines_or_url_safe_counts_as_media() -> None:
    """A 400 KB image made with base64.encodebytes (76-character lines, a JSON "\\n" each) or
    in the URL-safe alphabet counted as text: ~100,000 tokens, 429 for good on a 20k key."""
    text = _chat([{"type": "text", "text": "what is in this picture?"}])
    base = prompt_tokens(text)

    def chat(data: str) -> bytes:
        url = {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}}
        return _chat([{"type": "text", "text": "what is in this picture?"}, url])

    for data in (
        base64.encodebytes(PHOTO).decode(),  # 76 a line, a last "\n"
        _wrapped(PHOTO, 76, "\r\n"),
        _wrapped(PHOTO, 64)[:-1],  # PEM's 64, no last break
        _wrapped(PHOTO, 1000),
        base64.urlsafe_b64encode(PHOTO).decode().rstrip("="),
        _wrapped(bytes(range(251, 256)) * 800, 76),  # 4 KB, just above the allowance
        _wrapped(PHOTO, url_safe=True),
    ):
        assert base + MEDIA_TOKENS <= prompt_tokens(chat(data)) <= base + MEDIA_TOKENS + 20
    source = {"type": "base64", "media_type": "image/jpeg", "data": _wrapped(PHOTO)}
    anthropic = _json(
        {
            "model": "m",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": [{"type": "image", "source": source}]}],
        }
    )
    assert MEDIA_TOKENS + 100 <= _tokens("messages", anthropic) <= MEDIA_TOKENS + 150
    # On a key of 20,000 tokens a minute it runs.
    assert _tokens("chat", chat(_wrapped(PHOTO)), tpm=20000) < 20000


def test_text_in_lines_counts_as_text_even_in_a_media_field() -> None:
    """Only base64 in lines of one width, at least 32, with nothing but base64 and its breaks
    where it is looked at, is media: short lines, lines of other widths, other escapes and
    other characters are text, also where media goes."""
    urls = "".join(f"https://example.com/{i:08d}/page.html\n" for i in range(400))  # one width
    names = "".join(f"{'x' * (40 + i % 7)}\n" for i in range(400))
    b64 = base64.b64encode(PHOTO[:60_000]).decode()
    for text in (
        "line\n" * 2000,
        urls,
        names,  # lines of several widths
        ("A" * 76 + "\n" + "a.b" * 25 + "c\n") * 400,  # one width, not all base64
        _wrapped(PHOTO[:60_000], 20),  # too short a line to tell from text
        _wrapped(PHOTO[:60_000]).replace("\n", "\t"),
        b64[:30000] + '"' + b64[30000:],  # a quote, escaped
        b64[:30000] + "\n" + b64[30000:40000] + "\n" + b64[40000:],
    ):
        for body in (
            _chat([{"type": "text", "text": text}]),
            _chat([{"type": "input_audio", "input_audio": {"data": text, "format": "wav"}}]),
            _chat([{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{text}"}}]),
        ):
            assert prompt_tokens(body) >= len(text) // 4, text[:80]
    # Base64 in lines in a text part is billed as text, as unbroken base64 is.
    wrapped = _chat([{"type": "text", "text": _wrapped(PHOTO)}])
    assert prompt_tokens(wrapped) == len(wrapped) // 4


def test_base64_in_lines_is_read_once() -> None:
    """A look every 2 KiB, a few bytes each, as for unbroken base64: however long its lines
    (one of 2 MB, then a break), the body is searched a few times, not once a line."""
    calls = 0

    class Counted(bytes):
        def find(self, *args: object) -> int:
            nonlocal calls
            calls += 1
            return bytes.find(self, *args)  # type: ignore[arg-type]

        def rfind(self, *args: object) -> int:
            nonlocal calls
            calls += 1
            return bytes.rfind(self, *args)  # type: ignore[arg-type]

    flat = base64.b64encode(PHOTO * 6).decode()
    for data in (_wrapped(PHOTO * 6), flat[: len(flat) // 2] + "\n" + flat[len(flat) // 2 :]):
        calls = 0
        body = Counted(_chat([{"type": "input_audio", "input_audio": {"data": data}}]))
        assert prompt_tokens(body) <= MEDIA_TOKENS + 50
        assert calls < 10


# What a few kinds of file start with, as their own formats write them.
FILES = {
    "png": PNG,
    "jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "gif": b"GIF89a\x01\x00\x01\x00",
    "webp": b"RIFF\x00\x10\x00\x00WEBPVP8 ",
    "wav": b"RIFF\x24\x10\x00\x00WAVEfmt ",
    "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
    "mp3": b"ID3\x04\x00\x00\x00\x00\x00\x23TSSE",
    "mp3 without its tag": b"\xff\xfb\x90\x64\x00\x00\x00\x00",
    "ogg": b"OggS\x00\x02\x00\x00\x00\x00\x00\x00",
    "flac": b"fLaC\x00\x00\x00\x22\x10\x00",
    "m4a": b"\x00\x00\x00\x20ftypM4A \x00\x00",
    "heic": b"\x00\x00\x00\x18ftypheic\x00\x00",
    "webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01",
}


@pytest.mark.parametrize("url_safe", [False, True])
@pytest.mark.parametrize("kind", sorted(FILES))
def test_a_file_in_a_media_field_counts_as_media(kind: str, url_safe: bool) -> None:
    """Its first bytes, decoded, carry its format's signature: unbroken or wrapped in lines,
    in either alphabet."""
    data = FILES[kind] + bytes(range(256)) * 40  # 10 KiB
    flat = (base64.urlsafe_b64encode if url_safe else base64.b64encode)(data).decode()
    for b64 in (flat, _wrapped(data, url_safe=url_safe)):
        for part in (
            {"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}},
            {"type": "file", "file": {"file_data": b64, "filename": "a"}},
        ):
            body = _chat([part])
            assert MEDIA_TOKENS <= prompt_tokens(body) <= MEDIA_TOKENS + 50, (kind, part)


def test_text_in_a_media_field_counts_as_text() -> None:
    """A media field's string is media only when it decodes to a file: 886 KB of readable
    text in an Anthropic text document (``source.type: "text"``), in the URL-safe alphabet
    and sampled only 64 bytes every 2 KiB, counted 1,058 tokens, flat or in lines of 76
    (reviewer)."""
    words = ("the_quick_brown_fox_jumps_over_the_lazy_dog_" * 20_200)[:886_000]
    lines = "".join(words[i : i + 76] + "\n" for i in range(0, len(words), 76))
    for text in (words, lines, "_" * 16 + words, "/" * 16 + words, "-" * 16 + words):
        source = {"type": "text", "media_type": "text/plain", "data": text}
        document = {"type": "document", "source": source}
        messages = _json(
            {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": [document]}]}
        )
        assert _tokens("messages", messages) >= len(text) // 4, text[:20]
        for part in (
            {"type": "input_audio", "input_audio": {"data": text, "format": "wav"}},
            {"type": "file", "file": {"file_data": text}},
            {"type": "image", "b64_json": text},
        ):
            assert prompt_tokens(_chat([part])) >= len(text) // 4, (text[:20], part)


# 3 MiB of a PDF: ~4,190,000 characters of base64, billed by providers as its text.
PDF = FILES["pdf"] + bytes(range(256)) * 12_288


def test_a_document_counts_a_token_per_32_characters_of_its_base64() -> None:
    """A 3 MB PDF counted 1,000 tokens, as an image does, where providers bill it by its text
    (100,000 tokens and more): a tpm key admitted it at 1,000, and a call whose usage never
    came (cancelled before it, or a provider without usage) was billed 1,000 (reviewer)."""
    b64 = base64.b64encode(PDF).decode()
    tokens = len(b64) // DOCUMENT_CHARS  # ~131,000: a token per 24 bytes of the PDF
    url = f"data:application/pdf;base64,{b64}"
    source = {"type": "base64", "media_type": "application/pdf", "data": b64}
    messages = _json(
        {
            "model": "m",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": [{"type": "document", "source": source}]}],
        }
    )
    assert tokens + 100 <= _tokens("messages", messages) <= tokens + 150
    for part in (
        {"type": "file", "file": {"filename": "a.pdf", "file_data": url}},  # chat
        {"type": "file", "file": {"filename": "a.pdf", "file_data": b64}},
        {"type": "file", "file": {"file_data": _wrapped(PDF, url_safe=True)}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}},  # a PDF
        {
            "type": "image_url",
            "image_url": {"url": f"data:APPLICATION/OCTET-STREAM;base64,{IMAGE}"},
        },
    ):
        data = part.get("file", part.get("image_url"))
        # (Its base64's characters: a wrapped one's line breaks left out.)
        expected = len(json.dumps(data).replace("\\n", "")) // DOCUMENT_CHARS
        assert expected - 10 <= prompt_tokens(_chat([part])) <= expected + 50, str(part)[:80]
    pdf = {"type": "input_file", "filename": "a.pdf", "file_data": url}
    responses = _json({"model": "m", "input": [{"role": "user", "content": [pdf]}]})
    assert tokens <= _tokens("responses", responses) <= tokens + 50
    assert _tokens("responses", responses, tpm=20_000) > 20_000  # too large for such a key
    # A small document counts MEDIA_TOKENS at least; text in a data URL counts its text.
    small = base64.b64encode(PDF[:20_000]).decode()
    body = _chat([{"type": "file", "file": {"file_data": f"data:application/pdf;base64,{small}"}}])
    assert MEDIA_TOKENS <= prompt_tokens(body) <= MEDIA_TOKENS + 50
    text = base64.b64encode(b"words and words " * 20_000).decode()
    body = _chat([{"type": "file", "file": {"file_data": f"data:text/plain;base64,{text}"}}])
    assert 80_000 <= prompt_tokens(body) <= 80_000 + 50  # 320,000 bytes of text


# 400 KB of text: 100,000 tokens, however it is encoded or labelled.
TEXT = "A line of a log file, or of a CSV, with words and numbers: 12, 34.5, six.\n" * 5_400


def _text_file(data: bytes) -> tuple[str, int]:
    """``data`` in base64, and the tokens its text counts (a token per 4 bytes; in UTF-16, per
    4 characters: it counted double by its bytes; in UTF-32, per 4 characters too)."""
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        per_token = 16
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        per_token = 8
    else:
        per_token = 4
    return base64.b64encode(data).decode(), len(data) // per_token


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe" + TEXT.encode("utf-16-le"),  # Windows "Unicode" text: an MP3 frame's sync
        b"\xfe\xff" + TEXT.encode("utf-16-be"),
        # UTF-32 (its mark opens as UTF-16's does): it counted as UTF-16, twice its text.
        b"\xff\xfe\x00\x00" + TEXT.encode("utf-32-le"),
        b"\x00\x00\xfe\xff" + TEXT.encode("utf-32-be"),
        b"\xef\xbb\xbf" + TEXT.encode(),  # UTF-8 with a byte-order mark
        ("ID3 tags, as read from the files:\n" + TEXT).encode(),  # an MP3's signature
        ("RIFF chunks of the WAV files, listed:\n" + TEXT).encode(),
        ("GIF89a and PNG icons, by size:\n" + TEXT).encode(),
        TEXT.encode(),
    ],
    ids=["utf-16", "utf-16-be", "utf-32", "utf-32-be", "utf-8-bom", "id3", "riff", "gif", "plain"],
)
def test_a_text_file_counts_as_its_text(data: bytes) -> None:
    """A text file's base64 in a media field counted 1,000 tokens when its first bytes looked
    like a file's (UTF-16's byte-order mark passes for an MPEG audio frame, a text may open
    with "ID3"), else its base64's bytes, a third more than its text; in a data URL of a
    type other than text/* (application/json, application/octet-stream, image/svg+xml) it
    was a document, a token per 32 characters: a sixth of its text. Each counts its text."""
    b64, tokens = _text_file(data)
    parts: list[dict[str, Any]] = [
        {"type": "file", "file": {"file_data": b64, "filename": "a.txt"}},
        {"type": "input_audio", "input_audio": {"data": b64, "format": "mp3"}},
    ]
    for kind in ("text/plain", "application/json", "application/octet-stream", "image/svg+xml"):
        parts.append({"type": "file", "file": {"file_data": f"data:{kind};base64,{b64}"}})
    for part in parts:
        assert tokens <= prompt_tokens(_chat([part])) <= tokens + 50, str(part)[:90]
    # In lines of 76, their breaks are no text (they counted as base64 of it: 2 characters in
    # 78, 4 in 80 with "\r\n").
    for brk in ("\n", "\r\n"):
        wrapped = _chat([{"type": "file", "file": {"file_data": _wrapped(data, brk=brk)}}])
        assert tokens <= prompt_tokens(wrapped) <= tokens + 50, brk


def test_cjk_in_utf16_counts_by_its_bytes_not_its_characters() -> None:
    """Two bytes a character in UTF-16, three in UTF-8: counted by characters (a token per 4)
    it was a third of its UTF-8 count, more past a tpm limit (a review). It counts a token
    per 4 bytes, as UTF-8 text does."""
    text = "日本語のログファイルの一行です。数字も含みます、一二三。\n" * 4_000
    data = b"\xff\xfe" + text.encode("utf-16-le")
    b64 = base64.b64encode(data).decode()
    tokens = prompt_tokens(_chat([{"type": "file", "file": {"file_data": b64}}]))
    assert len(data) // 4 <= tokens <= len(data) // 4 + 50


def test_cjk_in_utf32_counts_as_in_utf16() -> None:
    """Four bytes a character in UTF-32: it counts what the same text in UTF-16 does."""
    text = "日本語のログファイルの一行です。数字も含みます、一二三。\n" * 4_000
    for codec in ("utf-32-le", "utf-32-be"):
        bom = b"\xff\xfe\x00\x00" if codec.endswith("le") else b"\x00\x00\xfe\xff"
        data = bom + text.encode(codec)
        b64 = base64.b64encode(data).decode()
        tokens = prompt_tokens(_chat([{"type": "file", "file": {"file_data": b64}}]))
        assert len(data) // 8 <= tokens <= len(data) // 8 + 50, codec


@pytest.mark.parametrize("codec", ["utf-16", "utf-32"])
def test_utf16_and_utf32_are_judged_latin_or_not_from_more_than_their_first_characters(
    codec: str,
) -> None:
    """Judged from its first 11 characters (24 bytes: 5 in UTF-32), a UTF-16 file with a
    Latin title over CJK text counted as Latin (half its count), and an English one with a
    curly quote in its title as CJK (double). A sample of a few KiB decides, wrapped or not;
    UTF-32 is judged the same way."""
    cjk = "Report 2024\n" + "日本語のログファイルの一行です。数字も含みます、一二三。\n" * 4_000
    english = "It\u2019s a log:\n" + TEXT
    wide = 2 if codec == "utf-16" else 4  # bytes a character
    for text, per_char in ((cjk, 2), (english, 4)):  # characters a token: CJK's, Latin's
        data = text.encode(codec)  # its byte-order mark first
        for file_data in (base64.b64encode(data).decode(), _wrapped(data, brk="\r\n")):
            tokens = prompt_tokens(_chat([{"type": "file", "file": {"file_data": file_data}}]))
            expected = len(data) // wide // per_char
            assert expected <= tokens <= expected + 50, (codec, text[:12])


def test_a_file_is_not_taken_for_text() -> None:
    """Every file's opening holds bytes no text has: they stay media, documents or video."""
    for kind, head in FILES.items():
        data = head + bytes(range(256)) * 40
        b64 = base64.b64encode(data).decode()
        tokens = prompt_tokens(_chat([{"type": "file", "file": {"file_data": b64}}]))
        assert MEDIA_TOKENS <= tokens <= MEDIA_TOKENS + 50, kind


# 3 MiB of an MP4 video (ISO base media, brand "isom"), and of a WebM one.
MP4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00" + bytes(range(256)) * 12_288
WEBM = FILES["webm"] + bytes(range(256)) * 12_288


def test_a_video_counts_by_its_size() -> None:
    """A video counted 1,000 tokens, as an image does, where providers bill it by its length
    (Gemini ~300 tokens a second: a 3 MB clip of ~10 s is ~3,000): it counts a token per
    VIDEO_CHARS characters of its base64, at least 1,000. Audio and images stay 1,000."""
    for data, url_type in ((MP4, "video/mp4"), (WEBM, "video/webm")):
        b64 = base64.b64encode(data).decode()
        tokens = len(b64) // VIDEO_CHARS  # 4,096
        assert tokens == 4096
        for part in (
            {"type": "video_url", "video_url": {"url": f"data:{url_type};base64,{b64}"}},
            {"type": "file", "file": {"file_data": f"data:{url_type};base64,{b64}"}},
            {"type": "file", "file": {"file_data": b64}},  # told by its signature
        ):
            assert tokens <= prompt_tokens(_chat([part])) <= tokens + 50, str(part)[:90]
        lines = _chat([{"type": "file", "file": {"file_data": _wrapped(data, url_safe=True)}}])
        assert tokens <= prompt_tokens(lines) <= tokens * 78 // 76 + 50  # (breaks counted)
    # A short clip counts 1,000 at least; an M4A (ftyp too) is audio, a HEIC an image.
    clip = base64.b64encode(MP4[:100_000]).decode()
    short = {"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{clip}"}}
    assert MEDIA_TOKENS <= prompt_tokens(_chat([short])) <= MEDIA_TOKENS + 50
    for kind in ("m4a", "heic"):
        b64 = base64.b64encode(FILES[kind] + bytes(range(256)) * 12_288).decode()
        part = {"type": "file", "file": {"file_data": b64}}
        assert MEDIA_TOKENS <= prompt_tokens(_chat([part])) <= MEDIA_TOKENS + 50, kind


def test_base64_in_lines_is_media_wherever_its_last_look_lands() -> None:
    """Encoders end the last line with a break too: a look that landed in the last, shorter
    line read that break as part of it and took the file for text, its base64 counted as
    bytes (a 400 KiB photo ~136,000 tokens), for about one length in 50."""
    missed = []
    for extra in range(0, 2048 * 3, 3):
        data = FILES["jpeg"] + bytes(range(256)) * 16 + bytes(extra)
        part = {"type": "input_audio", "input_audio": {"data": _wrapped(data), "format": "mp3"}}
        if not MEDIA_TOKENS <= prompt_tokens(_chat([part])) <= MEDIA_TOKENS + 50:
            missed.append(extra)
    assert missed == []
