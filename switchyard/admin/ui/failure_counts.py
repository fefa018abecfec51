"""Recent failure times per key, in bounded memory that never forgets a count early.

The sign-in guard (:mod:`switchyard.admin.ui.signin_guard`) counts wrong admin tokens per
address and per address block in tables of this kind. Its table forgot the least recently
failing address once it held :data:`~switchyard.admin.ui.signin_guard.MAX_ADDRESSES`: wrong
tokens from enough other addresses (an IPv6 /48 holds 65,536 /64s) pushed an attacker's own
count out, and its limit started again from zero. Here a key with a failure inside the window
is never dropped; a key whose failures all aged out is. A table full of live keys takes no
new one (:meth:`FailureCounts.room_in` says for how long): the caller refuses what it cannot
count rather than forget what it counted. Each key keeps its ``keep`` latest times at most.
"""

from __future__ import annotations

from collections import OrderedDict


class FailureCounts:
    """Failure times per key within ``window_s``, at most ``max_keys`` keys."""

    def __init__(self, window_s: float, keep: int, max_keys: int) -> None:
        self._window = window_s
        self._keep = max(1, keep)
        self._max = max_keys
        self._times: OrderedDict[str, list[float]] = OrderedDict()
        self._full_until = 0.0  # no key ages out before then (the table was full)

    def __len__(self) -> int:
        return len(self._times)

    def __contains__(self, key: str) -> bool:
        return key in self._times

    def recent(self, key: str, now: float) -> list[float]:
        """``key``'s failure times within the window, oldest first (a key with none is
        dropped)."""
        times = [t for t in self._times.get(key, ()) if now - t < self._window]
        if times:
            self._times[key] = times
        else:
            self._times.pop(key, None)
        return times

    def room_in(self, key: str, now: float) -> float:
        """Seconds until ``key`` can be counted (0: now, a key already counted always can).
        Makes room by dropping keys whose failures all aged out, never another."""
        if key in self._times or len(self._times) < self._max:
            return 0.0
        if now < self._full_until:
            return self._full_until - now
        ends = {k: times[-1] + self._window for k, times in self._times.items()}
        for stale in [k for k, end in ends.items() if end <= now]:
            del self._times[stale]
        # The first end of the keys left (a key counted later ends later, or lowers it: see
        # _keep_times): the table full again after the key this makes room for, the next new
        # one is answered without a scan. Set only when full, each refill scanned all the
        # keys (10,000: about 3 ms each).
        self._full_until = min((ends[k] for k in self._times), default=0.0)
        if len(self._times) < self._max:
            return 0.0
        return self._full_until - now

    def failed(self, key: str, now: float) -> list[float] | None:
        """Counts a failure of ``key`` at ``now``; returns its recent times, or None when the
        table has no room for a new key (nothing counted)."""
        return self._keep_times(key, [*self.recent(key, now), now], now)

    def merge(self, key: str, times: list[float], now: float) -> list[float] | None:
        """Merges ``times`` (another replica's count of ``key``, which may hold some known
        here already) into ``key``'s; returns them all, or None as :meth:`failed`."""
        fresh = {t for t in times if now - t < self._window}
        return self._keep_times(key, sorted(set(self.recent(key, now)) | fresh), now)

    def _keep_times(self, key: str, times: list[float], now: float) -> list[float] | None:
        if not times:
            return []
        if self.room_in(key, now) > 0:
            return None
        kept = times[-self._keep :]
        self._full_until = min(self._full_until, kept[-1] + self._window)  # (merged: older)
        self._times[key] = kept
        self._times.move_to_end(key)
        return kept
