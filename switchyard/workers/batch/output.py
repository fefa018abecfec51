"""A finished batch's output and error files, written row by row as the runner reads its
results: the runner holds one chunk of each file, never a whole file."""

from __future__ import annotations

import time

from switchyard.runtime.batchstore import BatchStore
from switchyard.runtime.objects import ObjectWriter
from switchyard.schemas import batches as b
from switchyard.workers.batch.formats import Format


class OutputFiles:
    """The output file and the error file (each written once it has a row) of the
    batch ``record``; ``lifetime`` is how long they are kept (0: for ever). Their ids derive
    from the batch id, so a pass that stops half way and runs again replaces them. Their
    ``created_at`` is ``created_at`` (now when not given), a time the batch's record keeps
    (its ``finalizing_at``, or the stamp of its final status): a list continued after one of
    them once it is deleted finds its place from the batch (see ``ingress/batches.py``)."""

    def __init__(
        self,
        store: BatchStore,
        record: b.BatchRecord,
        fmt: Format,
        lifetime: int,
        created_at: int | None = None,
    ):
        self._created_at = created_at
        self._store = store
        self._record = record
        self._fmt = fmt
        self._lifetime = lifetime
        self._output: ObjectWriter | None = None
        self._errors: ObjectWriter | None = None

    def _file_id(self, suffix: str) -> str:
        return f"file-{self._record.batch.id}-{suffix}"

    async def add(self, to_errors: bool, row: bytes) -> None:
        """One row, to the error file or the output file."""
        writer = await (self._error_file() if to_errors else self._output_file())
        await writer.write(row + b"\n")

    async def _output_file(self) -> ObjectWriter:
        if self._output is None:
            self._output = await self._store.file_writer(self._file_id(self._fmt.output_suffix))
        return self._output

    async def _error_file(self) -> ObjectWriter:
        if self._errors is None:
            self._errors = await self._store.file_writer(self._file_id("errors"))
        return self._errors

    async def close(self) -> tuple[str | None, str | None]:
        """Store both files and their records; returns the output's id and the error file's.
        An OpenAI batch none of whose lines succeeded has no output file, and one none of
        whose lines failed no error file (None), as at OpenAI; Anthropic's results file is
        always written (its ``results_url`` lists every request)."""
        output = None
        if self._output is not None or not self._fmt.errors_apart:
            output = await self._save(await self._output_file(), self._fmt.output_purpose)
        errors = None
        if self._errors is not None:
            errors = await self._save(self._errors, "batch_output")
        return output, errors

    async def abort(self) -> None:
        """Remove what was written of files not stored yet."""
        for writer in (self._output, self._errors):
            if writer is not None:
                await writer.abort()

    async def _save(self, writer: ObjectWriter, purpose: str) -> str:
        size = await writer.close()
        now = self._created_at or int(time.time())
        file = b.FileObject(
            id=writer.name,
            bytes=size,
            created_at=now,
            filename=f"{self._record.batch.id}_{writer.name.rsplit('-', 1)[1]}.jsonl",
            purpose=purpose,
            expires_at=now + self._lifetime if self._lifetime else None,
        )
        await self._store.save_file(b.FileRecord(file=file, owner=self._record.owner))
        return writer.name
