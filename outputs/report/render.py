"""The report as one self-contained HTML page: Jinja2 templates (autoescaped), the CSS and the
one script shipped as package data beside them, inlined into the page.

The page names no external URL. Its Content-Security-Policy allows only its own script (by the
SHA-256 of the shipped `static/report.js`), inline styles and `data:` images. Every piece of
untrusted text (OCR answers, file names, error messages, queries) reaches the page through
autoescaping; OCR markdown goes through `markdown.render_markdown`, which escapes first, and is
the only value marked safe.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from functools import cache
from importlib import resources

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from vlbeam.outputs.report.markdown import render_markdown
from vlbeam.outputs.report.model import MAX_WINDOWS_DRAWN, Report
from vlbeam.outputs.report.views import Card, Summary, WindowView

DASH = "\u2013"  # en dash: missing values, time ranges
PACKAGE = "vlbeam.outputs.report"


def _static(name: str) -> str:
    return resources.files(PACKAGE).joinpath("static", name).read_text(encoding="utf-8")


@cache
def script() -> str:
    return _static("report.js")


@cache
def css() -> str:
    return _static("report.css")


def content_security_policy() -> str:
    digest = base64.b64encode(hashlib.sha256(script().encode("utf-8")).digest()).decode("ascii")
    return (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


# ------------------------------------------------------------------------------ filters


def fmt_int(value) -> str:
    return DASH if value is None else f"{int(value):,}"


def count_noun(count, noun: str) -> str:
    """`3 pages`, `1 page`; an unknown count is a dash."""
    if count is None:
        return f"{DASH} {noun}s"
    return f"{int(count):,} {noun}" + ("" if count == 1 else "s")


def secs(value: float | None) -> str:
    if value is None:
        return DASH
    value = float(value)
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(value, 60)
    if minutes < 60:
        return f"{int(minutes)} min {seconds:02.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes):02d} min"


def clock(value: float, decimals: int = 1) -> str:
    """Seconds as m:ss.s (or h:mm:ss.s)."""
    tenths = round(max(0.0, float(value)) * 10**decimals)
    whole, frac = divmod(tenths, 10**decimals)
    hours, rest = divmod(whole, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
    if hours:
        text = f"{hours}:{text}"
    return text + (f".{frac:0{decimals}d}" if decimals else "")


def span_text(start: float | None, end: float | None) -> str:
    if start is None or end is None:
        return DASH
    return f"{clock(start)} {DASH} {clock(end)}"


def anchor(prefix: str, doc_id: str | None, unit=None) -> str:
    base = re.sub(r"[^0-9a-zA-Z]", "", doc_id or "")[:16] or "none"
    return f"{prefix}-{base}" + ("" if unit is None else f"-{int(unit)}")


def pct(value: float, duration: float) -> str:
    return f"{max(0.0, min(100.0, value / duration * 100.0)):.4f}%"


def ticks(duration: float) -> list[float]:
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400):
        if duration / step <= 10:
            break
    else:
        step = duration / 10
    return [i * step for i in range(int(duration / step) + 1)]


def window_title(w: WindowView) -> str:
    text = f"window {w.index}: {clock(w.start_s)}{DASH}{clock(w.end_s)} ({w.state})"
    for failure in w.failures:
        text += f"\n{failure.stage} {failure.error_type}: {failure.message[:300]}"
    return text


def markdown(text: str | None) -> Markup:
    return Markup(render_markdown(text))  # escaped by the renderer itself (raw HTML off)


# ------------------------------------------------------------------------------ page


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader(PACKAGE, "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        int=fmt_int, n=count_noun, secs=secs, clock=clock, pct=pct, markdown=markdown,
        window_title=window_title,
    )  # fmt: skip
    env.globals.update(
        DASH=DASH, anchor=anchor, span_text=span_text, ticks=ticks,
        MAX_WINDOWS_DRAWN=MAX_WINDOWS_DRAWN,
    )  # fmt: skip
    return env


def _shown_anchors(report: Report) -> set[str]:
    found = set()
    for view in report.documents:
        did = view.doc.doc_id
        found.add(anchor("d", did))
        found |= {anchor("p", did, p.page_number) for p in view.pages}
    found |= {anchor("v", video.doc.doc_id) for video in report.videos}
    return found


def _link_target(shown: set[str], row, unit=None) -> str | None:
    """The page, document or video shown below that a suspect row (any view with a `doc_id`)
    names, if it is shown."""
    did = row.doc_id
    if not did:
        return None
    targets = [anchor("d", did), anchor("v", did)]
    if unit is not None:
        targets.insert(0, anchor("p", did, unit))
    return next((t for t in targets if t in shown), None)


def _cards(s: Summary) -> list[Card]:
    """The summary cards."""
    status = s.documents_by_status
    pages_detail = f"of {fmt_int(s.pages_expected)} pages"
    if s.pages_failed:
        pages_detail += f"; {s.pages_failed:,} failed"
    cost = s.cost_usd
    cost_detail = ""
    if cost and s.pages_ok:
        cost_detail = f"${cost / s.pages_ok * 1000:,.4f} per 1,000 pages"
    if cost is None:
        cost_detail = cost_detail or "no prices configured"
    flagged = s.pages_flagged
    rows = [
        ("documents", "documents", fmt_int(s.documents),
         " · ".join(f"{n} {k}" for k, n in sorted(status.items())),
         "bad" if status.get("failed") else ("warn" if status.get("partial") else "")),
        ("pages", "pages OCR'd", fmt_int(s.pages_ok), pages_detail,
         "bad" if s.pages_failed else ""),
        ("truncated", "hit --max-new-tokens", fmt_int(s.pages_truncated),
         f"pages (max {s.max_new_tokens})" if s.max_new_tokens else "pages",
         "warn" if s.pages_truncated else ""),
        ("flagged", "quality flags", DASH if flagged is None else fmt_int(flagged),
         "pages" if flagged is not None else "no quality_flags column", "warn" if flagged else ""),
        ("windows", "video windows", fmt_int(s.windows_answered),
         f"answered; {s.windows_failed:,} failed; {count_noun(s.events, 'span')}",
         "bad" if s.windows_failed else ""),
        *_frames_card(s),
        ("failures", "failures", fmt_int(s.failures),
         f"{len(s.failures_by_stage_type)} stage/type pairs", "bad" if s.failures else ""),
        ("tokens", "tokens", fmt_int(s.input_tokens + s.output_tokens),
         f"{s.input_tokens:,} in · {s.output_tokens:,} out", ""),
        ("cost", "cost", DASH if cost is None else f"${cost:,.4f}", cost_detail, ""),
        ("wall", "wall time", secs(s.wall_s), "from the run manifest", ""),
        ("pages_per_s", "pages/s", DASH if s.pages_per_s is None else f"{s.pages_per_s:.2f}",
         "OCR'd pages / wall", ""),
    ]  # fmt: skip
    return [Card(*row) for row in rows]


def _frames_card(s) -> list[tuple]:
    """Video frames sent, per grounding pass, against what a dense pass would have sent."""
    if not s.frames_by_pass:
        return []
    by_pass = dict(s.frames_by_pass)
    sent = sum(by_pass.values())
    detail = " · ".join(f"{name} {n:,}" for name, n in s.frames_by_pass)
    if s.dense_frames:
        detail += f"; dense would send {s.dense_frames:,} ({sent / s.dense_frames:.1%})"
    return [("frames", "video frames sent", fmt_int(sent), detail, "")]


def _thumb_text(stats: dict) -> str:
    if stats.get("disabled"):
        return "Thumbnails were switched off (--no-thumbnails)."
    return (
        f"Thumbnails: re-rendered from each source_uri when this report was made "
        f"(pypdfium2 for PDF pages, PyAV for the frame at a span's start), "
        f"{stats.get('made', 0):,} made ({stats.get('bytes', 0) / 1e3:,.0f} kB), "
        f"{stats.get('left_out', 0):,} left out by the budget, "
        f"{stats.get('unavailable', 0):,} unavailable."
    )


def render_html(report: Report, *, csp: bool = True) -> str:
    """The report as one self-contained HTML document (pure: data in, string out)."""
    shown = _shown_anchors(report)
    manifest = report.manifest or {}
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            r=report,
            s=report.summary,
            m=manifest,
            options_json=json.dumps(
                manifest.get("options") or {}, indent=1, sort_keys=True, default=str
            ),
            link=lambda row, unit=None: _link_target(shown, row, unit),
            cards=_cards(report.summary),
            thumb_text=_thumb_text(report.thumb_stats or {}),
            versions=", ".join(
                f"{k} {v}" for k, v in sorted((manifest.get("versions") or {}).items()) if v
            ),
            csp=content_security_policy() if csp else None,
            css=Markup(css()),  # shipped with the package, not data
            script=Markup(script()),
        )
    )
