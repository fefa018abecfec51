"""A provider key that cannot leak by accident: masked in repr, str, logs and tracebacks.

Only :meth:`Secret.reveal` returns the value, and only the provider adapter calls it, at the
moment it builds the upstream request.
"""

from __future__ import annotations

from typing import Any, NoReturn


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
    """``text`` with any occurrence of the secret's value replaced (for upstream messages)."""
    if secret is None or not secret.reveal():
        return text
    return text.replace(secret.reveal(), "***")
