"""The key records written since the key index last applied an entry.

The gateway's key index follows the key bucket a moment behind its writes, so a key made
through the API (or the CLI, or another replica) and asked for within milliseconds is not in
it yet. Before such a key is called missing, the records written after the index's revision
are read from the bucket's stream by sequence: usually none or one, a few small requests,
where reading the whole bucket would walk every key. A real miss (the index has applied every
write) costs one stream-info request.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from switchyard.schemas.keys import RECORD_PREFIX

# How many writes behind the index may be for them to be read one by one; further behind
# (a stalled watch), the caller reads the whole bucket instead.
MAX_UNAPPLIED = 64


async def written_since(js: JetStreamContext, bucket: str, applied: int) -> list[str] | None:
    """The names of the key records written to ``bucket`` after revision ``applied``,
    newest last, each once; empty when nothing was. None when more than
    :data:`MAX_UNAPPLIED` writes came after it."""
    stream = f"KV_{bucket}"
    last = (await js.stream_info(stream)).state.last_seq
    prefix = f"$KV.{bucket}."
    names: dict[str, None] = {}
    seq = applied + 1
    for _ in range(MAX_UNAPPLIED):
        if seq > last:
            return list(names)
        try:
            msg = await js.get_msg(stream, seq=seq, subject=f"{prefix}{RECORD_PREFIX}>", next=True)
        except NotFoundError:  # no key record after ``seq`` (other entries, or none)
            return list(names)
        name = (msg.subject or "").removeprefix(prefix)
        names.pop(name, None)
        names[name] = None
        seq = (msg.seq or seq) + 1
    return None if seq <= last else list(names)
