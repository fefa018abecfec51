"""The ``errors`` a batch ends with when it cannot run: its key is gone, or its input file is
gone or damaged in the store."""

from __future__ import annotations

from switchyard.errors import AuthenticationFailed, ObjectDamaged
from switchyard.schemas import batches as b


def key_gone(refused: AuthenticationFailed) -> b.BatchErrorItem:
    return b.BatchErrorItem(
        code=refused.code,
        message=(
            f"{refused.message} The batch was stopped: its lines that had not run were not "
            "sent (each has this error as its result)."
        ),
    )


def input_damaged(file_id: str, exc: ObjectDamaged) -> b.BatchErrorItem:
    return b.BatchErrorItem(
        code="invalid_file",
        message=f"the input file {file_id} is damaged in the store ({exc}); upload it again",
        param="input_file_id",
    )


def input_gone(file_id: str) -> b.BatchErrorItem:
    return b.BatchErrorItem(
        code="invalid_file",
        message=f"the input file {file_id} was deleted before the batch could read it",
        param="input_file_id",
    )
