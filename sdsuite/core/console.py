"""The one console policy of every command's human-readable output (rich).

- Width: the terminal's own in a terminal; unlimited when piped or redirected (no hard wrap at 80 columns, so
  ``sdsuite list | grep sd-v`` finds every row and a long case id stays on one line).
- Nothing a user greps for is cut: no ellipsis anywhere; id and name columns keep their text whole and the other
  columns wrap first (``readable``); in a narrow terminal an id that still does not fit folds onto the next line.
- Text is printed verbatim: markup is off, so ``pip install 'sdsuite[gpu]'`` keeps its brackets. Style goes through
  ``style=`` instead of inline markup.

Also ``print_json``: stdout's one machine-readable document, the same for every front end (the CLI, the
launcher's workers). The import-noise filter every front end installs first is sdsuite.core.quiet (no rich).
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported by what prints a table, not by every command (usage errors, JSON)
    from rich.console import Console
    from rich.table import Table

UNLIMITED_WIDTH = 100_000  # "no wrapping" for rich, which needs a number


def is_terminal(stderr: bool = False) -> bool:
    stream = sys.stderr if stderr else sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def console(stderr: bool = False) -> Console:
    """The console of a command's output (stdout, or stderr for progress and notes)."""
    from rich.console import Console

    if is_terminal(stderr):
        return Console(stderr=stderr, markup=False, highlight=False)
    return Console(stderr=stderr, markup=False, highlight=False, width=UNLIMITED_WIDTH, soft_wrap=True)


@lru_cache(maxsize=1)
def _readable_table_class():
    """ReadableTable, defined on first use (it subclasses rich's Table)."""
    from rich.table import Table

    class ReadableTable(Table):
        """A rich Table under the policy: no cell ever ends in an ellipsis (long words fold), the ``keep_whole`` columns
        (ids, names) do not wrap, and when those columns plus the other columns' longest words do not fit the console,
        each row is printed as a block instead (its id on a line of its own, then ``header: value`` pairs), so an id is
        never cut or folded."""

        def __init__(self, table: Table, keep_whole: tuple[str, ...]):
            self.__dict__.update(table.__dict__)
            self.keep_whole = keep_whole
            for col in self.columns:
                col.overflow = "fold"
                col.no_wrap = str(col.header) in keep_whole

        def _texts(self, col) -> list[str]:
            return [str(c) for c in col._cells]

        def fits(self, width: int) -> bool:
            need = 3 * len(self.columns) + 1
            for col in self.columns:
                texts = [str(col.header), *self._texts(col)]
                if col.no_wrap:
                    need += max(len(t) for t in texts)
                else:
                    need += max((len(w) for t in texts for w in t.split()), default=1)
            return need <= width

        def _calculate_column_widths(self, console, options) -> list[int]:
            # rich narrows the widest wrapping columns evenly, even below a column's longest word while another
            # column still has room ("slowdown" over two lines at 80 columns). When the longest words fit, narrow
            # the widest column that is still above its longest word, one cell at a time, instead.
            ranges = [self._measure_column(console, options, col) for col in self.columns]
            widths = [r.maximum for r in ranges]
            low = [r.maximum if col.no_wrap else r.minimum for r, col in zip(ranges, self.columns, strict=True)]
            if self.expand or sum(widths) <= options.max_width or sum(low) > options.max_width:
                return super()._calculate_column_widths(console, options)
            for _ in range(sum(widths) - options.max_width):
                i = max((j for j in range(len(widths)) if widths[j] > low[j]), key=widths.__getitem__)
                widths[i] -= 1
            return widths

        def __rich_console__(self, console, options):
            if self.fits(options.max_width) or not self.keep_whole:
                yield from super().__rich_console__(console, options)
                return
            from rich.text import Text

            if self.title:
                yield Text(str(self.title), style="italic")
            keys = [c for c in self.columns if str(c.header) in self.keep_whole]
            rest = [c for c in self.columns if c not in keys]
            for i in range(self.row_count):
                yield Text("  ".join(self._texts(c)[i] for c in keys), style="bold", overflow="fold")
                yield Text("  " + "; ".join(f"{str(c.header)}: {self._texts(c)[i]}" for c in rest), overflow="fold")

    return ReadableTable


def __getattr__(name: str):
    if name == "ReadableTable":
        return _readable_table_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def readable(table: Table, *keep_whole: str) -> Table:
    """The table under the console policy (see ReadableTable)."""
    return _readable_table_class()(table, keep_whole)


def print_json(obj) -> None:
    """Machine-readable output on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
