"""Which ``custom_id``\\ s a batch's input may use: OpenAI asks for a non-empty string unique
in the batch; one of blanks alone, or with a control character (a NUL, a line break), was
accepted and then broke whatever read the results by it (a CSV row, a C string)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any, cast

import pytest

from switchyard.workers.batch.inputs import BatchInput, Invalid

ENDPOINT = "/v1/chat/completions"


class Lines(BatchInput):
    """An input file of the given lines (the store's reading is not what is tested here)."""

    def __init__(self, lines: list[bytes]) -> None:
        super().__init__(cast(Any, None), "file-x", ENDPOINT)
        self._lines = lines

    async def _raw_lines(self) -> AsyncGenerator[bytes]:
        for line in self._lines:
            yield line


def _line(custom_id: str) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    row = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(row).encode()


@pytest.mark.parametrize(
    "custom_id",
    [
        " ",
        "\t \u3000",
        "a\x00b",
        "row\n2",
        "row\r",
        "\x1b[31mred",
        "a\x7f",
        "a\x85b",
        "line\u2028sep",  # splitlines() cuts there: the output file's rows would break
        "para\u2029sep",
    ],
)
async def test_a_blank_or_control_character_custom_id_fails_the_batch_naming_it(
    custom_id: str,
) -> None:
    source = Lines([_line("fine-1"), _line(custom_id), _line("fine-2")])
    with pytest.raises(Invalid) as invalid:
        await source.check()
    [error] = invalid.value.errors
    assert (error.code, error.param, error.line) == ("invalid_custom_id", "custom_id", 2)
    assert "custom_id must not" in error.message
    assert "\x00" not in error.message  # (shown escaped)
    assert "\n" not in error.message
    assert len(error.message.splitlines()) == 1  # (U+2028 shown escaped too)


async def test_an_empty_custom_id_is_refused_too() -> None:
    with pytest.raises(Invalid) as invalid:
        await Lines([_line("")]).check()
    assert invalid.value.errors[0].line == 1


@pytest.mark.parametrize("custom_id", ["request-1", " padded ", "ünïcødé ✓", "a b", '{"x"}'])
async def test_printable_custom_ids_pass(custom_id: str) -> None:
    assert await Lines([_line(custom_id), _line("other")]).check() == (2, "m")


async def test_a_running_batch_resumed_after_an_upgrade_is_not_failed_by_the_new_rule() -> None:
    """The runner reads the input again at every resume: a batch an older runner had let start
    with a tab in a custom_id went from in_progress to failed (reviewer), its answered lines
    left without an output file."""
    source = Lines([_line("fine-1"), _line("tab\there")])
    assert await source.check(validating=False) == (2, "m")
    with pytest.raises(Invalid):
        await source.check(validating=True)
