"""The processes the monitor knows, and which silent ones came back under another name.

A process started without ``--instance`` (Kubernetes, compose, systemd units) is named after
its host and pid (:func:`~switchyard.runtime.reporting.instance_name`): when it is killed its
successor reports under a new name, often from a new host too (a pod rescheduled after a node
loss or an eviction, a recreated container). Its old row would otherwise stay listed as silent,
and ``switchyard_process_up`` 0, for a day on a healthy cluster.

Every time compared here is the control service's own clock (when it heard a beat), never a
worker's (``started_at``): hosts' clocks differ.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from switchyard.runtime.reporting import instance_name
from switchyard.schemas import monitor as m


@dataclass(slots=True)
class Process:
    """A process as the monitor knows it."""

    beat: m.Heartbeat  # its last beat
    seen: float  # when that beat was heard (control's clock)
    first_heard: float  # when this process was first heard (control's clock)
    cpu_percent: float = 0.0
    # Counted already as the successor of a silent process: it replaces no other one.
    successor: bool = False


def named_after_pid(beat: m.Heartbeat) -> bool:
    """Whether a process reports under the name it was given none (``<component>-<host>-<pid>``)."""
    return beat.instance == instance_name(beat.component, host=beat.host, pid=beat.pid)


def replaced(silent: Iterable[Process], known: Iterable[Process]) -> list[Process]:
    """The silent processes that came back under another name, each paired with a successor.

    A silent process named after its pid is replaced by a process of the same component, on
    any host, first heard after its last beat and not yet counted as another silent one's
    successor: each newcomer replaces at most one (two pods lost, one back, one row stays
    silent), and a sibling already heard before the silence never does (it may be a frozen
    one's peer). A process with a name of its own (the local stack's ``head-1``) comes back
    under that name, which replaces its row. Successors found are marked, so a later call
    does not count them again.
    """
    silent = list(silent)
    if not silent:  # the common case, on every look at the process table
        return []
    newcomers = sorted((p for p in known if not p.successor), key=lambda p: p.first_heard)
    gone: list[Process] = []
    # The longest silent first, each taking the earliest newcomer heard after it went
    # silent: a newcomer heard later is left for one that went silent later.
    for quiet in sorted(silent, key=lambda p: p.seen):
        if not named_after_pid(quiet.beat):
            continue
        for new in newcomers:
            if (
                new is not quiet
                and not new.successor
                and new.beat.component == quiet.beat.component
                and new.first_heard > quiet.seen
            ):
                new.successor = True
                gone.append(quiet)
                break
    return gone
