"""A frame cut to the terminal's height: the header and every table's title always show.

The live view draws on the alternate screen, which keeps only the first lines that fit: an
80x24 terminal showed 3 of 10 processes with no word of the rest, and with 57 deployments no
Processes section at all. :class:`Screenful` shares the height out instead. When every row
fits, everything shows; else the blank lines between sections go first, then the rules under
the table headers, and then each table shows its first (most important) rows with a line
saying how many more there are: every table some rows first, then the rest by weight.
Printed without a height (``--once``, frames into a pipe), a frame is whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.text import Text

from switchyard.top._fit import FittedTable

# (a blank line above each table, a rule under each table's header), most spacious first
LAYOUTS = ((True, True), (False, True), (False, False))
ENOUGH = 5  # rows per table worth a more compact layout
FLOOR = 3  # rows every table gets before the others get more


class Screenful:
    """``head`` (title, totals...) then ``tables``, each with a ``weight``: its share of the
    rows once every table has :data:`FLOOR`; in ``height`` lines, or whole if None.

    The height is given, not read from the console's options: rich's ``Live`` (its ``Screen``)
    renders its content inside a ``Group``, which passes no height on.
    """

    def __init__(
        self,
        head: Sequence[RenderableType],
        tables: Sequence[tuple[FittedTable, int]],
        height: int | None,
    ) -> None:
        self.head = list(head)
        self.tables = [table for table, _ in tables]
        self.weights = [weight for _, weight in tables]
        self.height = height

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = self.height
        options = options.reset_height()
        yield from self.head
        if height is None:  # printed, not on a screen: everything
            for table in self.tables:
                yield Text()
                yield table
            return
        used = sum(len(console.render_lines(part, options, pad=False)) for part in self.head)
        spaced, ruled, rows = self.plan(console, options, height - used)
        for table, count in zip(self.tables, rows, strict=True):
            if spaced:
                yield Text()
            yield table.showing(count, ruled=ruled)

    def plan(
        self, console: Console, options: ConsoleOptions, room: int
    ) -> tuple[bool, bool, list[int]]:
        """The layout and the rows of each table for ``room`` lines under the head."""
        counts = [len(t.rows) for t in self.tables]

        def space(spaced: bool) -> int:
            return room - (len(self.tables) if spaced else 0)

        def height(rows: Sequence[int], ruled: bool) -> int:
            return sum(
                t.lines(console, options, n, ruled=ruled)
                for t, n in zip(self.tables, rows, strict=True)
            )

        for spaced, ruled in LAYOUTS:
            if height(counts, ruled) <= space(spaced):
                return spaced, ruled, counts
        enough = [min(n, ENOUGH) for n in counts]
        spaced, ruled = next(
            (
                (spaced, ruled)
                for spaced, ruled in LAYOUTS
                if height(enough, ruled) <= space(spaced)
            ),
            LAYOUTS[-1],
        )
        costs = [(lambda n, t=t: t.lines(console, options, n, ruled=ruled)) for t in self.tables]
        return spaced, ruled, share(costs, counts, self.weights, space(spaced))


def share(
    costs: Sequence[Callable[[int], int]],
    counts: Sequence[int],
    weights: Sequence[int],
    room: int,
) -> list[int]:
    """Rows for each table, one at a time while the lines they cost (``costs[i](rows)``: the
    title, the header, a "more" line...) fit in ``room``: first to the tables with fewer than
    :data:`FLOOR`, then to the one with the fewest rows for its weight."""
    shown = [0] * len(counts)

    def total(rows: list[int]) -> int:
        return sum(cost(n) for cost, n in zip(costs, rows, strict=True))

    while True:
        open_ = [i for i, n in enumerate(counts) if shown[i] < n]
        open_.sort(key=lambda i: (shown[i] >= FLOOR, shown[i] / weights[i], i))
        for i in open_:
            trial = [*shown]
            trial[i] += 1
            if total(trial) <= room:
                shown = trial
                break
        else:
            return shown
