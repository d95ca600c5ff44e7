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

from vlbeam.pipeline.errors import VlbeamError


class UnparseableAnswer(VlbeamError):
    pass


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
            seconds = 0.0
            for part in text.split(":"):
                seconds = seconds * 60 + float(part)
        elif re.fullmatch(_NUM, text):
            seconds = float(text)
        else:
            raise ValueError(f"not a time: {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a time: {value!r}")
    return seconds


def _json_candidates(text: str) -> Iterable[object]:
    stripped = re.sub(r"```(?:json)?", "", text).strip()
    for candidate in (stripped, *_bracketed(stripped)):
        try:
            yield json.loads(candidate)
        except (ValueError, RecursionError):
            continue


def _bracketed(text: str) -> list[str]:
    spans = []
    for opener, closer in (("[", "]"), ("{", "}")):
        start, end = text.find(opener), text.rfind(closer)
        if 0 <= start < end:
            spans.append(text[start : end + 1])
    return spans


def _span_from_obj(obj: dict) -> Span | None:
    lowered = {str(k).lower(): v for k, v in obj.items()}
    start = next((lowered[k] for k in _START_KEYS if k in lowered), None)
    end = next((lowered[k] for k in _END_KEYS if k in lowered), None)
    if start is None or end is None:
        ranged = next((lowered[k] for k in _RANGE_KEYS if k in lowered), None)
        if isinstance(ranged, list | tuple) and len(ranged) == 2:
            start, end = ranged
        elif isinstance(ranged, str) and (match := _RANGE.search(ranged)):
            start, end = match["a"], match["b"]
        else:
            return None
    text = next((lowered[k] for k in _TEXT_KEYS if k in lowered), None)
    query = lowered.get("query")
    query_index = int(query) if isinstance(query, int | float) or str(query).isdigit() else None
    return Span(parse_time(start), parse_time(end), None if text is None else str(text),
                query_index)  # fmt: skip


def _spans_from_json(data) -> list[Span] | None:
    if isinstance(data, dict):
        for key in ("events", "spans", "results", "segments", "answer", "timeline"):
            if key in data and isinstance(data[key], list | dict):
                return _spans_from_json(data[key])
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


def _spans_from_lines(text: str) -> list[Span]:
    spans = []
    for line in text.splitlines():
        match = _RANGE.search(line)
        if not match:
            continue
        rest = line[match.end() :].strip(" :-\u2013\u2014,.\t\"'")
        spans.append(Span(parse_time(match["a"]), parse_time(match["b"]), rest or None))
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
        a, b = sorted((span.start_s, span.end_s))
        a, b = max(a, start_s), min(b, end_s)
        if a <= b and not (b == start_s and span.end_s < start_s):
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
    for index, span in sorted(spans, key=lambda item: (item[1].start_s, item[1].end_s)):
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
