"""The wire-protocol level: one small integer every process states in its heartbeat.

A rolling upgrade runs old and new processes side by side. Most changes to the messages between
components are additive (new fields with defaults, new headers an old reader ignores), but some
are not: an older reader then mishandles what a newer writer sends, and nothing fails loudly
(a request waits out its deadline). docs/operations.md ("Upgrading a running platform") gives
the order that avoids it; the level lets the control service see a mix that breaks that order
(``switchyard.control.upgrade_order``).

Raise :data:`PROTOCOL_LEVEL` by one whenever a message between components changes so that an
older reader mishandles it, and say in the upgrade section of docs/operations.md which
component must go first. A change an older reader safely ignores needs no new level. A new
route-table field is never ignored (an older reader refuses the whole table): raise the level
and add the field to ``switchyard.control.table_levels.NEW_FIELDS``, which keeps tables using it
unwritten while an older process runs.
"""

from __future__ import annotations

# Heartbeats that carry no level come from processes older than the field itself: they predate
# removal bounces (``Sy-Bounces``) and ``Sy-Cancel-Proof``.
UNSTATED_LEVEL = 1

# Level 2: a model-proxy hands a request whose deployment left the routes back to a head as a
# removal bounce (``Sy-Bounces``), which level-1 heads drop; LLMClient cancels carry
# ``Sy-Cancel-Proof``, which level-1 model-proxies do not read.
# Level 3: route tables may carry fields level-2 readers refuse (every route-table struct
# forbids unknown fields, so such a reader ignores the whole table and each later one):
# ``price.web_search_per_call``. The control service writes a table using one only while no
# live process states a lower level (``switchyard.control.table_levels``).
# Level 4: route tables may set ``timeouts.idle_s`` (level-3 readers, 0.2.0, refuse it); a
# model-proxy hands a request one deployment cannot take back to a head marked ``Sy-Unfit``,
# which level-3 heads count as an attempt and, when every deployment refused, answer 502
# ``all_deployments_failed`` instead of the 400 naming the field.
PROTOCOL_LEVEL = 4
