"""Messages of the secrets admin API (``secrets.v1.admin.*``): metadata in, metadata out.

No response type here has a field for a value: a CLIENT-zone caller can store or rotate a key,
never read one back.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

# msgspec matches with ``re.search``, where a bare ``$`` also matches before a final line
# break: "openai\n" was a name, and OpenBao refused its path (a 503 for a caller's typo;
# nothing was ever stored under one). ``(?!\n)`` refuses it, and means nothing to a JSON
# Schema reader, whose ``$`` is the end already.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$(?!\n)"
SecretName = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]

# Said wherever storing the value a secret holds already is answered "unchanged": that ends no
# cooldown any more (docs/routing.md), and an admin re-storing a key to end one is told how.
COOLDOWNS_RUN_ON = (
    "its deployments' cooldowns run on: end one with "
    "`DELETE /admin/v1/deployments/{id}/cooldown` or End cooldown on the admin UI's Queues page"
)


def unstorable(name: str) -> tuple[str, str]:
    """What is wrong with a provider's ``secret`` the secrets service cannot store (a route
    table took one, and its provider answered 503 for ever), and what to give instead."""
    return (
        f"`{name[:64]}` is not a name the secrets service can store",
        "a secret's name is lowercase letters, digits, _ and -, at most 63 characters, e.g. "
        + (re.sub(r"[^a-z0-9_-]", "-", name.lower()).strip("-_")[:63] or "openai-prod"),
    )


SecretValue = Annotated[str, msgspec.Meta(min_length=1, max_length=16384)]
# Stored as OpenBao custom metadata, which refuses characters that are not printable: checked
# here (``PutSecret.__post_init__``), so a bad value is a 400 naming the field rather than a
# refusal from OpenBao (a 503). Free text otherwise: "fake provider", "OpenAI (prod)".
ProviderLabel = Annotated[str, msgspec.Meta(max_length=128)]


class PutSecret(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: SecretName
    value: SecretValue
    provider: ProviderLabel = ""

    def __post_init__(self) -> None:
        if not self.provider.isprintable() or self.provider != self.provider.strip():
            # msgspec reports this as a validation error at ``$.provider``.
            raise ValueError("provider: printable characters only, no leading or trailing space")
        if any(c < " " or c == "\x7f" for c in self.value):
            # An HTTP header cannot carry it: every call with the key failed as a 500. The
            # message never quotes the value.
            raise ValueError("value: an API key is one line, without control characters")
        if self.value != self.value.strip():
            # A pasted key with a blank around it was stored, and every call with it failed as
            # 502 "provider refused the API key"; no provider's key has one. Never quoted.
            raise ValueError(
                "value: the value starts or ends with a space (or another blank); no API key"
                " does: remove it and send the key again"
            )

    def __repr__(self) -> str:  # never print the value, even in a debugger or traceback
        return f"PutSecret(name={self.name!r}, provider={self.provider!r}, value='***')"


class SecretRef(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: SecretName


class SecretInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: int
    provider: str = ""
    last4: str = ""
    created_at: str = ""
    updated_at: str = ""
    updated_by: str = ""


class SecretWritten(SecretInfo, frozen=True, kw_only=True):
    """The answer to a put or a rotation: ``changed`` is false when the secret already held
    that value (and that provider label): no new version was made, nothing was told."""

    changed: bool = True


def written_words(info: SecretWritten) -> str:
    """What a put or a rotation did, for its audit entry (never the value)."""
    if info.changed:
        return f"version {info.version}"
    return f"version {info.version} kept: it held that value already"


class SecretList(msgspec.Struct, frozen=True):
    secrets: list[SecretInfo]


ENCODER = msgspec.json.Encoder()
PUT_DECODER = msgspec.json.Decoder(PutSecret)
REF_DECODER = msgspec.json.Decoder(SecretRef)
INFO_DECODER = msgspec.json.Decoder(SecretInfo)
WRITTEN_DECODER = msgspec.json.Decoder(SecretWritten)
LIST_DECODER = msgspec.json.Decoder(SecretList)


class SecretPayload(msgspec.Struct, frozen=True):
    """Reply of ``secrets.v1.get``; exists only inside the server zone."""

    name: str
    version: int
    value: str

    def __repr__(self) -> str:  # never print the value, even in a debugger or traceback
        return f"SecretPayload(name={self.name!r}, version={self.version}, value='***')"
