"""The chunks of one streamed answer as the model-proxy keeps them: how many were sent, and
their bytes for a replay (``Handler._replay``), up to a bound.

A replay sends an answer again, whole, after a NATS reconnect while it streamed (the caller
cannot be known to have every chunk). Keeping every chunk of every stream in flight for that
rare case cost a model-proxy the sum of its answers in memory (200 answers of 5 MB: 47 ->
465 MB). Past :data:`REPLAY_MAX_BYTES` of one answer its chunks are dropped at once and that
answer can no longer be replayed: a reconnect while it streamed ends it with an error
(``replay_unavailable``, docs/nats-api.md) instead. The count of chunks sent is kept whatever
the bound: the stream's ``final`` names it.

An answer without the provider's usage is billed by the content its chunks delivered
(:func:`.estimate.chunk_size`, :meth:`SentChunks.generated`): measured from the kept chunks
when the bill asks, so a stream its provider counted, every bench-sized one, pays nothing for
it; once the chunks are freed, each later one is measured as it passes (only answers past the
bound, and only these).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

# An LLM answer is a few KiB to a few hundred KiB: 4 MiB keeps nearly every answer
# replayable, while a model-proxy with 256 streams in flight holds at most 1 GiB for replays.
REPLAY_MAX_BYTES = 4 * 1024 * 1024


class SentChunks:
    """The chunks sent of one answer: ``len`` counts them all; iterating gives them back, for a
    replay, while :attr:`complete` (their bytes stayed within ``limit``)."""

    __slots__ = ("_count", "_freed_size", "_kept", "_kept_bytes", "_limit", "_size")

    def __init__(self, limit: int = REPLAY_MAX_BYTES, size: Callable[[bytes], int] = len) -> None:
        """``size`` measures a chunk's generated content (:func:`.estimate.chunk_size`)."""
        self._limit = limit
        self._size = size
        self._count = 0
        self._kept: list[bytes] | None = []
        self._kept_bytes = 0
        self._freed_size = 0  # the content of the chunks sent since (and before) the freeing

    def append(self, payload: bytes) -> None:
        """One more chunk sent: kept for a replay while the answer's bytes fit the bound."""
        self._count += 1
        if self._kept is None:
            self._freed_size += self._size(payload)
            return
        self._kept_bytes += len(payload)
        if self._kept_bytes > self._limit:
            self._freed_size = self.generated() + self._size(payload)
            self._kept = None  # freed now: this answer cannot be replayed
            self._kept_bytes = 0
            return
        self._kept.append(payload)

    def generated(self) -> int:
        """The generated content, in bytes, of every chunk sent (see the module)."""
        if self._kept is None:
            return self._freed_size
        return sum(map(self._size, self._kept))

    @property
    def complete(self) -> bool:
        """Every chunk sent is still kept: the answer can be replayed."""
        return self._kept is not None

    @property
    def kept_bytes(self) -> int:
        return self._kept_bytes

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._kept or ())


REPLAY_LOST = (
    "the connection carrying this answer failed while it streamed, and the answer is too large "
    "to send again; retry the request"
)
