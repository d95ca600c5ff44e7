# ruff: noqa: E501, RUF001  (answers written out verbatim: long lines, the sample's en dash)
"""The answer parsers of the model presets, on answers in each model's published format and on
damaged ones: a parse failure keeps the raw answer and is flagged, never lost."""

from __future__ import annotations

import re

import pytest

from vlbeam.schemas.config import PagePolicy
from vlbeam.schemas.elements import PageRef, Provenance, VLResult
from vlbeam.transforms.answers.chandra_html import ChandraFormatError, parse_chandra
from vlbeam.transforms.answers.nanonets_tags import parse_nanonets
from vlbeam.transforms.answers.olmocr_front_matter import FrontMatterError, parse_olmocr
from vlbeam.transforms.answers.preset_answers import needs_rotation, parse_answer
from vlbeam.transforms.answers.preset_blocks import CATEGORIES, parse_grid_box
from vlbeam.transforms.ocr import page_row

# allenai/olmocr @ f7cfe4c tests/sample_dataset/simple_document/edgar.md (truncated)
EDGAR = (
    "---\nprimary_language: en\nis_rotation_valid: True\nrotation_correction: 0\n"
    "is_table: True\nis_diagram: False\n---\n"
    "Edgar (or Eadgar;[1] c. 944 – 8 July 975) was King of the English from 959 until his "
    "death in 975.\n"
)


def olmocr(language="en", valid="True", rotation="0", table="False", diagram="False", text="T"):
    return (
        f"---\nprimary_language: {language}\nis_rotation_valid: {valid}\n"
        f"rotation_correction: {rotation}\nis_table: {table}\nis_diagram: {diagram}\n---\n{text}"
    )


def test_olmocr_published_answer():
    page = parse_olmocr(EDGAR)
    assert page.meta() == {
        "primary_language": "en",
        "is_rotation_valid": True,
        "rotation_correction": 0,
        "is_table": True,
        "is_diagram": False,
    }
    assert page.text.startswith("Edgar (or Eadgar;[1]") and page.text.endswith("in 975.")


def test_olmocr_coercions_follow_its_parser():
    # lower-case booleans, quoted numbers, "no" (Norwegian) read by YAML as False -> None
    page = parse_olmocr(olmocr(language="no", valid="false", rotation="'90'", table="'TRUE'"))
    assert page.primary_language is None and page.is_rotation_valid is False
    assert page.rotation_correction == 90 and page.is_table is True
    assert parse_olmocr(olmocr(language="null")).primary_language is None
    # a blank page: front matter only (olmOCR's guided regex allows a bare closing ---)
    assert parse_olmocr(olmocr(text="")).text == ""


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("Just some text, no front matter.", "does not start"),
        ("---\nprimary_language: en\nis_table: false\n", "not closed"),
        (olmocr().replace("is_diagram: False\n", ""), "missing ['is_diagram']"),
        (olmocr().replace("---\nprim", "---\nconfidence: 3\nprim"), "unexpected ['confidence']"),
        (olmocr(rotation="45"), "rotation_correction must be one of"),
        (olmocr(rotation="left"), "must be an integer"),
        (olmocr(table="[1, 2]"), "must be a boolean"),
        ("---\nprimary_language: [en\n---\ntext", "not YAML"),
        ("---\n- a list\n---\ntext", "not a mapping"),
    ],
)
def test_olmocr_damaged_answers_fail_clearly(answer, why):
    with pytest.raises(FrontMatterError, match=re.escape(why)):
        parse_olmocr(answer)
    parsed = parse_answer("olmocr-yaml", answer)
    assert not parsed.ok and parsed.text == answer and parsed.page_meta is None


def test_rotation_is_read_only_from_a_valid_front_matter():
    assert needs_rotation("olmocr-yaml", olmocr(valid="False", rotation="90")) == 90
    assert needs_rotation("olmocr-yaml", olmocr(valid="false", rotation="270")) == 270
    assert needs_rotation("olmocr-yaml", olmocr(valid="True", rotation="90")) is None
    assert needs_rotation("olmocr-yaml", "garbage") is None
    assert needs_rotation("markdown", olmocr(valid="False", rotation="90")) is None


# A Chandra 2 answer in its published format (prompt: "a div with the data-bbox attribute
# ... in x0 y0 x1 y1 format ... normalized 0-1000", labels and tags from its prompt)
CHANDRA2 = """<div data-bbox="80 40 920 90" data-label="Page-Header"><p>Annual Report 2024</p></div>
<div data-bbox="100 100 900 150" data-label="Section-Header"><h1>Results</h1></div>
<div data-bbox="100 160 900 240" data-label="Text"><p>Revenue grew by <b>12%</b> to <math>x^2</math> units.<br>Second line.</p></div>
<div data-bbox="100 250 900 400" data-label="Table"><table><tr><th colspan="2">Q1</th></tr><tr><td>a</td><td>b</td></tr></table></div>
<div data-bbox="100 410 500 600" data-label="Image"><img alt="A bar chart of revenue"/></div>
<div data-bbox="100 610 900 640" data-label="Caption"><p>Figure 1: Revenue.</p></div>
<div data-bbox="100 650 900 700" data-label="Equation-Block"><p><math display="block">E = mc^2</math></p></div>
<div data-bbox="100 710 900 780" data-label="List-Group"><ul><li>first</li><li>second <input type="checkbox" checked></li></ul></div>
<div data-bbox="100 790 900 820" data-label="Chemical-Block"><chem>CCO</chem></div>
<div data-bbox="450 950 550 980" data-label="Page-Footer"><p>7</p></div>"""


def test_chandra_published_answer_to_markdown_and_blocks():
    markdown, blocks = parse_chandra(CHANDRA2, grid=1000)
    assert [b.category for b in blocks] == [
        "header", "title", "paragraph", "table", "figure", "caption", "formula", "list",
        "other", "footer",
    ]  # fmt: skip
    assert all(b.category in CATEGORIES for b in blocks)
    assert blocks[1].box == (100.0, 100.0, 900.0, 150.0)
    assert markdown.split("\n\n") == [
        "# Results",
        "Revenue grew by **12%** to $x^2$ units.\nSecond line.",
        '<table><tr><th colspan="2">Q1</th></tr><tr><td>a</td><td>b</td></tr></table>',
        "![A bar chart of revenue]()",
        "Figure 1: Revenue.",
        "$$E = mc^2$$",
        "- first\n- second ☑",
        "CCO",
    ]  # headers and footers are blocks, not text (Chandra's own markdown leaves them out)
    assert blocks[3].html.startswith("<table>") and blocks[4].text == "A bar chart of revenue"


def test_chandra_1_boxes_on_its_1024_grid():
    answer = '<div data-bbox="[0, 512, 1024, 1024]" data-label="Text"><p>x</p></div>'
    _, [block] = parse_chandra(answer, grid=1024)
    assert block.box == (0.0, 500.0, 1000.0, 1000.0)
    assert parse_grid_box("[1, 2, 3]", 1000) is None and parse_grid_box("5 5 5 9", 1000) is None
    assert parse_grid_box("0 0 2000 10", 1000) is None  # far off the grid: pixels, not grid


def test_chandra_damaged_answers():
    with pytest.raises(ChandraFormatError):
        parse_chandra("I cannot read this page.")
    parsed = parse_answer("chandra-html", "plain text")
    assert not parsed.ok and parsed.text == "plain text"
    # cut off mid-block (max tokens): what was written is kept, the open tags closed
    cut = '<div data-bbox="1 2 3 4" data-label="Text"><p>first</p></div><div data-label="Te'
    markdown, blocks = parse_chandra(cut + 'xt" data-bbox="1 2 3 4"><p>second <b>bold')
    assert markdown == "first\n\nsecond **bold**" and len(blocks) == 2
    # an unknown label and a missing box: kept as other, no box
    _, [block] = parse_chandra('<div data-label="Marginalia"><p>note</p></div>')
    assert block.category == "other" and block.box is None and block.text == "note"


# A Nanonets-OCR2 answer with every tag of its model card
NANONETS = """# Invoice 1042

Billed to ACME Corp. Signed: <signature>J. Smith</signature>

<img>A company logo: a blue circle</img>

<table>
<tr><th>Item</th><th>Price</th></tr>

<tr><td>Widget</td><td>$4</td></tr>
</table>

$$total = 4$$

- ☑ paid
- ☐ shipped

<watermark>OFFICIAL COPY</watermark>

<page_number>9/22</page_number>"""


def test_nanonets_published_format():
    markdown, blocks = parse_nanonets(NANONETS)
    assert [b.category for b in blocks] == [
        "title",
        "other",
        "paragraph",
        "figure",
        "table",
        "formula",
        "list",
        "other",
        "page_number",
    ]  # fmt: skip  (signature and watermark: other)
    assert blocks[1].text == "J. Smith" and blocks[8].text == "9/22"
    assert markdown.split("\n\n")[:3] == [
        "# Invoice 1042",
        "Billed to ACME Corp. Signed: J. Smith",
        "![A company logo: a blue circle]()",
    ]
    assert "<tr><td>Widget</td><td>$4</td></tr>" in markdown  # the table whole, as HTML
    assert "OFFICIAL COPY" not in markdown and "9/22" not in markdown  # furniture: blocks
    tags = set(re.findall(r"</?(\w+)", markdown))
    assert tags == {"table", "tr", "th", "td"}  # no semantic tag left in the text


def test_nanonets_damaged_answer_keeps_its_text():
    markdown, blocks = parse_nanonets("Text with <img>an unclosed tag\n\nand more")
    assert "an unclosed tag" in markdown and "and more" in markdown
    assert [b.category for b in blocks] == ["paragraph", "paragraph"]


REF = PageRef("d" * 64, "file:///x.pdf", 1, 100, 100)
PROV = Provenance("m", "openai", "p", "r1")


def test_page_rows_take_parsed_text_and_meta_or_flag_the_raw_answer():
    policy = PagePolicy(answer_format="olmocr-yaml", rotation_retry=True)
    ok = page_row(REF, VLResult(text=EDGAR, finish_reason="stop", rotation=90), PROV, policy)
    assert ok["text"].startswith("Edgar") and "---" not in ok["text"]
    assert ok["page_meta"] == {
        "primary_language": "en", "is_rotation_valid": True, "rotation_correction": 0,
        "is_table": True, "is_diagram": False, "rotation": 90,
    }  # fmt: skip
    assert ok["quality_flags"] == []
    bad = page_row(REF, VLResult(text="no front matter", finish_reason="stop"), PROV, policy)
    assert bad["text"] == "no front matter" and bad["page_meta"] is None
    assert bad["quality_flags"] == ["unparsed"]
    # vlbeam's default format: the answer is the text, no metadata, never "unparsed"
    plain = page_row(REF, VLResult(text="# Title", finish_reason="stop"), PROV)
    assert plain["text"] == "# Title" and plain["page_meta"] is None
    assert plain["quality_flags"] == []
