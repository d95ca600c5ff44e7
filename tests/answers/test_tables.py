"""Tables as cells (rowspan/colspan expanded) and tables continued across pages merged."""

from __future__ import annotations

import pytest

from vlbeam.transforms.answers.tables import TablePart, first_table, merge_tables, table_grid


def grid(html: str):
    return table_grid(first_table(html))


def test_rowspan_and_colspan_expand_to_full_rows():
    g = grid(
        "<table><thead><tr><th rowspan=2>Region</th><th colspan=2>Sales</th></tr>"
        "<tr><th>2023</th><th>2024</th></tr></thead>"
        "<tbody><tr><td rowspan=2>North</td><td>1</td><td>2</td></tr>"
        "<tr><td>3</td><td>4</td></tr>"
        "<tr><td colspan=3>total 10</td></tr></tbody></table>"
    )
    assert g.header == ("Region", "Sales / 2023", "Sales / 2024")
    assert g.rows == (("North", "1", "2"), ("North", "3", "4"),
                      ("total 10", "total 10", "total 10"))  # fmt: skip
    assert (g.n_rows, g.n_cols) == (3, 3)


def test_th_rows_are_the_header_and_ragged_rows_are_padded():
    g = grid("<table><tr><th>a</th><th>b</th></tr><tr><td>1</td></tr><tr><td>2<td>3</tr></table>")
    assert g.header == ("a", "b") and g.rows == (("1", ""), ("2", "3"))
    g = grid("<table><tr><td>x</td><td>y</td></tr></table>")  # no header at all
    assert g.header == () and g.rows == (("x", "y"),)


def test_rowspan_past_the_last_cell_of_a_row():
    g = grid("<table><tr><td>a</td><td rowspan=2>b</td></tr><tr><td>c</td></tr></table>")
    assert g.rows == (("a", "b"), ("c", "b"))
    g = grid("<table><tr><td rowspan=2>a</td><td rowspan=2>b</td></tr><tr></tr></table>")
    assert g.rows == (("a", "b"), ("a", "b"))


def part(page, html, first=True, last=True, bbox=None):
    return TablePart(page, html, grid(html), bbox, first, last)


HEAD = "<tr><th>Name</th><th>Qty</th></tr>"
T1 = f"<table>{HEAD}<tr><td>a</td><td>1</td></tr></table>"
T2_NO_HEAD = "<table><tr><td>b</td><td>2</td></tr></table>"
T2_SAME_HEAD = f"<table>{HEAD}<tr><td>b</td><td>2</td></tr></table>"
T2_HEAD_AS_ROW = "<table><tr><td>name</td><td>QTY</td></tr><tr><td>b</td><td>2</td></tr></table>"
T2_OTHER_HEAD = "<table><tr><th>City</th><th>Pop</th></tr><tr><td>b</td><td>2</td></tr></table>"
T2_THREE_COLS = "<table><tr><td>b</td><td>2</td><td>x</td></tr></table>"


@pytest.mark.parametrize("second", [T2_NO_HEAD, T2_SAME_HEAD, T2_HEAD_AS_ROW])
def test_a_continued_table_is_one_table(second):
    [table] = merge_tables([part(1, T1, bbox={"x0": 1}), part(2, second, bbox={"x0": 2})])
    row = table.to_row()
    assert row["page_numbers"] == [1, 2]
    assert row["header"] == ["Name", "Qty"]
    assert row["rows"] == [["a", "1"], ["b", "2"]]
    assert (row["n_rows"], row["n_cols"], row["table_index"]) == (2, 2, 0)
    assert row["bbox"] == {"x0": 1}  # the first part's
    assert first_table(row["html"]) is not None and table_grid(first_table(row["html"])).rows == (
        ("a", "1"), ("b", "2"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("parts", "pages"),
    [
        ([part(1, T1), part(2, T2_OTHER_HEAD)], [[1], [2]]),  # another header: another table
        ([part(1, T1), part(2, T2_THREE_COLS)], [[1], [2]]),  # column count differs
        ([part(1, T1, last=False), part(2, T2_NO_HEAD)], [[1], [2]]),  # text after it
        ([part(1, T1), part(2, T2_NO_HEAD, first=False)], [[1], [2]]),  # text before it
        ([part(1, T1), part(3, T2_NO_HEAD)], [[1], [3]]),  # a page between
        ([part(1, T1), part(1, T2_NO_HEAD)], [[1], [1]]),  # two tables on one page
        ([part(1, T1), part(2, T2_NO_HEAD), part(3, T2_SAME_HEAD)], [[1, 2, 3]]),  # a chain
    ],
)
def test_when_tables_merge(parts, pages):
    tables = merge_tables(parts)
    assert [t.page_numbers for t in tables] == pages
    assert [t.table_index for t in tables] == list(range(len(pages)))
