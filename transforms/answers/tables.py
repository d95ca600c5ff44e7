"""Tables as cells: an HTML table → header + rows (rowspan/colspan expanded), and the tables of a
document merged where one continues on the next page.

**When tables merge** (`merge_tables`): a table part merges into the one before it when
1. the earlier part is the last content block of its page and the later part is the first
   content block of the very next page (running headers, footers, page numbers and footnotes
   don't count as content: they may sit between the two),
2. both have the same number of columns, and
3. the later part has no header, or its header is the earlier one's (repeated on the new page;
   compared without case and whitespace), or its first row is the earlier part's header (a
   repeated header the model didn't mark as one: that row is dropped).
A merged table keeps the first part's header, box and table_index; its `page_numbers` lists
every page it spans, its rows are all parts' body rows in order, and its `html` is rebuilt from
the cells. Chains continue across any number of pages.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape

from vlbeam.transforms.answers.html_inline import inline_markdown
from vlbeam.transforms.answers.html_tree import Element, parse_html

MAX_SPAN = 1000  # a hostile colspan/rowspan can't blow a table up beyond this


@dataclass(frozen=True)
class TableGrid:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    @property
    def n_cols(self) -> int:
        return max([len(self.header), *(len(r) for r in self.rows)], default=0)

    @property
    def n_rows(self) -> int:
        return len(self.rows)


def _span(cell: Element, name: str) -> int:
    try:
        return min(MAX_SPAN, max(1, int(cell.attrs.get(name, "1").strip() or 1)))
    except ValueError:
        return 1


def _rows_of(table: Element) -> list[tuple[Element, bool]]:
    """(tr, in thead) in document order, not descending into nested tables."""
    found: list[tuple[Element, bool]] = []

    def walk(node: Element, head: bool) -> None:
        for child in node.elements():
            if child.tag == "table":
                continue
            if child.tag == "tr":
                found.append((child, head))
            else:
                walk(child, head or child.tag == "thead")

    walk(table, False)
    return found


def _cell_text(cell: Element) -> str:
    return inline_markdown(cell).replace("\n", " ")


def table_grid(table: Element) -> TableGrid:
    """Header and body rows of an HTML table, every row `n_cols` cells long.

    The header is the leading rows inside `<thead>` or made only of `<th>` cells (several
    header rows are joined per column, " / " between distinct parts); without one the header
    is empty and every row is a body row."""
    grid: list[list[str]] = []
    is_head: list[bool] = []
    carry: dict[int, list] = {}  # column -> [rows still to fill, text]
    for tr, in_head in _rows_of(table):
        cells = [c for c in tr.elements() if c.tag in ("td", "th")]
        row: list[str] = []
        col = 0

        def fill_carried(row: list[str] = row) -> None:
            nonlocal col
            while col in carry:
                held = carry[col]
                row.append(held[1])
                held[0] -= 1
                if held[0] == 0:
                    del carry[col]
                col += 1

        for cell in cells:
            fill_carried()
            text = _cell_text(cell)
            colspan, rowspan = _span(cell, "colspan"), _span(cell, "rowspan")
            for _ in range(colspan):
                row.append(text)
                if rowspan > 1:
                    carry[col] = [rowspan - 1, text]
                col += 1
        for key in sorted(k for k in carry if k >= col):
            while col < key:
                row.append("")
                col += 1
            fill_carried()
        if not cells and not row:
            continue
        grid.append(row)
        is_head.append(in_head or (bool(cells) and all(c.tag == "th" for c in cells)))
    n_cols = max((len(r) for r in grid), default=0)
    grid = [r + [""] * (n_cols - len(r)) for r in grid]
    n_head = 0
    while n_head < len(grid) and is_head[n_head] and n_head < len(grid) - 1:
        n_head += 1
    if n_head == 1 and len(grid) == 1:
        n_head = 0
    header = _join_header_rows(grid[:n_head], n_cols)
    return TableGrid(header=header, rows=tuple(tuple(r) for r in grid[n_head:]))


def _join_header_rows(rows: list[list[str]], n_cols: int) -> tuple[str, ...]:
    if not rows:
        return ()
    out = []
    for c in range(n_cols):
        parts: list[str] = []
        for r in rows:
            if r[c] and r[c] not in parts:
                parts.append(r[c])
        out.append(" / ".join(parts))
    return tuple(out)


def first_table(html: str) -> Element | None:
    """The first `<table>` in an HTML fragment (a block's `html`), or None."""
    return next(parse_html(html).iter("table"), None)


def grid_html(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain HTML table of the cells (for merged tables)."""
    parts = ["<table>"]
    if header:
        parts.append("<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header))
        parts.append("</tr></thead>")
    parts.append("<tbody>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


# ---------------------------------------------------------------------------------- merging


@dataclass(frozen=True)
class TablePart:
    """One table block of one page, with where it sits among the page's content blocks."""

    page_number: int
    html: str
    grid: TableGrid
    bbox: dict | None
    first_on_page: bool  # no content block before it on its page
    last_on_page: bool  # no content block after it


@dataclass
class MergedTable:
    table_index: int
    page_numbers: list[int]
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]
    bbox: dict | None
    html: str
    n_cols: int
    parts: list[TablePart] = field(default_factory=list)

    def to_row(self) -> dict:
        return {
            "page_numbers": list(self.page_numbers),
            "table_index": self.table_index,
            "html": self.html,
            "header": list(self.header),
            "rows": [list(r) for r in self.rows],
            "n_rows": len(self.rows),
            "n_cols": self.n_cols,
            "bbox": self.bbox,
        }


def _norm(cells: Sequence[str]) -> tuple[str, ...]:
    return tuple(" ".join(c.lower().split()) for c in cells)


def continues(prev: TablePart, nxt: TablePart, header: Sequence[str] | None = None) -> bool:
    """Whether `nxt` continues `prev` (the rule in this module's docstring); `header`: the
    table's header so far (default: `prev`'s own)."""
    if not (prev.last_on_page and nxt.first_on_page):
        return False
    if nxt.page_number != prev.page_number + 1 or nxt.grid.n_cols != prev.grid.n_cols:
        return False
    header = prev.grid.header if header is None else header
    return not nxt.grid.header or _norm(nxt.grid.header) == _norm(header)


def merge_tables(parts: Sequence[TablePart]) -> list[MergedTable]:
    """A document's table parts (in page and reading order) → its tables, continued ones merged."""
    tables: list[MergedTable] = []
    last_part: TablePart | None = None
    for part in parts:
        if tables and last_part is not None and continues(last_part, part, tables[-1].header):
            table = tables[-1]
            rows = list(part.grid.rows)
            if (
                not part.grid.header
                and rows
                and table.header
                and _norm(rows[0]) == _norm(table.header)
            ):
                rows = rows[1:]  # the header repeated as a plain row
            table.rows.extend(rows)
            table.page_numbers.append(part.page_number)
            table.parts.append(part)
            table.html = grid_html(table.header, table.rows)
        else:
            tables.append(
                MergedTable(
                    table_index=len(tables),
                    page_numbers=[part.page_number],
                    header=part.grid.header,
                    rows=list(part.grid.rows),
                    bbox=part.bbox,
                    html=part.html,
                    n_cols=part.grid.n_cols,
                    parts=[part],
                )
            )
        last_part = part
    return tables
