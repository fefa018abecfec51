"""Layouts that fit the terminal's width without breaking what they show.

rich shrinks a table that is too wide by wrapping its wrappable columns down to nothing (an 80
column terminal showed deployments without their names), and wraps a line of text anywhere
("TTFT p50/p99" on one line, its value on the next). :class:`FittedTable` gives each column a
rank: when the cells do not fit, the lowest ranked columns go first, and a line under the table
names what was hidden; only when the columns that are always shown do not fit either do long
names fold, down to a floor width. :class:`Fields` breaks a line of
``label value`` pairs between pairs only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderResult
from rich.table import Table
from rich.text import Text

GAP = 2  # cells between two columns: one of padding, one of the (blank) separator


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    justify: JustifyMethod = "left"
    keep: int = 100  # rank: lower ranks are hidden first
    fold_to: int | None = None  # long values may wrap down to this width


class FittedTable:
    """Rows of cells under :class:`Column` headers, drawn as wide as the terminal allows."""

    def __init__(self, title: str, columns: Sequence[Column], rows: list[list[Text]]) -> None:
        self.title = title
        self.columns = tuple(columns)
        self.rows = rows
        self._natural: list[int] = []  # each column's widest cell
        self._needs: list[int] = []  # the narrowest it may be: that, or its fold floor
        for i, column in enumerate(self.columns):
            natural = max([len(column.header), *(row[i].cell_len for row in rows)])
            floor = max(column.fold_to or natural, len(column.header))
            self._natural.append(natural)
            self._needs.append(min(natural, floor))

    def shown(self, width: int) -> list[int]:
        """Indexes of the columns that fit in ``width`` cells without folding any (folding a
        name mid-word reads worse than leaving a column out), hiding the lowest ranks first."""
        natural = self._natural
        shown = list(range(len(self.columns)))
        while sum(natural[i] for i in shown) + GAP * (len(shown) - 1) > width:
            droppable = [i for i in shown if self.columns[i].keep < 100]
            if not droppable:
                break
            # The lowest rank goes first; among equals, the rightmost.
            shown.remove(min(droppable, key=lambda i: (self.columns[i].keep, -i)))
        return shown

    def widths(self, shown: list[int], width: int) -> dict[int, int]:
        """The width of each shown column: natural, unless even the columns that are never
        hidden do not fit; then the foldable ones fold, the lowest ranked first."""
        widths = {i: self._natural[i] for i in shown}
        excess = sum(widths.values()) + GAP * (len(shown) - 1) - width
        for i in sorted(shown, key=lambda i: (self.columns[i].keep, -i)):
            if excess <= 0:
                break
            cut = min(excess, widths[i] - self._needs[i])
            widths[i] -= cut
            excess -= cut
        return widths

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        shown = self.shown(options.max_width)
        widths = self.widths(shown, options.max_width)
        table = Table(
            title=self.title,
            title_justify="left",
            title_style="bold",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            padding=(0, 1, 0, 0),
            header_style="bold dim",
        )
        for i in shown:
            column = self.columns[i]
            table.add_column(
                column.header,
                justify=column.justify,
                no_wrap=column.fold_to is None,
                overflow="fold",
                width=widths[i],
            )
        for row in self.rows:
            table.add_row(*(row[i] for i in shown))
        yield table
        hidden = [c.header for i, c in enumerate(self.columns) if i not in shown]
        if hidden:
            yield Text(f"(too narrow for {', '.join(hidden)}: widen the terminal)", style="dim")


class Fields:
    """``label value`` pairs on as few lines as the width allows, broken between pairs only."""

    def __init__(self, *lines: list[tuple[str, str, str]]) -> None:
        self.lines = lines  # each: (label, value, style of the value) in order

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for pairs in self.lines:
            line = Text()
            width = 0
            for label, value, style in pairs:
                size = len(label) + 1 + len(value)
                if width and width + 3 + size > options.max_width:
                    yield line
                    line, width = Text(), 0
                elif width:
                    line.append("   ")
                    width += 3
                line.append(f"{label} ", style="dim")
                line.append(value, style=style or "bold")
                width += size
            yield line
