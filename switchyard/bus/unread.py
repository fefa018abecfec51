"""How much of a reply a request may hold unread, and what its client is told past it."""

from __future__ import annotations

from switchyard.errors import ReaderTooSlow

# What one request may hold unread by default: reply messages received, not yet taken by its
# consumer (the HTTP edges pass ``ingress.max_unread_bytes``, docs/operations.md).
MAX_UNREAD_BYTES = 8 * 1024 * 1024
# What a queued reply message costs beyond its body (the Msg, its subject and decoded headers),
# counted with it so a flood of tiny messages is bounded too.
MSG_COST = 512


def too_slow(limit: int) -> ReaderTooSlow:
    """The error of a consumer that fell ``limit`` bytes behind, in words its client can act
    on: in MiB, counted as messages (a client of a stream of small chunks, ended at 8 MiB, had
    received ~2.9 MB in all: "8388608 bytes" read as wrong), and the setting that raises it."""
    return ReaderTooSlow(
        "the client read the streamed answer more slowly than it arrived, so it was ended: "
        f"more than {round(limit / 2**20, 2):g} MiB of it waited unread, counted as messages "
        f"(each message's bytes plus {MSG_COST}, so fewer bytes of the answer itself); read "
        "the stream as it arrives, or ask the operator to raise ingress.max_unread_bytes"
    )
