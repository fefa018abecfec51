"""Every ingress's local, live copy of the client keys: authentication without a lookup.

It follows the ``sy_keys`` bucket, so creating, revoking or changing a key reaches every ingress
replica within milliseconds of the write, and the request path only hashes the presented key
and reads a dict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nats.js import JetStreamContext

from switchyard.bus import subjects
from switchyard.errors import AuthenticationFailed
from switchyard.runtime.kvwatch import KvFollower
from switchyard.schemas.keys import KEY_DECODER, RECORD_PREFIX, ClientKey, hash_key

log = logging.getLogger("switchyard.ingress.keys")


class KeyRing:
    """``on_refused(key_id, error)`` hears of every key that may no longer be used (revoked,
    or deleted), so the requests it has in progress can end (:meth:`Waiting.refuse`)."""

    def __init__(
        self,
        js: JetStreamContext,
        on_refused: Callable[[str, AuthenticationFailed], object] | None = None,
    ) -> None:
        self._by_hash: dict[str, ClientKey] = {}
        self._follower = KvFollower(js, subjects.KEYS_BUCKET, self._on_entry)
        self._on_refused = on_refused

    def __len__(self) -> int:
        return len(self._by_hash)

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    def _on_entry(self, key: str, value: bytes | None, revision: int) -> None:
        if not key.startswith(RECORD_PREFIX):
            return
        digest = key[len(RECORD_PREFIX) :]
        if value is None:
            gone = self._by_hash.pop(digest, None)
            if gone is not None:
                self._refused(gone.id, AuthenticationFailed("This API key has been deleted."))
            return
        record = KEY_DECODER.decode(value)
        self._by_hash[digest] = record
        if record.disabled:  # revoked (an expiry needs no write: requests admitted may end)
            self._refused(
                record.id,
                AuthenticationFailed("This API key has been revoked.", code="api_key_revoked"),
            )

    def _refused(self, key_id: str, error: AuthenticationFailed) -> None:
        if self._on_refused is not None:
            self._on_refused(key_id, error)

    def authenticate(self, api_key: str | None) -> ClientKey:
        """The key record for a presented API key.

        Raises:
            AuthenticationFailed: missing, unknown, disabled or expired key. Messages never
                echo the presented key.
        """
        if not api_key:
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as `Authorization: Bearer sk-sy-...`"
                " (or `x-api-key: sk-sy-...`, as Anthropic's clients do).",
                code="missing_api_key",
            )
        record = self._by_hash.get(hash_key(api_key))
        if record is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        refused = record.refusal()
        if refused is not None:
            raise refused
        return record
