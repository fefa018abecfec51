"""``follow_later`` tries a bucket again until it is followed: an error its ``follow`` did not
expect (not a NATS error nor a timeout) ended the retries for good, the bucket never followed
until a restart."""

from __future__ import annotations

from switchyard.runtime.kvwatch import follow_later, try_follow


async def test_an_unexpected_error_is_tried_again_not_the_end_of_the_retries() -> None:
    tries: list[int] = []

    async def follow() -> bool:
        tries.append(len(tries))
        if len(tries) == 1:
            raise ValueError("a malformed entry")  # e.g. what decoding one raised
        return len(tries) == 3

    await follow_later(follow, retry_s=0.001, max_s=0.002)
    assert len(tries) == 3


async def test_try_follow_takes_an_unexpected_error_as_not_followed() -> None:
    async def follow() -> bool:
        raise RuntimeError("unexpected")

    assert await try_follow(follow) is False
