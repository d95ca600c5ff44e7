"""OCR answers (markdown) to safe HTML with markdown-it-py.

CommonMark plus pipe tables, with:
- raw HTML off: `<script>` in an answer stays visible text;
- links and images inert: a report must not link out or load anything, so a link renders as
  its text (`<span class="md-link" title="URL">`) and an image as `[image: ALT]`; every URL is
  accepted for that (it only ever lands escaped in a `title`);
- headings as `<div class="md-h md-hN">` (an answer's `#` must not outrank the report's own
  headings), soft line breaks as `<br>` (OCR lines are lines), quotes nested at most
  `MAX_QUOTE_DEPTH` deep (deeper `>` still renders its text, without more boxes), and
  markdown-it's nesting limit against hostile depth.
"""

from __future__ import annotations

from functools import cache

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml

MAX_QUOTE_DEPTH = 4
MAX_NESTING = 20  # markdown-it stops nesting blocks here (hostile `> > > ...`)


def _heading_open(self, tokens, idx, options, env) -> str:
    return f'<div class="md-h md-{tokens[idx].tag}">'


def _heading_close(self, tokens, idx, options, env) -> str:
    return "</div>"


def _link_open(self, tokens, idx, options, env) -> str:
    href = tokens[idx].attrGet("href") or ""
    return f'<span class="md-link" title="{escapeHtml(str(href))}">'


def _link_close(self, tokens, idx, options, env) -> str:
    return "</span>"


def _image(self, tokens, idx, options, env) -> str:
    alt = self.renderInlineAsText(tokens[idx].children or [], options, env)
    return f'<span class="md-img">[image: {escapeHtml(alt)}]</span>'


def _table_open(self, tokens, idx, options, env) -> str:
    return '<table class="md-table">'


def _quote_open(self, tokens, idx, options, env) -> str:
    env["quote_depth"] = env.get("quote_depth", 0) + 1
    return "<blockquote>" if env["quote_depth"] <= MAX_QUOTE_DEPTH else ""


def _quote_close(self, tokens, idx, options, env) -> str:
    env["quote_depth"] -= 1
    return "</blockquote>" if env["quote_depth"] < MAX_QUOTE_DEPTH else ""


@cache
def _parser() -> MarkdownIt:
    md = MarkdownIt(
        "commonmark", {"html": False, "breaks": True, "xhtmlOut": False, "maxNesting": MAX_NESTING}
    ).enable("table")
    md.validateLink = lambda url: True  # links and images never become href/src (see above)
    md.add_render_rule("heading_open", _heading_open)
    md.add_render_rule("heading_close", _heading_close)
    md.add_render_rule("link_open", _link_open)
    md.add_render_rule("link_close", _link_close)
    md.add_render_rule("image", _image)
    md.add_render_rule("table_open", _table_open)
    md.add_render_rule("blockquote_open", _quote_open)
    md.add_render_rule("blockquote_close", _quote_close)
    return md


def render_markdown(text: str | None) -> str:
    """Markdown to HTML fit to sit inside the report (see the module docstring)."""
    if not text or not text.strip():
        return ""
    return _parser().render(text.replace("\x00", ""), {}).strip()
