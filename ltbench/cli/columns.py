"""Tables and notes that fit the terminal (`ltbench list`, `ltbench status`): no line wider than
``output_width()`` where words allow, long cells wrapped at word boundaries, and what does not fit in a
row on its own line(s) under it. `--wide` prints one line per row however long (for grep and scripts)."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence
from typing import Any

MIN_COLUMN = 6  # a wrapped column is never narrower


def output_width() -> int:
    """The columns output may fill: $COLUMNS, else the terminal's width, else 80 (a pipe, a file)."""
    return max(20, shutil.get_terminal_size((80, 24)).columns)


def wrap(text: str, width: int, indent: str = "") -> list[str]:
    """``text`` in lines of at most ``width`` characters (one word longer than that, a path, stays whole);
    lines after the first start with ``indent``; newlines in ``text`` start a new line."""
    out: list[str] = []
    for para in str(text).split("\n"):
        out += textwrap.wrap(para, max(width, 1), initial_indent=indent if out else "", subsequent_indent=indent,
                             break_long_words=False, break_on_hyphens=False) or [indent if out else ""]
    return out


def _render(rows: Sequence[Sequence[Any]], headers: Sequence[str], caps: dict[int, int]) -> str:
    from tabulate import tabulate

    def cell(i: int, value: Any) -> str:
        text = "" if value is None else str(value)
        if i not in caps:
            return text
        return "\n".join(line for para in text.split("\n")
                         for line in (textwrap.wrap(para, caps[i], break_on_hyphens=False) or [""]))

    cells = [[cell(i, v) for i, v in enumerate(row)] for row in rows]
    return tabulate(cells, headers=list(headers), tablefmt="simple", disable_numparse=True)


def wraps(table: str, rows: Sequence[Any]) -> bool:
    """Whether a table from fit_table has more lines than rows: cells were wrapped to fit."""
    return len(table.splitlines()) > len(rows) + 2


def _longest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def fit_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], width: int | None = None,
              details: Sequence[str] | None = None) -> str:
    """tabulate's 'simple' table within ``width`` (default ``output_width()``): the widest columns but
    the first shrink together, their cells wrapped, until it fits. ``details``: one text per row, shown
    under the row from the second column on (or from the left edge when that leaves too little room)."""
    width = width or output_width()
    text = _render(rows, headers, {})
    if _longest(text) > width:  # the largest cap on the columns but the first that fits (binary search)
        natural = {i: max([len(h)] + [len(line) for row in rows for line in str(row[i] or "").split("\n")])
                   for i, h in enumerate(headers) if i > 0}

        def capped(c: int) -> str:
            return _render(rows, headers, {i: max(min(w, c), len(headers[i]), MIN_COLUMN)
                                           for i, w in natural.items()})

        low, high = MIN_COLUMN, max(natural.values(), default=MIN_COLUMN)
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if _longest(capped(mid)) <= width else (low, mid - 1)
        text = capped(low)
    return _with_details(text, details, width) if details else text


def _with_details(table: str, details: Sequence[str], width: int) -> str:
    """Each row's detail text under the row: rows start at the lines whose first column is not blank."""
    lines = table.splitlines()
    head, body = lines[:2], lines[2:]
    offset = len(lines[1].split(" ")[0]) + 2
    indent = " " * (offset if width - offset >= 30 else 2)
    out, row = list(head), -1
    for i, line in enumerate(body):
        out.append(line)
        if not line[:1].isspace():
            row += 1
        last = i + 1 == len(body) or not body[i + 1][:1].isspace()
        if last and row < len(details) and details[row]:
            out += [indent + piece for piece in wrap(details[row], width - len(indent))]
    return "\n".join(out)
