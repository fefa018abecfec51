"""``switchyard top``: the platform's live state in a terminal, in the spirit of ``nats top``.

A client of the gateway's admin HTTP API (``GET /admin/v1/overview``), nothing more: it reads
what the control service collected (queues, traffic, processes) and shows it, refreshed every
second, or prints one snapshot for scripts (``--once``, ``--json``). ``source`` finds the gateway
and reads from it, ``render`` draws a frame, ``app`` runs the command.
"""

from switchyard.top.app import read_overview, run_top
from switchyard.top.render import frame
from switchyard.top.source import Target, fetch_overview, resolve_target

__all__ = ["Target", "fetch_overview", "frame", "read_overview", "resolve_target", "run_top"]
