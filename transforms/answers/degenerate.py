"""Degenerate answers: a model's answer that loops, was cut off, or is empty (`quality_flags`,
`find_repetition`). Pure functions (numpy), no Beam, no model; used for pages and windows.

Thresholds are module constants, each with the reason for its value.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np

FLAG_REPETITION = "repetition"
FLAG_LENGTH = "length"
FLAG_EMPTY = "empty"
# the answer is not in its model's format (--model-preset): the raw answer is kept as the text
FLAG_UNPARSED = "unparsed"
QUALITY_FLAGS = (FLAG_REPETITION, FLAG_LENGTH, FLAG_EMPTY, FLAG_UNPARSED)  # the order listed

# ---------------------------------------------------------------------------------------------
# Degenerate answers

# Longest repeating unit looked for (characters, after whitespace collapsing): a paragraph.
LOOP_MAX_PERIOD = 1000
# A loop the answer was cut off in (finish_reason "length", loop running to its last
# character): any unit,
# markup-only ones included ("|   |   |", "....", "<td></td>"), at least 3 times and 64 chars.
LOOP_CUT_MIN_REPEATS = 3
LOOP_CUT_MIN_SPAN = 64
# A loop of a unit with letters (of any script) at the end of the answer (the model stopped
# after looping) or covering LOOP_DOMINANT_SHARE of it: 8 times and 160 chars.
LOOP_MIN_REPEATS = 8
LOOP_MIN_SPAN = 160
LOOP_DOMINANT_SHARE = 0.4
# ... and anywhere, if it repeats 20 times over 400 chars.
LOOP_ANYWHERE_MIN_REPEATS = 20
LOOP_ANYWHERE_MIN_SPAN = 400
# Characters of other text allowed after a loop the model ended that still count as "at the
# end" (a closing fence, a full stop).
LOOP_END_SLACK = 16
# Counting loops ("Item 1 Item 2 ...") are looked for with every digit read as 0, but only when
# the answer was cut off, with a unit with letters, at least this many times.
LOOP_COUNTING_MIN_REPEATS = 8

_DIGITS = str.maketrans({c: "0" for c in "0123456789"})


@dataclass(frozen=True)
class RepetitionLoop:
    """A stretch of the answer (whitespace runs collapsed to one space, positions in that
    string) that repeats `unit` back to back."""

    start: int
    end: int
    unit: str
    repeats: float
    rule: str  # "cut_off", "at_end", "dominant", "anywhere", "counting"

    @property
    def span(self) -> int:
        return self.end - self.start


def _runs(eq: np.ndarray, need: int):
    """(start, end) of the runs of True in `eq` at least `need` long."""
    edges = np.diff(np.concatenate(([0], eq.view(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    long = (ends - starts) >= need
    yield from zip(starts[long].tolist(), ends[long].tolist(), strict=True)


def _periodic_runs(codes: np.ndarray, period: int, min_span: int, tail_span: int | None):
    """(start, end) of stretches of `codes` with this period: those at least `min_span` long
    anywhere, and (with `tail_span`) the one ending at the very end if at least that long.

    A stretch of span S with period p is a run of S - p positions i with codes[i] ==
    codes[i + p]. Full comparisons cost a pass over the text per period, so each is first
    screened: a run of R = S - p such positions holds two sampled positions R // 2 apart, and
    a run at the end holds the last R positions.
    """
    n = len(codes)
    need = min_span - period
    screen = max(1, need // 2)
    sampled = codes[: n - period : screen] == codes[period::screen]
    full = bool(need <= n - period and (sampled[1:] & sampled[:-1]).any())
    tail = None
    if tail_span is not None and tail_span - period <= n - period:
        t = tail_span - period
        if np.array_equal(codes[n - period - t : n - period], codes[n - t :]):
            tail = t
    if not full and tail is None:
        return
    eq = codes[:-period] == codes[period:]
    found = set()
    if full:
        for s, e in _runs(eq, need):
            found.add((s, e + period))
    if tail is not None:
        s = int(np.flatnonzero(~eq)[-1]) + 1 if not eq.all() else 0
        found.add((s, n))
    yield from sorted(found)


def _scan_loops(
    flat: str, finish_reason: str | None, counting: bool, original: str = ""
) -> RepetitionLoop | None:
    """The first loop in `flat`; with `counting`, `flat` has its digits zeroed and `original`
    is the text before that (same positions)."""
    n = len(flat)
    cut_off = finish_reason == "length"
    if counting and not cut_off:
        return None
    tail_repeats = LOOP_COUNTING_MIN_REPEATS if counting else LOOP_CUT_MIN_REPEATS
    if n < min(LOOP_CUT_MIN_SPAN if cut_off else LOOP_MIN_SPAN, LOOP_MIN_SPAN):
        return None
    codes = np.frombuffer(flat.encode("utf-32-le"), dtype=np.uint32)
    for period in range(1, min(LOOP_MAX_PERIOD, n // min(tail_repeats, LOOP_MIN_REPEATS)) + 1):
        # lettered loops anywhere (not looked for among zeroed digits), and with a cut-off
        # answer any loop reaching its end
        min_span = n + 1 if counting else max(LOOP_MIN_SPAN, LOOP_MIN_REPEATS * period)
        tail_span = max(LOOP_CUT_MIN_SPAN, tail_repeats * period) if cut_off else None
        for start, end in _periodic_runs(codes, period, min_span, tail_span):
            rule = _loop_rule(flat, start, end, period, cut_off, counting)
            if rule == "counting" and not _only_counters(original, start, end, period):
                rule = None
            if rule:
                unit = flat[start : start + period]
                return RepetitionLoop(start, end, unit, (end - start) / period, rule)
    return None


def _only_counters(original: str, start: int, end: int, period: int) -> bool:
    """Whether the units of a stretch that repeats once digits are zeroed differ only in
    counters: every number that changes from unit to unit changes by a constant step ("Item 7,
    Item 8, ..."), as in a model counting on, unlike a table's data ("Sample 1 | 0.52")."""
    # start units where no number is cut in two (digits sit at the same offsets in each unit)
    k = next(
        (
            i
            for i in range(start, start + period)
            if not original[i].isdigit() and (i == 0 or not original[i - 1].isdigit())
        ),
        None,
    )
    if k is None:
        return False
    units = [original[i : i + period] for i in range(k, end - period + 1, period)]
    numbers = [[int(x) for x in re.findall(r"\d+", unit)] for unit in units]
    if len(numbers) < 3 or len({len(row) for row in numbers}) != 1:
        return False
    counters = 0
    for column in zip(*numbers, strict=True):
        steps = {b - a for a, b in itertools.pairwise(column)}
        if steps == {0}:
            continue  # the same in every unit
        if len(steps) == 1:
            counters += 1  # counts on by a constant step
        else:
            return False  # varies like data
    return counters > 0


def _loop_rule(flat: str, start: int, end: int, period: int, cut_off: bool, counting: bool):
    """Which rule makes this periodic stretch a degenerate loop, if any."""
    span, repeats = end - start, (end - start) / period
    # a cut-off answer stops inside its loop; one the model ended may close it ("```")
    ends_answer = end == len(flat)
    at_end = end >= len(flat) - LOOP_END_SLACK
    lettered = any(c.isalpha() for c in flat[start : start + period])
    if counting:
        ok = cut_off and ends_answer and lettered and repeats >= LOOP_COUNTING_MIN_REPEATS
        return "counting" if ok else None
    if cut_off and ends_answer and repeats >= LOOP_CUT_MIN_REPEATS and span >= LOOP_CUT_MIN_SPAN:
        return "cut_off"
    if not lettered or repeats < LOOP_MIN_REPEATS or span < LOOP_MIN_SPAN:
        return None
    if at_end:
        return "at_end"
    if span >= LOOP_DOMINANT_SHARE * len(flat):
        return "dominant"
    if repeats >= LOOP_ANYWHERE_MIN_REPEATS and span >= LOOP_ANYWHERE_MIN_SPAN:
        return "anywhere"
    return None


def find_repetition(text: str, finish_reason: str | None = None) -> RepetitionLoop | None:
    """The first degenerate loop in an answer, or None (see the LOOP_* constants).

    Repeats that real pages have are not loops: table separator rows (`|---|---|`), empty
    cells, dot leaders and rules repeat markup only (no letters), so they count only where the
    answer was cut off inside them; bullets and table rows differ in their words.
    """
    flat = " ".join(text.split())
    found = _scan_loops(flat, finish_reason, counting=False)
    if found is None and finish_reason == "length" and any(c.isdigit() for c in flat):
        found = _scan_loops(flat.translate(_DIGITS), finish_reason, counting=True, original=flat)
    return found


_FENCE_LINE = re.compile(r"^\s*```[\w-]*\s*$", re.MULTILINE)


def is_empty_answer(text: str | None) -> bool:
    """No text at all once whitespace and bare code fences (```markdown) are removed."""
    return not text or not _FENCE_LINE.sub("", text).strip()


def quality_flags(text: str | None, finish_reason: str | None, blank: bool) -> list[str]:
    """Flags for one page's answer, in QUALITY_FLAGS order: `repetition` (a degenerate loop,
    `find_repetition`), `length` (cut off by --max-new-tokens), `empty` (no text on a page that
    isn't blank)."""
    flags = []
    if text and find_repetition(text, finish_reason) is not None:
        flags.append(FLAG_REPETITION)
    if finish_reason == "length":
        flags.append(FLAG_LENGTH)
    if not blank and is_empty_answer(text):
        flags.append(FLAG_EMPTY)
    return flags
