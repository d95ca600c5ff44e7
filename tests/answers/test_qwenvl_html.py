# ruff: noqa: E501, RUF001  (the cookbook answer is quoted as published: one element a line, its Chinese punctuation)
"""QwenVL HTML answers → blocks: the published format (Qwen3-VL cookbook output, Qwen2.5-VL
example) and what models really emit (fences, unclosed tags, loose text, broken boxes)."""

from __future__ import annotations

import pytest

from vlbeam.transforms.answers.blocks import CATEGORIES, PageFrame, grid_to_page, parse_box
from vlbeam.transforms.answers.html_tree import parse_html
from vlbeam.transforms.answers.markdown_blocks import parse_markdown
from vlbeam.transforms.answers.qwenvl_html import parse_qwenvl_html, strip_code_fence

# The Qwen3-VL cookbook's answer to `qwenvl html` (document_parsing.ipynb output cell, as
# copied in /work/notes/presets.md §4), the elided table rows filled with real cells.
COOKBOOK_QWEN3 = """<html><body><div class="image" data-bbox="104 29 455 75"></div>
<div class="image" data-bbox="15 49 46 142"></div>
<div class="text" data-bbox="91 101 346 127">宇通客车 (600066)</div>
<div class="text" data-bbox="91 140 489 167">7月销量转正，T7前景看好</div>
<div class="table" data-bbox="108 298 386 446"><table><tr><td>行业</td><td>汽车和汽车零部件</td></tr><tr><td>公司网址</td><td>www.yutong.com</td></tr></table></div>
<div class="text" data-bbox="410 209 519 230">投资要点</div>
<div class="table" data-bbox="409 765 932 930"><table><thead><tr><th></th><th>2015A</th><th>2016A</th></tr></thead><tbody><tr><td>营业收入</td><td>312</td><td>359</td></tr></tbody></table></div>
<div class="text" data-bbox="766 52 928 89">汽车和汽车零部件
2017 年 08 月 05 日</div></body></html>"""

# The Qwen2.5-VL cookbook's example (upstream QwenLM/Qwen3-VL@a065f96), abridged.
COOKBOOK_QWEN25 = """<html><body>
<h2 data-bbox="310 94 658 132">Qwen2.5 Technical Report</h2>
 <p data-bbox="427 154 542 182">Qwen Team</p>
 <div class="image" data-bbox="262 195 708 272"><img data-bbox="262 195 708 272"/></div>
 <h2 data-bbox="436 289 533 317">Abstract</h2>
 <p data-bbox="99 339 869 565">In this report, we introduce Qwen2.5, a comprehensive series.</p>
 <ol><li data-bbox="99 580 869 600">first point</li><li data-bbox="99 602 869 640">second</li></ol>
 <div class="formula machine_printed" data-bbox="300 650 700 690">E = m c^2</div>
 <div class="image caption" data-bbox="262 275 708 285">Figure 1: the models</div>
</body></html>"""


def test_qwen3_cookbook_answer_gives_its_blocks_in_order():
    page = parse_qwenvl_html(COOKBOOK_QWEN3)
    assert [b.category for b in page.blocks] == [
        "figure", "figure", "paragraph", "paragraph", "table", "paragraph", "table", "paragraph",
    ]  # fmt: skip
    assert page.blocks[2].text == "宇通客车 (600066)"
    assert page.blocks[2].box == (91, 101, 346, 127)
    assert page.blocks[7].text == "汽车和汽车零部件\n2017 年 08 月 05 日"  # its line kept
    table = page.blocks[6]
    assert table.html.startswith("<table><thead>") and "营业收入" in table.html
    assert table.text.splitlines() == ["|  | 2015A | 2016A |", "|---|---|---|",
                                       "| 营业收入 | 312 | 359 |"]  # fmt: skip
    assert page.bad_boxes == 0 and page.missing_boxes == 0
    assert "宇通客车 (600066)\n\n7月销量转正" in page.markdown
    assert "<div" not in page.markdown and "data-bbox" not in page.markdown


def test_qwen25_cookbook_answer_tags_and_classes():
    page = parse_qwenvl_html(COOKBOOK_QWEN25)
    cats = [(b.category, b.text) for b in page.blocks]
    assert cats == [
        ("heading", "## Qwen2.5 Technical Report"),
        ("paragraph", "Qwen Team"),
        ("figure", ""),
        ("heading", "## Abstract"),
        ("paragraph", "In this report, we introduce Qwen2.5, a comprehensive series."),
        ("list", "1. first point\n2. second"),
        ("formula", "$$\nE = m c^2\n$$"),
        ("caption", "Figure 1: the models"),
    ]
    by_cat = {b.category: b for b in page.blocks}
    assert by_cat["list"].box == (99, 580, 869, 640)  # the <ol> has none: its items' union
    assert by_cat["formula"].html.startswith('<div class="formula machine_printed"')
    assert all(b.category in CATEGORIES for b in page.blocks)


def test_labels_for_furniture_and_chandra_style_labels():
    answer = (
        '<div data-label="Page-Header" data-bbox="0 0 1000 30">ACME report</div>'
        '<div data-label="Section-Header" data-bbox="0 40 1000 60">Results</div>'
        '<div class="footnote" data-bbox="0 900 1000 930">1. A note</div>'
        '<div class="page_number" data-bbox="480 960 520 990">7</div>'
        '<div class="footer" data-bbox="0 940 400 960">Confidential</div>'
        '<pre data-bbox="0 100 500 200">x = 1</pre>'
        '<div data-label="Equation-Block" data-bbox="0 210 500 260">a^2+b^2</div>'
        '<div class="music sheet" data-bbox="0 300 500 400">♩</div>'
        '<h1 data-bbox="0 5 10 10">Annual</h1>'
    )
    cats = [b.category for b in parse_qwenvl_html(answer).blocks]
    assert cats == ["header", "heading", "footnote", "page_number", "footer", "code",
                    "formula", "other", "title"]  # fmt: skip


@pytest.mark.parametrize(
    "fenced",
    [
        "```html\n<p data-bbox='1 2 3 4'>Hi</p>\n```",
        "Here is the page:\n```html\n<p data-bbox='1 2 3 4'>Hi</p>\n```\nDone.",
        "```\n<p data-bbox='1 2 3 4'>Hi</p>",  # never closed
    ],
)
def test_code_fences_and_prose_around_them(fenced):
    [block] = parse_qwenvl_html(fenced).blocks
    assert (block.category, block.text, block.box) == ("paragraph", "Hi", (1, 2, 3, 4))
    assert strip_code_fence("<p>no fence</p>") == "<p>no fence</p>"


def test_unclosed_tags_and_text_outside_elements():
    answer = (
        "Loose intro text\n"
        '<html><body><p data-bbox="10 10 500 40">First para'
        '<p data-bbox="10 50 500 80">Second <b>bold</b>'
        '<div class="table" data-bbox="10 100 900 300"><table><tr><td>a<td>b<tr><td>c<td>d'
        "</table></div>"
        "trailing words after the table"
        '<ul data-bbox="10 400 500 500"><li>one<li>two</ul>'
        "</span></div>"  # stray end tags
        '<h2 data-bbox="10 600 500 640">Unclosed heading'
    )
    page = parse_qwenvl_html(answer)
    got = [(b.category, b.text) for b in page.blocks]
    assert got == [
        ("paragraph", "Loose intro text"),
        ("paragraph", "First para"),
        ("paragraph", "Second **bold**"),
        ("table", "| a | b |\n|---|---|\n| c | d |"),
        ("paragraph", "trailing words after the table"),
        ("list", "- one\n- two"),
        ("heading", "## Unclosed heading"),
    ]
    assert page.blocks[0].box is None and page.blocks[4].box is None
    assert page.missing_boxes == 2


@pytest.mark.parametrize(
    ("value", "box", "why"),
    [
        ("10 20 30 40", (10, 20, 30, 40), None),
        ("[10, 20, 30, 40]", (10, 20, 30, 40), None),
        ("30 40 10 20", (10, 20, 30, 40), None),  # corners swapped
        ("-5 0 1010 1000", (0, 0, 1000, 1000), None),  # a hair off the grid: clamped
        ("10 20 30", None, "malformed"),
        ("a b c d", None, "malformed"),
        ("", None, "missing"),
        ("0 0 1920 1080", None, "off_grid"),  # pixels, not the grid
        ("10 10 10 40", None, "empty"),
        ("10 20 30 20 30 40 10 40", (10, 20, 30, 40), None),  # a polygon
        ("nan 1 2 3", None, "malformed"),
    ],
)
def test_parse_box(value, box, why):
    assert parse_box(value) == (box, why)


def test_broken_boxes_keep_the_block_and_are_counted():
    answer = (
        '<p data-bbox="1 2 3">short</p><p data-bbox="0 0 4000 3000">pixels</p>'
        '<p data-bbox="5 5 50 50">fine</p><p>none</p>'
    )
    page = parse_qwenvl_html(answer)
    assert [(b.text, b.box) for b in page.blocks] == [
        ("short", None), ("pixels", None), ("fine", (5, 5, 50, 50)), ("none", None)
    ]  # fmt: skip
    assert (page.bad_boxes, page.missing_boxes) == (2, 1)


def test_garbage_and_empty_answers_never_raise():
    assert parse_qwenvl_html(None).blocks == ()
    assert parse_qwenvl_html("   ").markdown == ""
    page = parse_qwenvl_html("<<<>>> </div></p> <table><tr><td rowspan=x colspan=99999>z")
    assert page.blocks  # something readable came out
    table = next(b for b in page.blocks if b.category == "table")
    assert table.text.count("z") == 1000  # colspan capped at tables.MAX_SPAN


def test_html_tree_entities_and_void_elements():
    root = parse_html("<p>a &amp; b<br>c<img src=x>d</p>")
    [p] = root.elements()
    assert p.text() == "a & b\ncd"
    assert [e.tag for e in p.elements()] == ["br", "img"]


@pytest.mark.parametrize(
    ("frame", "want"),
    [
        (PageFrame(612, 792, "pt"), {"x0": 61.2, "y0": 79.2, "x1": 306.0, "y1": 792.0}),
        (PageFrame(792, 612, "pt"), {"x0": 79.2, "y0": 61.2, "x1": 396.0, "y1": 612.0}),
        (PageFrame(4000, 3000, "px"), {"x0": 400.0, "y0": 300.0, "x1": 2000.0, "y1": 3000.0}),
    ],
)
def test_grid_to_page(frame, want):
    assert grid_to_page((100, 100, 500, 1000), frame) == want


def test_markdown_blocks():
    answer = (
        "# Report\n\nSome text\nover two lines.\n\n## Part 2\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "<!-- Image (100, 200, 300, 400) -->\n\n![a chart](x.png)\n\n- x\n- y\n\n"
        "$$\nx^2\n$$\n\n```python\nprint(1)\n```\n\n"
        "<!-- Table (10, 20, 30, 40) -->\n<table><tr><th>h</th></tr><tr><td>v</td></tr></table>\n"
    )
    page = parse_markdown(answer)
    got = [(b.category, b.box) for b in page.blocks]
    assert got == [
        ("title", None), ("paragraph", None), ("heading", None), ("table", None),
        ("figure", (100, 200, 300, 400)), ("figure", None), ("list", None), ("formula", None),
        ("code", None), ("table", (10, 20, 30, 40)),
    ]  # fmt: skip
    assert page.blocks[1].text == "Some text\nover two lines."  # the source lines, exactly
    assert "<th>a</th>" in page.blocks[3].html
    assert page.markdown == answer.strip()
