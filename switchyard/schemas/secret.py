"""A provider key that cannot leak by accident: masked in repr, str, logs and tracebacks.

Only :meth:`Secret.reveal` returns the value, and only the provider adapter calls it, at the
moment it builds the upstream request.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

# A piece of a key a provider may echo in an error ("Incorrect API key provided: sk-ab...wxyz"
# keeps a dozen characters): any run of key characters sharing this many in a row with the
# key is masked whole. Random keys share no such run with ordinary words; only keys up to
# _FRAGMENT_KEY_MAX long are searched this way (longer secrets are credential documents,
# whose field names would match ordinary words).
_FRAGMENT = 8
_FRAGMENT_KEY_MAX = 512
_KEYISH = re.compile(rf"[A-Za-z0-9_\-]{{{_FRAGMENT},}}")


class Secret:
    __slots__ = ("_value", "name", "version")

    def __init__(self, value: str, *, name: str = "", version: int = 0) -> None:
        self._value = value
        self.name = name
        self.version = version

    def reveal(self) -> str:
        """The plaintext. Call it only where the value leaves for the provider."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret(name={self.name!r}, version={self.version}, value='***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self.name, self.version))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")

    def __getstate__(self) -> Any:
        raise TypeError("a Secret cannot be serialised")


def redact(text: str, secret: Secret | None) -> str:
    """``text`` (an upstream message) with the secret's value replaced, and any run of key
    characters holding a piece of it (8 characters or more in a row) masked whole."""
    if secret is None or not secret.reveal():
        return text
    value = secret.reveal()
    text = text.replace(value, "***")
    if len(value) > _FRAGMENT_KEY_MAX:
        return text

    def masked(run: re.Match[str]) -> str:
        word = run.group()
        for i in range(len(word) - _FRAGMENT + 1):
            if word[i : i + _FRAGMENT] in value:
                return "***"
        return word

    return _KEYISH.sub(masked, text)
