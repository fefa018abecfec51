"""The order held requests start in: strict priority, then weighted deficit round robin.

Pure logic, no I/O: the feeder pushes each held request it reads from HOLD and pops one each
time a slot frees. Classes are served highest first (``interactive``, ``default``, ``batch``):
a lower class starts only when no higher class waits. Within a class, tenants take turns by
deficit round robin (Shreedhar and Varghese, 1995): a tenant's turn adds its weight to its
deficit and it starts one request per whole unit, so over any busy period each tenant's share
of starts is its weight over the sum of the waiting tenants' weights, within one request. A
tenant whose queue empties leaves the round and forfeits its deficit (no credit for idling).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from switchyard.schemas.scheduling import PRIORITIES, RANK

T = TypeVar("T")


@dataclass(slots=True)
class _Tenant(Generic[T]):
    weight: float
    queue: deque[T] = field(default_factory=deque)
    deficit: float = 0.0


class _Class(Generic[T]):
    """One priority class: tenants in round-robin order, each with its FIFO of requests."""

    def __init__(self) -> None:
        self.tenants: dict[str, _Tenant[T]] = {}
        self.turns: deque[str] = deque()  # tenants with work, in round order
        self.size = 0

    def push(self, tenant: str, weight: float, item: T) -> None:
        state = self.tenants.get(tenant)
        if state is None:
            state = self.tenants[tenant] = _Tenant(weight)
        state.weight = weight  # the latest request's weight counts
        if not state.queue:
            self.turns.append(tenant)
        state.queue.append(item)
        self.size += 1

    def push_front(self, tenant: str, weight: float, item: T) -> None:
        """Put back a popped item that could not start: first in its tenant's line again."""
        state = self.tenants.get(tenant)
        if state is None:
            state = self.tenants[tenant] = _Tenant(weight)
        if not state.queue:
            self.turns.appendleft(tenant)
        state.queue.appendleft(item)
        self.size += 1

    def pop(self) -> T | None:
        turns = self.turns
        while turns:
            name = turns[0]
            state = self.tenants[name]
            if state.deficit < 1.0:
                state.deficit += state.weight
                if state.deficit < 1.0:  # a weight below 1 saves up over several rounds
                    turns.rotate(-1)
                    continue
            item = state.queue.popleft()
            state.deficit -= 1.0
            self.size -= 1
            if not state.queue:
                turns.popleft()
                del self.tenants[name]  # leaves the round: no credit for idle time
            elif state.deficit < 1.0:
                turns.rotate(-1)
            return item
        return None

    def drop(self, doomed: Callable[[T], bool]) -> list[T]:
        """Remove the items ``doomed`` picks (expired requests); returns them."""
        removed: list[T] = []
        for name in list(self.tenants):
            state = self.tenants[name]
            kept = deque(i for i in state.queue if not doomed(i))
            if len(kept) == len(state.queue):
                continue
            removed += [i for i in state.queue if doomed(i)]
            self.size -= len(state.queue) - len(kept)
            state.queue = kept
            if not kept:
                self.turns.remove(name)
                del self.tenants[name]
        return removed


class FairQueue(Generic[T]):
    """Held requests of one deployment (see the module docstring)."""

    def __init__(self) -> None:
        self._classes: list[_Class[T]] = [_Class() for _ in PRIORITIES]

    def __len__(self) -> int:
        return sum(c.size for c in self._classes)

    def push(self, priority: str, tenant: str, weight: float, item: T) -> None:
        """Queue ``item`` for ``tenant`` (unknown priorities count as ``default``)."""
        rank = RANK.get(priority, RANK["default"])
        self._classes[rank].push(tenant, weight if weight > 0 else 1.0, item)

    def push_front(self, priority: str, tenant: str, weight: float, item: T) -> None:
        """Return a popped request that could not start to the head of its tenant's line, so
        each tenant's requests still leave in the order they came."""
        rank = RANK.get(priority, RANK["default"])
        self._classes[rank].push_front(tenant, weight if weight > 0 else 1.0, item)

    def pop(self) -> T | None:
        """The request to start next, or None when nothing waits."""
        for cls in self._classes:
            if cls.size:
                return cls.pop()
        return None

    def drop(self, doomed: Callable[[T], bool]) -> list[T]:
        """Remove and return the requests ``doomed`` picks."""
        return [item for cls in self._classes for item in cls.drop(doomed)]

    def depths(self) -> Iterator[tuple[str, str, int, T]]:
        """(priority, tenant, requests waiting, the first of them) per non-empty queue."""
        for priority, cls in zip(PRIORITIES, self._classes, strict=True):
            for tenant, state in cls.tenants.items():
                yield priority, tenant, len(state.queue), state.queue[0]
