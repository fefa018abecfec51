"""Refuse addresses that keep presenting unknown client keys (guessing, or a broken client).

Policy (docs/security.md): an address that presents ``limit`` unknown keys within ``window_s``
gets 429 ``too_many_failed_authentications`` (with ``Retry-After``) instead of 401 for every
unknown key it presents until that window has passed. A valid key from that address still
passes: many clients share one address (NAT, a node's SNAT, a proxy), and one broken or
revoked client must not lock the others out. Only unknown keys count, and only they get the
429: a missing key guesses nothing, and a revoked or expired key is a known record whose
client must keep reading why (``api_key_revoked``), not a retryable 429. Counting is per edge
process: the bound is on noise and guessing speed, and a 256-bit key space is the real defence.

A valid key costs nothing here: the table is consulted only for a key that failed, and only
while some address has failures; it is bounded (``max_addresses``; the oldest windows go first).
"""

from __future__ import annotations

import time

from switchyard.errors import AuthenticationFailed, RateLimited

# Only a key no record has counts, or is refused (the code KeyRing.authenticate gives it).
UNKNOWN_KEY = "invalid_api_key"


class FailedAuthGuard:
    def __init__(self, limit: int, window_s: float, max_addresses: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_addresses = max_addresses
        # address -> (window start, failures in it); insertion order = oldest window first.
        self._seen: dict[str, tuple[float, int]] = {}

    def __bool__(self) -> bool:
        return bool(self._seen)

    def check(self, address: str, now: float | None = None) -> None:
        """Raises RateLimited (429) while ``address`` is over the limit (asked only for a key
        that failed)."""
        entry = self._seen.get(address)
        if entry is None:
            return
        now = time.monotonic() if now is None else now
        started, count = entry
        if now - started >= self.window_s:
            del self._seen[address]
        elif count >= self.limit:
            raise RateLimited(
                "too many requests with an invalid API key from this address; wait and retry",
                code="too_many_failed_authentications",
                retry_after=max(1.0, self.window_s - (now - started)),
            )

    def failed(self, address: str, exc: AuthenticationFailed, now: float | None = None) -> None:
        """Count a failed authentication of ``address`` (only unknown keys are counted)."""
        if exc.code != UNKNOWN_KEY:
            return
        now = time.monotonic() if now is None else now
        entry = self._seen.get(address)
        if entry is None or now - entry[0] >= self.window_s:
            self._seen.pop(address, None)
            if len(self._seen) >= self.max_addresses:
                del self._seen[next(iter(self._seen))]
            self._seen[address] = (now, 1)
        else:
            self._seen[address] = (entry[0], entry[1] + 1)
