"""Rolling upgrades done out of order, seen from the process table.

docs/operations.md ("Upgrading a running platform") says heads go before model-proxies: a newer
model-proxy's removal bounce is dropped by an older head, and the symptom is only a request
waiting out its deadline. Every heartbeat states its wire-protocol level
(``switchyard.schemas.protocol``), so the control service can tell such a mix from the
heartbeats it already collects: :func:`violations` is the pure rule, :class:`OrderWatch` says
so in the log once when a mix starts and once when it ends, and the monitor exports
``switchyard_upgrade_order_violations`` and adds the violations to the overview.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from switchyard.schemas.monitor import ProcessLevel, ProcessState, UpgradeOrderViolation

# (the component upgraded first, the components that must not be newer than it). Only live
# processes count: one that went silent or said goodbye is not mixing with anyone.
ORDER: tuple[tuple[str, frozenset[str]], ...] = (
    # A newer model-proxy bounces a request whose deployment left the routes back to a head;
    # an older head drops it.
    ("head", frozenset({"modelproxy"})),
    # Not a rule: model-proxies before the services that cancel with Sy-Cancel-Proof. The edges
    # and the batch runner also use LLMClient, but they name the key by its hash on a cancel,
    # which every model-proxy reads; the applications that prove their cancels do not report
    # in, so the docs' order for them cannot be watched from here.
)
# Every component that can run ahead of another: the metric has a series for each.
DEPENDENTS: tuple[str, ...] = tuple(sorted({c for _, after in ORDER for c in after}))


def _level(p: ProcessState) -> ProcessLevel:
    return ProcessLevel(
        component=p.component, instance=p.instance, version=p.version, protocol=p.protocol
    )


def _names(levels: Sequence[ProcessLevel]) -> str:
    return ", ".join(f"{who(p)} (level {p.protocol})" for p in levels)


def who(p: ProcessLevel | ProcessState) -> str:
    """``head-1``, or ``head h1`` when the instance does not say its component."""
    return p.instance if p.instance.startswith(p.component) else f"{p.component} {p.instance}"


def violations(processes: Iterable[ProcessState]) -> list[UpgradeOrderViolation]:
    """The breaks of the upgrade order among the live (healthy) ``processes``.

    A rule is broken when a process that must not be newer than ``first`` states a higher
    protocol level than some live process of ``first``; ``behind`` lists those of ``first``
    below the highest such level, ``ahead`` those above the lowest level of ``first``. No live
    process of ``first`` (or none relying on it) breaks nothing.
    """
    live = sorted((p for p in processes if p.healthy), key=lambda p: (p.component, p.instance))
    found = []
    for first, after in ORDER:
        readers = [p for p in live if p.component == first]
        writers = [p for p in live if p.component in after]
        if not readers or not writers:
            continue
        lowest = min(p.protocol for p in readers)
        highest = max(p.protocol for p in writers)
        if highest <= lowest:
            continue
        behind = [_level(p) for p in readers if p.protocol < highest]
        ahead = [_level(p) for p in writers if p.protocol > lowest]
        summary = (
            f"{_names(ahead)} newer than {_names(behind)}; "
            f"upgrade every {first} first (docs/operations.md, Upgrading a running platform)"
        )
        found.append(
            UpgradeOrderViolation(first=first, behind=behind, ahead=ahead, summary=summary)
        )
    return found


def ahead_by_component(found: Iterable[UpgradeOrderViolation]) -> dict[str, int]:
    """How many live processes of each dependent component run ahead (0 for the others)."""
    counts = dict.fromkeys(DEPENDENTS, 0)
    for violation in found:
        for p in violation.ahead:
            counts[p.component] = counts.get(p.component, 0) + 1
    return counts


class OrderWatch:
    """Logs a broken upgrade order once when it starts (or changes) and once when it ends,
    not at every heartbeat."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._last: tuple[str, ...] = ()

    def observe(self, found: Sequence[UpgradeOrderViolation]) -> None:
        now = tuple(v.summary for v in found)
        if now == self._last:
            return
        if now:
            for summary in now:
                self._log.warning("upgrade order broken: %s", summary)
        else:
            self._log.info("upgrade order restored: no live process is newer than one it needs")
        self._last = now
