"""When one page of a pull read is over (``runtime.pages._Page``): the messages it asked for
came, or its own request's status did; a late status of the request before does not end it."""

from __future__ import annotations

from typing import Any

from nats.aio.msg import Msg

from switchyard.runtime.pages import _Page


def _data(seq: int) -> Msg:
    return Msg(_client=None, subject="s.x", reply=f"$JS.ACK.S.r.1.{seq}.{seq}.0.0", data=b"x")  # type: ignore[arg-type]


def _status(reply: str, code: str, text: str) -> Msg:
    headers: dict[str, Any] = {"Status": code, "Description": text}
    return Msg(_client=None, subject=reply, headers=headers)  # type: ignore[arg-type]


async def test_a_page_ends_when_its_messages_came() -> None:
    page = _Page("_INBOX_batch.abc")
    page.start(2)
    await page.on_msg(_data(1))
    assert not page.ended.is_set()
    await page.on_msg(_data(2))
    assert page.ended.is_set()
    assert len(page.msgs) == 2


async def test_only_its_own_requests_status_ends_a_page() -> None:
    page = _Page("_INBOX_batch.abc")
    page.start(2)
    first = page.reply
    await page.on_msg(_data(1))
    await page.on_msg(_data(2))
    page.start(2)
    assert page.reply != first
    # The server's "batch completed" for the first request, arriving after the next was sent.
    await page.on_msg(_status(first, "409", "Batch Completed"))
    assert not page.ended.is_set()
    await page.on_msg(_data(3))
    await page.on_msg(_status(page.reply, "404", "No Messages"))  # only one was left
    assert page.ended.is_set()
    assert len(page.msgs) == 1
