"""Tables that fit the terminal's width, and a number of rows, without breaking what they show.

rich shrinks a table that is too wide by wrapping its wrappable columns down to nothing (an 80
column terminal showed deployments without their names), and wraps a line of text anywhere
("TTFT p50/p99" on one line, its value on the next). :class:`FittedTable` decides itself what
to leave out, in this order: columns with nothing in them (only ``-``, ``0%``...), then long
values shortened with an ellipsis (a deployment id keeps its provider and its tail), then the
columns with data, lowest ranked first. One line under the table names the columns with data
it hid and, when the screen has room for only its first rows, how many more there are. Every
row is one line, so a table's height is known before it is drawn. :class:`Fields` breaks a
line of ``label value`` pairs between pairs only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich import box
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderResult
from rich.table import Table
from rich.text import Text

GAP = 2  # cells between two columns
ELLIPSIS = "…"
LAST_RESORT = 6  # how narrow a shortened value may get once no column is left to hide
NOTHING = frozenset({"", "-"})


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    justify: JustifyMethod = "left"
    keep: int = 100  # rank: lower ranks are hidden first; 100 is never hidden
    shorten_to: int | None = None  # long values may be shortened down to this width
    cut: Literal["middle", "end"] = "middle"  # where a shortened value loses its characters
    blank: frozenset[str] = NOTHING  # values that say nothing: a column of only these goes first


@dataclass(frozen=True, slots=True)
class Fit:
    """A table's layout in one width: which columns, how wide, and what it had to hide."""

    shown: tuple[int, ...]
    widths: dict[int, int]
    hidden: tuple[str, ...]  # headers of the hidden columns that had something to show


class FittedTable:
    """Rows of cells under :class:`Column` headers, most important row first, drawn as wide
    as the terminal allows and, with :meth:`showing`, cut to its first rows."""

    def __init__(
        self,
        title: str,
        columns: Sequence[Column],
        rows: list[list[Text]],
        *,
        empty: str = "",
        quiet: Sequence[bool] = (),
        quiet_word: str = "",
    ) -> None:
        """
        Args:
            empty: what to say when there are no rows.
            quiet: per row, whether it has nothing to look at; rows left out that all are
                say so (``… 48 more, all idle``).
            quiet_word: that word (``idle``, ``healthy``).
        """
        self.title = title
        self.columns = tuple(columns)
        self.rows = rows
        self.empty = empty
        self.quiet = tuple(quiet)
        self.quiet_word = quiet_word
        self.limit: int | None = None  # rows drawn: None for every row
        self.ruled = True  # a rule under the header
        self._fits: dict[int, Fit] = {}

    def showing(self, limit: int | None, *, ruled: bool = True) -> FittedTable:
        """This table drawn with its first ``limit`` rows (None: every row)."""
        table = FittedTable(
            self.title,
            self.columns,
            self.rows,
            empty=self.empty,
            quiet=self.quiet,
            quiet_word=self.quiet_word,
        )
        table.limit, table.ruled, table._fits = limit, ruled, self._fits
        return table

    def fit(self, width: int) -> Fit:
        if width not in self._fits:
            self._fits[width] = _fit(self.columns, self.rows, width)
        return self._fits[width]

    def lines(self, console: Console, options: ConsoleOptions, rows: int, *, ruled: bool) -> int:
        """How many lines it takes to draw with its first ``rows`` rows."""
        if not self.rows:
            return 1 + len(console.render_lines(Text(self.empty), options, pad=False))
        rows = min(rows, len(self.rows))
        head = (2 if ruled else 1) if rows else 0
        note = rows < len(self.rows) or bool(self.fit(options.max_width).hidden)
        return 1 + head + rows + int(note)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text(self.title, style="bold", no_wrap=True, overflow="ellipsis")
        if not self.rows:
            yield Text(self.empty, style="yellow")
            return
        width = options.max_width
        fit = self.fit(width)
        count = len(self.rows) if self.limit is None else max(0, min(self.limit, len(self.rows)))
        if count:
            yield self._table(fit, self.rows[:count])
        note = self._note(count, fit)
        if note:
            yield Text(note, style="dim", no_wrap=True, overflow="ellipsis")

    def _table(self, fit: Fit, rows: list[list[Text]]) -> Table:
        table = Table(
            box=box.SIMPLE_HEAD if self.ruled else None,
            show_edge=False,
            pad_edge=False,
            # The box draws a blank separator between columns; without one, padding does.
            padding=(0, GAP - 1 if self.ruled else GAP, 0, 0),
            header_style="bold dim",
        )
        for i in fit.shown:
            column = self.columns[i]
            table.add_column(
                column.header,
                justify=column.justify,
                no_wrap=True,
                overflow="ellipsis",
                width=fit.widths[i],
            )
        for row in rows:
            table.add_row(*(shorten(row[i], fit.widths[i], self.columns[i].cut) for i in fit.shown))
        return table

    def _note(self, count: int, fit: Fit) -> str:
        """``… 48 more, all idle`` for the rows left out, and the columns with data hidden."""
        parts = []
        left_out = len(self.rows) - count
        if left_out:
            more = f"{ELLIPSIS} {left_out} more"
            rest = self.quiet[count:]
            if self.quiet_word and len(rest) == left_out and all(rest):
                more += f", all {self.quiet_word}"
            parts.append(more)
        if fit.hidden and count:  # no columns drawn, none hidden
            hidden = ", ".join(fit.hidden)
            parts.append(
                f"too narrow for {hidden}"
                if left_out
                else f"(too narrow for {hidden}: widen the terminal)"
            )
        return "; ".join(parts)


def _fit(columns: Sequence[Column], rows: list[list[Text]], width: int) -> Fit:
    natural = [
        max([len(c.header), *(row[i].cell_len for row in rows)]) for i, c in enumerate(columns)
    ]
    floor = [
        min(natural[i], max(len(c.header), c.shorten_to)) if c.shorten_to else natural[i]
        for i, c in enumerate(columns)
    ]
    empty = [
        bool(rows) and all(row[i].plain.strip() in c.blank for row in rows)
        for i, c in enumerate(columns)
    ]

    def needs(shown: list[int], sizes: list[int]) -> int:
        return sum(sizes[i] for i in shown) + GAP * (len(shown) - 1)

    def rank(i: int) -> tuple[int, int]:
        return (columns[i].keep, -i)  # the lowest rank goes first; among equals, the rightmost

    shown = list(range(len(columns)))
    hidden: list[int] = []
    # Columns with nothing in them go first, before any value is shortened.
    while needs(shown, natural) > width:
        blank = [i for i in shown if empty[i] and columns[i].keep < 100]
        if not blank:
            break
        shown.remove(min(blank, key=rank))
    # Then columns with data, as long as even shortened values do not fit.
    while needs(shown, floor) > width:
        droppable = [i for i in shown if columns[i].keep < 100]
        if not droppable:
            break
        lowest = min(droppable, key=rank)
        shown.remove(lowest)
        hidden.append(lowest)
    # A column hidden early may fit again now that a wider one went: the highest ranked first.
    for i in sorted(hidden, key=rank, reverse=True):
        if needs([*shown, i], floor) <= width:
            shown = sorted([*shown, i])
            hidden.remove(i)
    # Shorten as little as needed, the lowest ranked first; past the floors only when the
    # columns that are never hidden do not fit either.
    widths = {i: natural[i] for i in shown}
    excess = needs(shown, natural) - width
    for least in (floor, [LAST_RESORT] * len(columns)):
        for i in sorted(shown, key=rank):
            if excess <= 0 or not columns[i].shorten_to:
                continue
            cut = max(0, min(excess, widths[i] - least[i]))
            widths[i] -= cut
            excess -= cut
    return Fit(
        shown=tuple(shown),
        widths=widths,
        hidden=tuple(columns[i].header for i in sorted(hidden)),
    )


def shorten(cell: Text, width: int, cut: Literal["middle", "end"] = "middle") -> Text:
    """``cell`` in at most ``width`` cells: an ellipsis in the middle keeps its start (a
    deployment id's ``provider--``) and its tail (where ids differ: ``…m10-5b337dce``), or at
    the end (``cut="end"``)."""
    if cell.cell_len <= width:
        return cell
    room = width - 1
    if room < 1 or cut == "end":
        short = cell.copy()
        short.truncate(width, overflow="ellipsis")
        return short
    plain = cell.plain
    prefix = plain.find("--") + 2 if "--" in plain else 0
    if prefix > room // 2:  # too long to keep whole
        prefix = 0
    tail = max(1, -(-(room - prefix) * 2 // 3))  # two thirds of what is left, rounded up
    head = room - tail
    short = cell[:head]
    short.append(ELLIPSIS)
    short.append_text(cell[len(plain) - tail :])
    if short.cell_len > width:  # wide characters
        short.truncate(width, overflow="ellipsis")
    return short


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
