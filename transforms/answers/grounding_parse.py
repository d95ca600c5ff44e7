"""Parse Qwen3-VL temporal-grounding answers into time spans, and merge spans across windows.

Accepted answer shapes (robust to code fences and prose around them):
- JSON list of objects with `start`/`end` (or `start_time`/`end_time`, `begin`), or a
  `time`/`timestamp` string "A - B", or `[a, b]` pairs;
- a JSON object keyed by "mm:ss.ff - mm:ss.ff" (the cookbook's event format), the value
  being the description; or an object wrapping such a list (`{"events": [...]}`);
- plain lines such as "<12.5 seconds> - <17.0 seconds>: a red square", "00:12-00:17",
  "from 12.5 to 17 seconds".
Times may be seconds ("12.5", "12.5s", "<12.5 seconds>"), "mm:ss(.ff)" or "hh:mm:ss(.ff)".
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vlbeam.schemas.errors import UnparseableAnswer


@dataclass(frozen=True)
class Span:
    start_s: float
    end_s: float
    description: str | None = None
    query_index: int | None = None  # 1-based, for multi-query prompts


@dataclass(frozen=True)
class MergedSpan:
    query: str | None
    start_s: float
    end_s: float
    description: str | None
    window_indexes: tuple[int, ...]


_NUM = r"\d+(?:\.\d+)?"
_CLOCK = r"(?:\d+:)?\d{1,2}:\d{1,2}(?:\.\d+)?"
_TIME = rf"<?\s*(?:{_CLOCK}|{_NUM})\s*(?:seconds?|secs?|s\b)?\s*>?"
_RANGE = re.compile(
    rf"(?:from\s+)?(?P<a>{_TIME})\s*(?:-|\u2013|\u2014|to|until|~)\s*(?P<b>{_TIME})", re.IGNORECASE
)
_START_KEYS = ("start", "start_s", "start_time", "begin", "from", "start_seconds")
_END_KEYS = ("end", "end_s", "end_time", "stop", "to", "end_seconds")
_RANGE_KEYS = ("time", "timestamp", "span", "time_range", "range", "segment", "interval")
_TEXT_KEYS = ("description", "event", "caption", "label", "text", "action")


def parse_time(value) -> float:
    """Seconds from a number or a time string ("12.5", "12.5s", "<12.5 seconds>", "01:02.5")."""
    if isinstance(value, bool):
        raise ValueError("not a time")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().strip("<>").strip().lower()
        text = re.sub(r"\s*(seconds?|secs?|s)$", "", text).strip()
        if re.fullmatch(_CLOCK, text):
            parts = [float(part) for part in text.split(":")]
            if any(part >= 60 for part in parts[1:]):
                raise ValueError(f"not a clock time: {value!r}")
            seconds = 0.0
            for part in parts:
                seconds = seconds * 60 + part
        elif re.fullmatch(_NUM, text):
            seconds = float(text)
        else:
            raise ValueError(f"not a time: {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a time: {value!r}")
    return seconds


def _json_candidates(text: str) -> Iterable[object]:
    """The whole answer as JSON, else each JSON value embedded in it (prose around)."""
    stripped = re.sub(r"```(?:json)?", "", text).strip()
    try:
        whole = json.loads(stripped)
    except (ValueError, RecursionError):
        whole = None
    else:
        yield whole
    decoder, i = json.JSONDecoder(), 0
    while i < len(stripped):
        if stripped[i] in "[{":
            try:
                value, end = decoder.raw_decode(stripped, i)
            except (ValueError, RecursionError):
                i += 1
                continue
            yield value
            i = end  # never look inside a value that parsed
        else:
            i += 1


def _span_from_obj(obj: dict) -> Span | None:
    lowered = {str(k).lower(): v for k, v in obj.items()}
    start = next((lowered[k] for k in _START_KEYS if k in lowered), None)
    end = next((lowered[k] for k in _END_KEYS if k in lowered), None)
    if start is None or end is None:
        ranged = next((lowered[k] for k in _RANGE_KEYS if k in lowered), None)
        if isinstance(ranged, list | tuple) and len(ranged) == 2:
            start, end = ranged
        elif isinstance(ranged, int | float) and not isinstance(ranged, bool):
            start = end = ranged  # a point in time (e.g. Qwen's {"time": 1.0, "bbox_2d": ...})
        elif isinstance(ranged, str) and (match := _RANGE.search(ranged)):
            start, end = match["a"], match["b"]
        else:
            return None
    text = next((lowered[k] for k in _TEXT_KEYS if k in lowered), None)
    query = lowered.get("query")
    query_index = None
    if isinstance(query, str) and query.strip().isdigit():
        query = int(query)
    if isinstance(query, int | float) and not isinstance(query, bool):
        query_index = int(query) if float(query).is_integer() else None
    return Span(parse_time(start), parse_time(end), None if text is None else str(text),
                query_index)  # fmt: skip


def _spans_from_json(data) -> list[Span] | None:
    if isinstance(data, dict):
        for key in ("events", "spans", "results", "segments", "answer", "timeline"):
            if key in data and isinstance(data[key], list | dict):
                return _spans_from_json(data[key])
            if key in data and isinstance(data[key], str):
                return _spans_from_lines(data[key]) or None
        keyed = [
            Span(parse_time(m["a"]), parse_time(m["b"]), str(v) if v is not None else None)
            for k, v in data.items()
            if (m := _RANGE.fullmatch(str(k).strip()))
        ]
        if keyed:
            return keyed
        single = _span_from_obj(data)
        return [single] if single else None
    if isinstance(data, list):
        if not data:
            return []
        if len(data) == 2 and all(isinstance(x, int | float) for x in data):
            return [Span(parse_time(data[0]), parse_time(data[1]))]
        spans = []
        for item in data:
            if isinstance(item, dict):
                span = _span_from_obj(item)
            elif isinstance(item, list | tuple) and len(item) >= 2:
                span = Span(parse_time(item[0]), parse_time(item[1]))
            else:
                span = None
            if span is None:
                return None
            spans.append(span)
        return spans
    return None


_STRONG = re.compile(r":|<|s\b|sec", re.IGNORECASE)  # a clock, unit or <t seconds> marker
_LEAD = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])?\s*$")  # bullets / numbering only


def _spans_from_lines(text: str) -> list[Span]:
    """Ranges in prose. Plain-number ranges ("12 - 17") count only at the start of a line
    (after a bullet) and not inside dates ("2024-01-05"); ranges written with a clock,
    a unit or "from ... to" count anywhere."""
    spans = []
    for line in text.splitlines():
        for match in _RANGE.finditer(line):
            strong = bool(_STRONG.search(match["a"]) or _STRONG.search(match["b"]))
            strong = strong or match.group(0).lower().startswith("from")
            weak_ok = _LEAD.match(line[: match.start()]) and not re.match(
                r"\s*[-/]\d", line[match.end() :]
            )
            if strong or weak_ok:
                rest = line[match.end() :].strip(" :-\u2013\u2014,.\t\"'{}[]")
                spans.append(Span(parse_time(match["a"]), parse_time(match["b"]), rest or None))
                break
    return spans


NO_EVENT = re.compile(r"^\W*(none|no|nothing|n/a|not (found|present|visible|shown))\b", re.I)


def parse_spans(text: str) -> list[Span]:
    """All spans in a model answer; raises UnparseableAnswer when it holds none and
    doesn't say so."""
    if text is None or not text.strip():
        raise UnparseableAnswer("empty answer")
    for data in _json_candidates(text):
        try:
            spans = _spans_from_json(data)
        except ValueError:
            spans = None
        if spans is not None:
            return spans
    try:
        spans = _spans_from_lines(text)
    except ValueError:
        spans = []
    if spans:
        return spans
    if NO_EVENT.match(text.strip()):
        return []
    snippet = " ".join(text.split())[:200]
    raise UnparseableAnswer(f"no time spans found in the answer: {snippet!r}")


def clamp_spans(spans: Sequence[Span], start_s: float, end_s: float) -> list[Span]:
    """Order each span (start <= end) and clamp it to the window; drop spans outside it."""
    kept = []
    for span in spans:
        lo, hi = sorted((span.start_s, span.end_s))
        a, b = max(lo, start_s), min(hi, end_s)
        # keep spans that overlap the window, and points inside it; drop edge-touchers
        if a < b or (lo == hi and start_s <= lo <= end_s):
            kept.append(Span(round(a, 3), round(b, 3), span.description, span.query_index))
    return kept


def similar(a: str | None, b: str | None, threshold: float = 0.6) -> bool:
    if a is None or b is None:
        return a is b
    a, b = " ".join(a.lower().split()), " ".join(b.lower().split())
    return difflib.SequenceMatcher(None, a, b).ratio() >= threshold


def merge_spans(
    spans: Iterable[tuple[int, Span]], query: str | None, gap_s: float
) -> list[MergedSpan]:
    """Merge one query's spans (or the timeline's events) across windows.

    Rule: sorted by start, a span joins the previous merged span when it starts no
    later than `gap_s` after that one ends (overlap, e.g. in the windows' overlap
    region, or a gap under one sampling interval) and, for the event timeline
    (query None), its description is near-identical (difflib ratio >= 0.6).
    """
    merged: list[MergedSpan] = []

    def order(item: tuple[int, Span]):  # total order: the result never depends on input order
        index, span = item
        return span.start_s, span.end_s, index, span.description or ""

    for index, span in sorted(spans, key=order):
        for i in range(len(merged) - 1, -1, -1):
            prev = merged[i]
            if span.start_s > prev.end_s + gap_s:
                continue
            if query is None and not similar(prev.description, span.description):
                continue
            merged[i] = MergedSpan(
                query=query,
                start_s=prev.start_s,
                end_s=max(prev.end_s, span.end_s),
                description=prev.description or span.description,
                window_indexes=tuple(sorted({*prev.window_indexes, index})),
            )
            break
        else:
            merged.append(MergedSpan(query, span.start_s, span.end_s, span.description, (index,)))
    return merged
