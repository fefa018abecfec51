"""What the route and provider editors say when the item changed under an open form: deleted
by someone else before a save, or changed by someone else before a delete.

A save of a changed item is :func:`~switchyard.admin.ui.pages.tables.conflict`; these are the
two other cases, each a 409 with the form's input kept."""

from __future__ import annotations

from switchyard.admin.ui.pages.tables import Problem


class Stale(Exception):
    """Raised inside a table edit: the item is no longer the one the form was opened with."""


def gone(what: str) -> Problem:
    """A save of an item someone else deleted since the form was opened. The form is shown as
    a new item with the input kept, so saving again creates it; its banner links the list."""
    return Problem(
        {
            "": f"{what} was deleted by someone else since you opened this form, so it was not "
            "saved. Save again to create it from your input below, or go back to the list."
        },
        status=409,
        conflict=True,
    )


def not_deleted(what: str) -> Problem:
    """A delete of an item someone else changed since the form was opened: not deleted, and
    the form shows the current version."""
    return Problem(
        {
            "": f"{what} was changed by someone else since you opened this form, so it was not "
            "deleted. The current version is shown below: delete it again if it should still go."
        },
        status=409,
    )
