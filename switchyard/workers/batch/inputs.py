"""A batch's input file, read from the store a chunk at a time whenever its lines are needed.

The runner keeps no copy of an input file. Checking it, sending its lines and writing the
rows of the lines that never ran each read the file again from the object store, one chunk
(128 KiB) at a time and only as fast as the reader goes, so a running batch costs the runner
the lines in flight rather than the file: a 100 MB input parsed and held for the whole run
took ~140 MB of the runner's memory (~230 MB while it was parsed), per running batch.

Lines are numbered as before: a line's index (its request id, its place in
``request_counts``) counts the non-blank lines; the line numbers in errors count every line.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import AsyncGenerator, AsyncIterable

import msgspec

from switchyard.errors import BusError, ObjectGone
from switchyard.runtime.batchstore import BatchStore
from switchyard.schemas import batches as b
from switchyard.schemas.bad_json import explained
from switchyard.workers.batch.line_errors import invalid_line

MAX_ERRORS = 20  # problems listed for an invalid file (the rest are not looked for)
BOM = b"\xef\xbb\xbf"
# A line nested deeper than the JSON decoder goes (the interpreter's recursion limit). Uncaught,
# it failed every pass over the file: the batch stayed ``validating``, retried for ever.
TOO_DEEP = "the line is nested too deeply to be read as JSON"


class Invalid(Exception):
    """The input file is not a valid batch (the batch fails with these errors)."""

    def __init__(self, errors: list[b.BatchErrorItem]) -> None:
        super().__init__(errors[0].message if errors else "invalid")
        self.errors = errors


class InputGone(Exception):
    """The input file was deleted after the batch was created."""


async def split_lines(chunks: AsyncIterable[bytes]) -> AsyncGenerator[bytes]:
    """The lines of the bytes ``chunks`` make up, cut where ``bytes.splitlines`` cuts them
    (``\\n``, ``\\r\\n`` or ``\\r``) whatever the chunk boundaries; holds one line at most."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        if b"\n" not in chunk and b"\r" not in chunk:
            continue  # a long line goes on: no need to look at the rest again
        parts = buf.splitlines(keepends=True)
        if not parts[-1].endswith(b"\n"):  # no line end yet, or "\r" that "\n" may follow
            parts.pop()
        used = 0
        for part in parts:
            used += len(part)
            yield bytes(part[:-2] if part.endswith(b"\r\n") else part[:-1])
        del buf[:used]
    for part in buf.splitlines():
        yield bytes(part)


class BatchInput:
    """The input file ``file_id`` of a batch for ``endpoint``."""

    def __init__(self, store: BatchStore, file_id: str, endpoint: str) -> None:
        self._store = store
        self.file_id = file_id
        self._endpoint = endpoint

    async def _raw_lines(self) -> AsyncGenerator[bytes]:
        found = await self._store.download(self.file_id)
        if found is None:
            raise InputGone(self.file_id)
        first = True
        try:
            async with contextlib.aclosing(split_lines(found.chunks)) as lines:
                async for line in lines:
                    # Editors on Windows start a UTF-8 file with a byte order mark.
                    yield line.removeprefix(BOM) if first else line
                    first = False
        except ObjectGone:  # deleted while it was read
            raise InputGone(self.file_id) from None

    async def check(self, *, validating: bool = True) -> tuple[int, str | None]:
        """How many requests the file holds, and the model they all name (None when they
        name different ones: the batch's ``model``).

        ``validating``: the batch has not started. Rules added since a batch could start (a
        ``custom_id`` with control characters) apply only then: a batch that passed an older
        runner's check and is running must not fail at its resume after an upgrade, with
        lines already answered and billed.

        Raises:
            Invalid: a line is not JSON (or is nested too deeply to read), lacks a field,
                targets another endpoint, or repeats a ``custom_id`` (at most
                :data:`MAX_ERRORS` problems are listed).
            InputGone: the file was deleted.
        """
        errors: list[b.BatchErrorItem] = []
        seen: set[str] = set()
        models: set[object] = set()
        count = 0
        number = 0
        async for raw in self._raw_lines():
            number += 1
            if not raw.strip():
                continue
            try:
                line = b.BATCH_LINE.decode(raw)
            except msgspec.ValidationError as exc:  # (said plainly, naming the field)
                errors.append(_error("invalid_json_line", *invalid_line(str(exc)), number))
            except msgspec.DecodeError as exc:  # (a lone surrogate is named as such)
                said, _ = explained(str(exc), raw)
                errors.append(_error("invalid_json_line", invalid_line(said)[0], None, number))
            except RecursionError:  # nested past the decoder's limit: a bad line, said so
                errors.append(_error("invalid_json_line", TOO_DEEP, None, number))
            else:
                count += 1
                problem = self._problem(line, seen, validating)
                if problem is not None:
                    errors.append(_error(*problem, number))
                seen.add(line.custom_id)
                if len(models) < 2:  # (one model, or more than one: no need to know more)
                    models.add(line.body.get("model"))
            if len(errors) >= MAX_ERRORS:
                break
        if not count and not errors:
            empty = "the input file has no lines"
            errors.append(b.BatchErrorItem(code="empty_file", message=empty))
        if errors:
            raise Invalid(errors)
        model = next(iter(models)) if len(models) == 1 else None
        return count, model if isinstance(model, str) else None

    def _problem(
        self, line: b.BatchLine, seen: set[str], validating: bool
    ) -> tuple[str, str, str] | None:
        if line.method.upper() != "POST":
            said = f"method is {line.method[:20]!r}: every line must be POST (to {self._endpoint})"
            return "invalid_url", said, "method"
        if line.url != self._endpoint:
            said = (
                f"url is {line.url[:100]!r}: every line of this batch must go to "
                f"{self._endpoint} (the batch's endpoint)"
            )
            return "invalid_url", said, "url"
        bad_id = custom_id_problem(line.custom_id) if validating else None
        if bad_id is not None:
            return "invalid_custom_id", bad_id, "custom_id"
        if line.custom_id in seen:
            message = f"custom_id {line.custom_id!r} appears more than once"
            return "duplicate_custom_id", message, "custom_id"
        if not isinstance(line.body.get("model"), str):
            return "missing_required_parameter", "body.model is required", "body.model"
        return None

    async def lines(self) -> AsyncGenerator[tuple[int, b.BatchLine]]:
        """Every request of a file :meth:`check` passed, with its index, read as the caller
        goes.

        Raises:
            InputGone: the file was deleted.
            BusError: the file stopped arriving, or is no longer what was checked.
        """
        index = 0
        async for raw in self._raw_lines():
            if not raw.strip():
                continue
            index += 1
            try:
                line = b.BATCH_LINE.decode(raw)
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                raise BusError(f"line {index} of {self.file_id} no longer reads") from None
            yield index, line


# Control characters, the line separator (U+2028) and the paragraph separator (U+2029).
_LINE_BREAKING = frozenset({"Cc", "Zl", "Zp"})


def custom_id_problem(custom_id: str) -> str | None:
    """Why a ``custom_id`` cannot name a line's row (None: it can). It must show something:
    an id of spaces alone looks like none in the output file. It may hold no control
    character (NUL, a line break, ESC...): those break the tools that read the results by
    ``custom_id`` (a NUL ends a C string, a line break a CSV row, ESC writes to a terminal).
    Nor the line and paragraph separators U+2028 and U+2029: JSON carries them raw, and a
    reader that splits the output file with Python's ``splitlines()`` cuts a row there."""
    if not custom_id.strip():
        return "custom_id must not be empty or only whitespace"
    for char in custom_id:
        if unicodedata.category(char) in _LINE_BREAKING:
            return (
                "custom_id must not contain control characters or line separators (it "
                f"holds U+{ord(char):04X}): {custom_id[:80]!r}"
            )
    return None


def _error(code: str, message: str, param: str | None, line: int) -> b.BatchErrorItem:
    return b.BatchErrorItem(code=code, message=message, param=param, line=line)
