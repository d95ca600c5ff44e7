"""`vlbeam report DIR [--run RUN_ID] -o report.html`: one self-contained HTML QA report of a run.

The file holds everything inline (CSS, one small script, thumbnails as `data:` URIs) and names
no external URL: it opens from a laptop or straight from a bucket, with no server. A
Content-Security-Policy in the page allows only its own script (by hash), inline styles and
`data:` images, so nothing in it can load or send anything even if it tried.

How it is built, in three steps that tests can call one by one:

1. `load_run(DIR, run_id)` (load.py) reads the run's partition of every table and its manifest
   (where they are: `outputs/layout.py`). Heavy text columns are not read here.
2. `collect(run, limits)` (collect.py; videos.py for the timelines) computes the summary over
   *all* rows, then picks what to show: suspects first (failures, pages cut off by
   --max-new-tokens, pages with quality flags, partial and failed documents), then documents,
   each bounded (`ReportLimits`), with counts of what was left out. Only the chosen pages' text
   is read back from Parquet. What it returns is typed, frozen views (views.py), which the
   templates read by attribute.
3. `add_thumbnails(report, ...)` (thumbnails.py) re-renders thumbnails from each document's
   `source_uri` at report time, in vlbeam's helper process, within a byte and a time budget;
   a source that is gone or changed since the run gets a placeholder saying so.
   `render_html(report)` (render.py) then turns the data into the HTML string through Jinja2
   templates with autoescaping (pure; OCR markdown through markdown-it-py with raw HTML off,
   markdown.py).

The report's size is bounded by `ReportLimits`, whatever the run's size: the thumbnail byte
budget, plus per shown page its answer (twice: rendered and raw) and text layer, each cut to
`max_text_chars`, plus the suspect tables (`max_rows` each) and the video timelines (videos x
query timelines x spans, descriptions cut to 300 characters).
"""

from vlbeam.outputs.report.cli import build_report, main
from vlbeam.outputs.report.collect import collect, quality_flags
from vlbeam.outputs.report.load import RunData, load_run, read_rows
from vlbeam.outputs.report.markdown import MAX_QUOTE_DEPTH, render_markdown
from vlbeam.outputs.report.model import Report, ReportLimits
from vlbeam.outputs.report.render import render_html
from vlbeam.outputs.report.thumbnails import Thumbnailer, add_thumbnails, resolve_source
from vlbeam.outputs.report.views import (
    Document,
    DocumentView,
    Failure,
    FlaggedPage,
    PageRow,
    PageView,
    Span,
    Summary,
    Thumb,
    Timeline,
    Truncated,
    VideoView,
    WindowView,
)

__all__ = [
    "MAX_QUOTE_DEPTH",
    "Document",
    "DocumentView",
    "Failure",
    "FlaggedPage",
    "PageRow",
    "PageView",
    "Report",
    "ReportLimits",
    "RunData",
    "Span",
    "Summary",
    "Thumb",
    "Thumbnailer",
    "Timeline",
    "Truncated",
    "VideoView",
    "WindowView",
    "add_thumbnails",
    "build_report",
    "collect",
    "load_run",
    "main",
    "quality_flags",
    "read_rows",
    "render_html",
    "render_markdown",
    "resolve_source",
]
