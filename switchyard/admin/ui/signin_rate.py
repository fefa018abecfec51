"""A bound on successful sign-ins: per address and token role, and per token role, a minute
at a time.

A right token always signed in, with no bound, and every sign-in is an audit entry and a
session: a script holding the read-only token could post ``/ui/signin`` a thousand times a
second, evict every admin's idle session (the store's cap), and push every real entry out of
the gateway's audit view and, in time, out of the AUDIT stream. Now at most
:data:`PER_ADDRESS` sign-ins a minute with one token role from one address (an IPv6 client's
/64, as the guard counts) and :data:`PER_ROLE` a minute with one token role from all
addresses together are accepted; past either the sign-in page answers 429 with
``Retry-After``, writes no entry and makes no session. An address's count is its role's own:
read-only sign-ins from an address an admin shares (one NAT, or a gateway that sees only its
reverse proxy's address) never make the admin wait; and a team behind one address does not
sign in :data:`PER_ADDRESS` times a minute. A flood writes at most :data:`PER_ROLE` entries
a minute per role (each naming its source, so the flood is plain in the log), which takes
half a day, not minutes, to fill the gateway's view and days the stream.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable

from switchyard.admin.token import Role
from switchyard.admin.ui.signin_guard import counted_as as guard_counted_as

WINDOW_S = 60.0
PER_ADDRESS = 60  # successful sign-ins a minute with one token role from one address
PER_ROLE = 120  # successful sign-ins a minute with one token role, all addresses together


class SigninRate:
    """Sliding-minute counts of accepted sign-ins; pure (times are given), tested alone."""

    def __init__(
        self,
        per_address: int = PER_ADDRESS,
        per_role: int = PER_ROLE,
        window_s: float = WINDOW_S,
        counted_as: Callable[[str], str] = guard_counted_as,
    ) -> None:
        self._per_address = per_address
        self._per_role = per_role
        self._window = window_s
        self._counted_as = counted_as
        # (address, role) -> its sign-ins' times, least recently used first
        self._addresses: OrderedDict[tuple[str, Role], deque[float]] = OrderedDict()
        self._roles: dict[Role, deque[float]] = {}

    def _recent(self, times: deque[float], now: float) -> deque[float]:
        while times and now - times[0] >= self._window:
            times.popleft()
        return times

    def take(self, source: str, role: Role, now: float) -> float:
        """Count a sign-in with ``role`` from ``source`` (a client address) if the bounds
        allow it: 0.0. Else the seconds until they do (nothing counted). The address's count
        is the role's own: the other role's sign-ins from it never make this one wait."""
        self._prune(now)
        key = (self._counted_as(source), role)
        by_address = self._recent(self._addresses.get(key, deque()), now)
        by_role = self._recent(self._roles.setdefault(role, deque()), now)
        waits = [
            times[0] + self._window - now
            for times, limit in ((by_address, self._per_address), (by_role, self._per_role))
            if len(times) >= limit
        ]
        if waits:
            return max(*waits, 1.0)
        by_address.append(now)
        by_role.append(now)
        self._addresses[key] = by_address
        self._addresses.move_to_end(key)
        return 0.0

    def _prune(self, now: float) -> None:
        """Forget addresses with no sign-in in the window (the least recent are first)."""
        while self._addresses:
            key, times = next(iter(self._addresses.items()))
            if times and now - times[-1] < self._window:
                return
            del self._addresses[key]

    def followed(self) -> int:
        """(Address, role) pairs counted now (bounded: only accepted sign-ins add one)."""
        return len(self._addresses)
