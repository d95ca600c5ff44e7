"""`vlbeam report DIR [--run RUN_ID] -o report.html`: build the report and write it."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from vlbeam.outputs.report.collect import collect
from vlbeam.outputs.report.load import load_run
from vlbeam.outputs.report.model import Report, ReportLimits
from vlbeam.outputs.report.render import render_html
from vlbeam.outputs.report.thumbnails import add_thumbnails


def build_report(
    output: str,
    destination: str,
    run_id: str | None = None,
    limits: ReportLimits | None = None,
    source_root: str | None = None,
    prompt_text: Callable[[str], str | None] | None = None,
) -> Report:
    """Collect, add thumbnails, render and write the report; `prompt_text` gives a built-in
    prompt's text by id (the job's prompts live in `pipeline/`, which this layer can't import)."""
    report = collect(load_run(output, run_id), limits)
    if prompt_text is not None:
        for pid in report.summary.prompt_ids:
            text = prompt_text(pid) if re.fullmatch(r"[a-z0-9_]+", pid or "") else None
            if text:
                report.prompt_texts[pid] = text
    add_thumbnails(report, source_root)
    data = render_html(report).encode("utf-8")
    if "://" in destination:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(destination, mime_type="text/html") as handle:
            handle.write(data)
    else:
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        Path(destination).write_bytes(data)
    report.thumb_stats["html_bytes"] = len(data)
    return report


def main(argv: list[str], prompt_text: Callable[[str], str | None] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vlbeam report",
        description="Write one self-contained HTML QA report of a run (no server, no external "
        "URL): summary, suspects first, pages beside their OCR text, video timelines.",
    )
    d = ReportLimits()
    parser.add_argument("dir", help="the job's --output folder (local, gs://, s3://)")
    parser.add_argument("-o", "--output", required=True, help="the HTML file to write")
    parser.add_argument("--run", default=None, help="run id (default: the latest run)")
    parser.add_argument(
        "--source-root",
        default=None,
        help="folder that relative source_uris are resolved against (default: the current folder)",
    )
    parser.add_argument("--no-thumbnails", action="store_true")
    parser.add_argument("--max-documents", type=int, default=d.max_documents)
    parser.add_argument("--max-pages-per-document", type=int, default=d.max_pages_per_document)
    parser.add_argument("--max-videos", type=int, default=d.max_videos)
    parser.add_argument("--max-rows", type=int, default=d.max_rows, help="rows per suspect table")
    parser.add_argument("--max-text-chars", type=int, default=d.max_text_chars)
    parser.add_argument("--max-thumbnail-mb", type=float, default=d.max_thumbnail_bytes / 1e6)
    parser.add_argument(
        "--thumbnail-size", type=int, default=d.thumb_long_side, help="long side of thumbnails, px"
    )
    args = parser.parse_args(argv)
    try:
        limits = ReportLimits(
            max_documents=args.max_documents,
            max_pages_per_document=args.max_pages_per_document,
            max_videos=args.max_videos,
            max_rows=args.max_rows,
            max_text_chars=args.max_text_chars,
            thumbnails=not args.no_thumbnails,
            max_thumbnail_bytes=int(args.max_thumbnail_mb * 1e6),
            thumb_long_side=args.thumbnail_size,
        )
        report = build_report(
            args.dir, args.output, args.run, limits, args.source_root, prompt_text
        )
    except (ValueError, OSError) as exc:
        print(f"vlbeam report: {exc}", file=sys.stderr)
        return 2
    s, stats = report.summary, report.thumb_stats
    print(
        f"{args.output}: run {report.run_id}, {s.documents} documents, {s.failures} "
        f"failures, {stats.get('made', 0)} thumbnails, {stats['html_bytes'] / 1e6:.2f} MB"
    )
    return 0
