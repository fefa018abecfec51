"""The names a route table keys its providers and routes by, and the rule new ones meet.

msgspec checks a pattern with ``re.search``, where ``$`` also matches before a final line
break: the types took ``"openai\\n"`` as a provider's name or a route's alias, and a whole-table
``PUT`` stored it (the admin API's path names were checked whole, the table's were not). The
types keep that pattern, so a table stored with such a name still loads and can be mended;
:func:`name_problem` is the newer rule, applied as ``route_table_findings`` (in
:mod:`switchyard.schemas.routing`) applies every rule a stored table may predate: to what an
edit adds or changes.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

# A provider's name or a route's alias (the admin API checks one given in its path whole).
TABLE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$"
Name = Annotated[str, msgspec.Meta(pattern=TABLE_NAME_PATTERN)]
NAME_HINT = (
    "a name starts with a letter or digit, then letters, digits or _ . : / -, at most 128 "
    "characters"
)
_WHOLE = re.compile(TABLE_NAME_PATTERN)


def shown(name: str) -> str:
    """``name`` as said in a field or a message: a line break in it written ``\\n``."""
    return name.replace("\\", "\\\\").replace("\n", "\\n")


def name_problem(section: str, name: str) -> tuple[str, str, str] | None:
    """(field, problem, hint) when ``name``, a key of ``section`` (``providers`` or
    ``routes``), is not one the table takes whole; None when it is."""
    if _WHOLE.fullmatch(name):
        return None
    said = shown(name)
    if name.endswith("\n"):
        return (
            f"{section}.{said}",
            f"`{said[:64]}` ends with a line break: not a name the table takes",
            NAME_HINT + " (remove the line break)",
        )
    return f"{section}.{said}", f"`{said[:64]}` is not a name the table takes", NAME_HINT
