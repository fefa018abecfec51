"""A batch input file's lines as the runner reads them, a chunk at a time from the store:
cut exactly where ``bytes.splitlines`` cuts the whole file, wherever the chunks end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from switchyard.workers.batch.inputs import split_lines

PIECES = st.sampled_from([b"a", b"{}", b" ", b"\n", b"\r", b"\r\n", b"\n\n", b"\xe2\x82\xac"])
FILES = st.lists(PIECES, max_size=60).map(b"".join)


def _lines(chunks: list[bytes]) -> list[bytes]:
    async def feed() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def read() -> list[bytes]:
        return [line async for line in split_lines(feed())]

    return asyncio.run(read())


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(data=FILES, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_lines_are_cut_as_splitlines_cuts_the_whole_file(data: bytes, cuts: list[int]) -> None:
    assert _lines(_cut(data, cuts)) == data.splitlines()


def test_a_line_ending_split_between_chunks_is_one_ending() -> None:
    assert _lines([b"one\r", b"\ntwo\r", b"", b"\n", b"three"]) == [b"one", b"two", b"three"]
    assert _lines([b"one\r", b"two\n"]) == [b"one", b"two"]  # a lone "\r" ends a line too
    assert _lines([b"x" * 100, b"y" * 100, b"\n", b""]) == [b"x" * 100 + b"y" * 100]
    assert _lines([]) == []
