"""Names the management API takes in its path (a route's alias, a provider's, a secret's),
checked before the body: one the table or the secrets service cannot hold is a 400 naming the
path parameter and what a name may be.

They were checked only where the whole table (or the secrets request) was decoded, so
``PUT /admin/v1/providers/openai prod`` answered "invalid route table: Expected `str` matching
regex '^[A-Za-z0-9]...' - at `key` in `$.table.providers`" with no ``param``: a script writing
one provider was told about a table it never sent, in the decoder's words.
"""

from __future__ import annotations

import re

from switchyard.errors import InvalidRequest
from switchyard.schemas.secrets import NAME_PATTERN as SECRET_PATTERN
from switchyard.schemas.secrets import unstorable
from switchyard.schemas.table_names import TABLE_NAME_PATTERN

_TABLE_NAME = re.compile(TABLE_NAME_PATTERN)
_SECRET_NAME = re.compile(SECRET_PATTERN)
_SHOWN = 64  # characters of a refused name said back


def table_name(value: str, what: str, param: str) -> str:
    """``value`` as a route's alias or a provider's name (``what``), else a 400 naming
    ``param``."""
    if not _TABLE_NAME.fullmatch(value):  # as the table checks it ("$" took "a\n")
        raise InvalidRequest(
            f"`{value[:_SHOWN]}` is not a possible {what}: a letter or digit, then letters, "
            "digits and _ . : / - (128 characters at most)",
            param=param,
        )
    return value


def secret_name(value: str) -> str:
    """``value`` as a stored secret's name, else a 400 naming ``name`` (with one that
    would do)."""
    if not _SECRET_NAME.fullmatch(value):  # as the secrets service does, "a\n" refused
        problem, hint = unstorable(value)
        raise InvalidRequest(f"{problem}: {hint}", param="name")
    return value
