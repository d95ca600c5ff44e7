"""A document's pages → document_text: order, markers, exact spans, missing pages, and running
headers/footers/page numbers removed (labelled, or repeated at the edges of most pages)."""

from __future__ import annotations

from vlbeam.transforms.answers.document_text import PageText, assemble, normalise_line


def page(n, *blocks):
    return PageText(n, tuple(blocks))


def test_pages_in_order_with_markers_and_exact_spans():
    pages = [page(2, ("paragraph", "Second page.")), page(1, ("title", "# One"),
             ("paragraph", "First page."))]  # fmt: skip
    doc = assemble(pages, num_pages=2)
    assert doc["text"] == "<!-- page 1 -->\n# One\n\nFirst page.\n\n<!-- page 2 -->\nSecond page."
    assert [doc["text"][s["start"] : s["end"]] for s in doc["page_spans"]] == [
        "# One\n\nFirst page.", "Second page.",
    ]  # fmt: skip
    assert doc["status"] == "complete" and doc["missing_pages"] == [] and doc["removed"] == []


def test_missing_pages_keep_their_marker_and_make_it_partial():
    doc = assemble([page(1, ("paragraph", "a")), page(4, ("paragraph", "d"))], 5, [2])
    assert doc["missing_pages"] == [2, 3, 5] and doc["status"] == "partial"
    assert "<!-- page 3 missing -->" in doc["text"] and "<!-- page 5 missing -->" in doc["text"]
    assert [s["page_number"] for s in doc["page_spans"]] == [1, 4]
    assert [doc["text"][s["start"] : s["end"]] for s in doc["page_spans"]] == ["a", "d"]


def test_labelled_furniture_is_removed_once_each():
    pages = [
        page(n, ("header", "ACME Annual Report"), ("paragraph", f"Body {n}."),
             ("page_number", str(n)))
        for n in (1, 2)
    ]  # fmt: skip
    doc = assemble(pages, 2)
    assert "ACME" not in doc["text"] and "Body 1." in doc["text"]
    assert doc["removed"] == ["ACME Annual Report", "1", "2"]


BODY = ["Zero", "Line of body text", "Soil samples were dried", "then weighed", "twice over",
        "by two people", "in one room", "with one scale", "and a pencil"]  # fmt: skip


def test_repeated_edge_lines_are_removed_with_page_numbers_normalised():
    pages = [
        page(n, ("paragraph", f"Chapter Two — Methods\n{BODY[n]} 7.\n{BODY[-n]}\nPage {n} of 6"))
        for n in range(1, 7)
    ]  # fmt: skip
    pages[2] = page(3, ("paragraph", "A page without the running head.\nPage 3 of 6"))
    doc = assemble(pages, 6)
    assert "Chapter Two" not in doc["text"] and "of 6" not in doc["text"]
    assert (
        "Line of body text 7." in doc["text"] and "A page without the running head." in doc["text"]
    )
    assert doc["removed"][:2] == ["Chapter Two — Methods", "Page 1 of 6"]
    for span in doc["page_spans"]:
        assert "<!--" not in doc["text"][span["start"] : span["end"]]


def test_alternating_running_heads_and_a_line_in_the_middle_stays():
    pages = []
    for n in range(1, 9):
        head = "INTRODUCTION" if n % 2 else "FREE CULTURE"
        body = f"{BODY[n]}\nRepeated middle line\n{BODY[-n]}\n{n} {head}"
        pages.append(page(n, ("paragraph", body)))
    doc = assemble(pages, 8)
    assert "INTRODUCTION" not in doc["text"] and "FREE CULTURE" not in doc["text"]
    assert doc["text"].count("Repeated middle line") == 8  # not at an edge: content


def test_short_documents_keep_their_lines():
    pages = [page(n, ("paragraph", "Same first line\nbody")) for n in (1, 2)]
    assert assemble(pages, 2)["text"].count("Same first line") == 2  # under MIN_REPEATS


def test_normalise_line():
    assert normalise_line("  Page 12 of 40 ") == normalise_line("page 3 of 40") == "page # of #"
    assert normalise_line("xiv") == normalise_line("7") == "#"
    assert normalise_line("## **Results**") == "results"
