"""Reading on past the field that broke a request head, for its ``Origin`` only."""

from __future__ import annotations

import time

from switchyard.ingress.origin_seek import LINE_KEPT, OriginSeek, origin_values

SCOPE = {"path": "/v1/chat/completions", "headers": [(b"host", b"x")]}


def _seek(read: bytes = b"X-Big: aaaa", budget: int = 1000) -> OriginSeek:
    return OriginSeek(431, "request head too large", dict(SCOPE), budget, read)


def test_an_origin_line_is_found_across_reads() -> None:
    seek = _seek()
    assert not seek.feed(b"aaaa\r\nOri")
    assert not seek.feed(b"gin: https://app.example")
    assert seek.feed(b"\r\nX-After: b\r\n")
    assert seek.scope["headers"] == [(b"host", b"x"), (b"origin", b"https://app.example")]
    assert SCOPE["headers"] == [(b"host", b"x")]  # the scope given is not changed


def test_a_line_break_split_between_reads_still_starts_the_origin_line() -> None:
    seek = _seek(b"X-Big: aaaa\r")
    assert not seek.feed(b"\nOrigin: https://app.example")
    assert seek.feed(b"\r\n")
    assert seek.scope["headers"][-1] == (b"origin", b"https://app.example")


def test_the_heads_end_without_an_origin_ends_the_seek() -> None:
    seek = _seek()
    assert not seek.feed(b"aaaa\r\nX-A: b\r")
    assert seek.feed(b"\n\r\n")
    assert seek.scope["headers"] == [(b"host", b"x")]


def test_no_more_than_the_budget_is_read() -> None:
    seek = _seek(budget=100)
    assert not seek.feed(b"a" * 60)
    assert seek.feed(b"a" * 40)  # nothing found, but the budget is spent
    assert seek.scope["headers"] == [(b"host", b"x")]


def test_a_long_line_in_progress_is_not_kept() -> None:
    seek = _seek(budget=10 * LINE_KEPT)
    assert not seek.feed(b"\r\nX-Long: " + b"a" * (2 * LINE_KEPT))
    assert len(seek._carry) <= LINE_KEPT


def test_spaces_around_the_value_are_not_part_of_it() -> None:
    seek = _seek()
    assert seek.feed(b"\r\nOrigin: \t https://app.example \t\r\n")
    assert seek.scope["headers"][-1] == (b"origin", b"https://app.example")
    assert origin_values(b"\r\norigin:\r\n") == [b""]


def test_an_origin_line_of_whitespace_with_no_end_is_read_in_linear_time() -> None:
    # The old pattern backtracked in cubic time on such a line (2,000 spaces took 5 s): one
    # connection froze the edge's event loop. The bound is generous; linear time is ~1 ms.
    line = b"\r\nOrigin:" + b" \t" * 15_000
    started = time.perf_counter()
    seek = _seek(budget=100_000)
    assert not seek.feed(line)
    assert origin_values(line) == []
    assert time.perf_counter() - started < 1.0
