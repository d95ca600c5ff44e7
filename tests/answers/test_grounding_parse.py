"""Unit tests for the pure grounding parts: answer parsing, clamping, merging across
windows, query attribution, and the grounding prompts."""

from __future__ import annotations

import itertools
import math
import random
import re

import pytest

from vlbeam.pipeline.prompts import (
    GROUNDING_QUERY_PROMPT_ID,
    TIMELINE_PROMPT_ID,
    builtin_prompt,
    grounding_prompt,
    read_queries,
)
from vlbeam.schemas.elements import Provenance, VLResult, WindowRef
from vlbeam.schemas.errors import VlbeamError
from vlbeam.transforms.answers.grounding_parse import (
    MergedSpan,
    Span,
    UnparseableAnswer,
    clamp_spans,
    merge_spans,
    parse_spans,
    parse_time,
    similar,
)
from vlbeam.transforms.grounding import assign_queries, event_row, window_row, window_spans

# --------------------------------------------------------------------------- parse_time


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (12, 12.0),
        (12.5, 12.5),
        ("12", 12.0),
        ("12.5", 12.5),
        (" 12.5 ", 12.5),
        ("12.5s", 12.5),
        ("12.5 s", 12.5),
        ("12.5 sec", 12.5),
        ("12.5secs", 12.5),
        ("12.5 second", 12.5),
        ("12.5 seconds", 12.5),
        ("12.5 SECONDS", 12.5),
        ("<12.5 seconds>", 12.5),
        ("< 12.5 seconds >", 12.5),
        ("<12.5>", 12.5),
        ("00:12", 12.0),
        ("01:02", 62.0),
        ("1:02", 62.0),
        ("01:02.5", 62.5),
        ("00:17.25", 17.25),
        ("1:02:03", 3723.0),
        ("01:02:03.25", 3723.25),
        ("00:00:00", 0.0),
    ],
)
def test_parse_time_accepts(value, seconds):
    result = parse_time(value)
    assert isinstance(result, float)
    assert result == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        -1,
        -0.5,
        "-1",
        "-00:01",
        math.nan,
        math.inf,
        -math.inf,
        "nan",
        "inf",
        True,
        False,
        None,
        "",
        "   ",
        "abc",
        "twelve seconds",
        "12.5 min",
        "12:",
        ":12",
        "1.2.3",
        "1:2:3:4",
        "12.",
        ".5",
        "1e3",
        "seconds",
        "<>",
    ],
)
def test_parse_time_rejects(value):
    with pytest.raises(ValueError, match=r"^not a time"):
        parse_time(value)


# --------------------------------------------------------------------------- parse_spans


def spans(*triples) -> list[Span]:
    return [Span(float(a), float(b), d) for a, b, d in triples]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param(
            '[{"start": 1, "end": 2.5, "description": "a"}, {"start": 4, "end": 6, '
            '"description": "b"}]',
            spans((1, 2.5, "a"), (4, 6, "b")),
            id="list-numbers",
        ),
        pytest.param(
            '[{"start": "00:01.5", "end": "<3 seconds>", "description": "a"}]',
            spans((1.5, 3, "a")),
            id="list-time-strings",
        ),
        pytest.param(
            '[{"start": "1", "end": "2s", "description": "a"}]',
            spans((1, 2, "a")),
            id="list-number-strings",
        ),
        pytest.param(
            '[{"start_time": 1, "end_time": 2, "event": "a"}]',
            spans((1, 2, "a")),
            id="start_time-end_time",
        ),
        pytest.param('[{"begin": 1, "end": 2}]', spans((1, 2, None)), id="begin"),
        pytest.param(
            '[{"start_s": 1, "end_s": 2, "caption": "a"}]', spans((1, 2, "a")), id="start_s"
        ),
        pytest.param(
            '[{"Start": 1, "END": 2, "Description": "a"}]',
            spans((1, 2, "a")),
            id="keys-case-insensitive",
        ),
        pytest.param(
            '[{"time": "1.5 - 3.0", "event": "x"}]', spans((1.5, 3, "x")), id="time-range"
        ),
        pytest.param(
            '[{"timestamp": "00:01-00:03", "action": "x"}]',
            spans((1, 3, "x")),
            id="timestamp-clock-range",
        ),
        pytest.param(
            '[{"timestamp": "<1.5 seconds> - <3 seconds>", "text": "x"}]',
            spans((1.5, 3, "x")),
            id="timestamp-cookbook-range",
        ),
        pytest.param(
            '[{"time": "00:00:01.5 - 00:00:03", "label": "x"}]',
            spans((1.5, 3, "x")),
            id="time-hhmmss-range",
        ),
        pytest.param('[{"time": [1, 3], "label": "x"}]', spans((1, 3, "x")), id="time-pair"),
        pytest.param(
            '{"00:01.00 - 00:03.50": "a person walks", "00:04.00 - 00:05.00": "sits"}',
            spans((1, 3.5, "a person walks"), (4, 5, "sits")),
            id="cookbook-keyed-object",
        ),
        pytest.param(
            '{"00:01.00 - 00:03.50": null}', spans((1, 3.5, None)), id="keyed-null-description"
        ),
        pytest.param(
            '{"events": [{"start": 1, "end": 2, "description": "a"}]}',
            spans((1, 2, "a")),
            id="wrapper-events",
        ),
        pytest.param(
            '{"segments": {"00:01 - 00:02": "x"}}', spans((1, 2, "x")), id="wrapper-keyed"
        ),
        pytest.param('{"spans": [[1, 2]]}', spans((1, 2, None)), id="wrapper-spans-pairs"),
        pytest.param(
            '{"start": 1, "end": 2, "description": "a"}', spans((1, 2, "a")), id="single-object"
        ),
        pytest.param("[[1, 2], [3.5, 4]]", spans((1, 2, None), (3.5, 4, None)), id="pairs"),
        pytest.param('[[1, 2, "x"]]', spans((1, 2, None)), id="pair-with-extra"),
        pytest.param("[1, 2]", spans((1, 2, None)), id="single-pair"),
        pytest.param(
            '```json\n[{"start": 1, "end": 2, "description": "a"}]\n```',
            spans((1, 2, "a")),
            id="code-fence-json",
        ),
        pytest.param('```\n[{"start": 1, "end": 2}]\n```', spans((1, 2, None)), id="code-fence"),
        pytest.param(
            'Sure! Here are the events:\n[{"start": 1, "end": 2, "description": "a"}]\n'
            "Hope this helps.",
            spans((1, 2, "a")),
            id="prose-around-list",
        ),
        pytest.param(
            'The answer is {"start": 1, "end": 2} as requested.',
            spans((1, 2, None)),
            id="prose-around-object",
        ),
        pytest.param(
            'Here:\n```json\n[{"start": 1, "end": 2}]\n```\nThat is all.',
            spans((1, 2, None)),
            id="prose-and-fence",
        ),
        pytest.param(
            "<12.5 seconds> - <17.0 seconds>: a red square",
            spans((12.5, 17, "a red square")),
            id="line-cookbook",
        ),
        pytest.param("00:12-00:17", spans((12, 17, None)), id="line-clock"),
        pytest.param(
            "00:12 \u2013 00:17, the door opens",
            spans((12, 17, "the door opens")),
            id="line-en-dash",
        ),
        pytest.param("from 12.5 to 17 seconds", spans((12.5, 17, None)), id="line-from-to"),
        pytest.param(
            "01:00:05 - 01:00:10.5 a car passes",
            spans((3605, 3610.5, "a car passes")),
            id="line-hhmmss",
        ),
        pytest.param("1.5 to 3.0 seconds: x", spans((1.5, 3, "x")), id="line-to-seconds"),
        pytest.param("12.5s-17s", spans((12.5, 17, None)), id="line-s-suffix"),
        pytest.param(
            "1.0 - 2.0 seconds, a red square\n\n3.0 - 4.0 seconds: a blue circle\n",
            spans((1, 2, "a red square"), (3, 4, "a blue circle")),
            id="several-lines",
        ),
        pytest.param(
            "The events are:\n- 0:01 - 0:02: walks\n- 0:05 - 0:07: runs\nDone.",
            spans((1, 2, "walks"), (5, 7, "runs")),
            id="bullets-with-prose",
        ),
    ],
)
def test_parse_spans_shapes(answer, expected):
    assert parse_spans(answer) == expected


@pytest.mark.parametrize(
    "answer",
    [
        "[]",
        " [] \n",
        "```json\n[]\n```",
        "```\n[]\n```",
        '{"events": []}',
        "None",
        "none",
        "No.",
        "No",
        "Nothing.",
        "N/A",
        "No event found.",
        "Not visible in these frames.",
        "none of the queries happen",
    ],
)
def test_parse_spans_no_event(answer):
    assert parse_spans(answer) == []


def test_query_numbers_become_query_index():
    answer = (
        '[{"query": 2, "start": 1, "end": 2}, {"query": "1", "start": 3, "end": 4}, '
        '{"start": 5, "end": 6}]'
    )
    assert [s.query_index for s in parse_spans(answer)] == [2, 1, None]
    assert parse_spans('{"query": 3, "start": 1, "end": 2}') == [Span(1.0, 2.0, None, 3)]
    # a query given by name is not a number
    assert parse_spans('[{"query": "a cat", "start": 1, "end": 2}]')[0].query_index is None


def test_parse_spans_keeps_reversed_span_unordered():
    # ordering is clamp_spans' job; parsing keeps what the model said
    assert parse_spans('[{"start": 2, "end": 1}]') == [Span(2.0, 1.0)]


def test_description_is_text():
    assert parse_spans('[{"start": 1, "end": 2, "caption": 5}]') == [Span(1.0, 2.0, "5")]


@pytest.mark.parametrize(
    "answer",
    [
        "",
        " ",
        "\n\n\n",
        "\t \u00a0\n",
        "!!!!!!!",
        "asdf qwer zxcv",
        "the the the the the the the",
        "<|endoftext|><|endoftext|><|endoftext|>",
        "\u7684\u7684\u7684\u7684\u7684\u7684",
        "ĠĠĠĠĠĠĠĠ",
        "addCriterion addCriterion addCriterion",
        "foo foo 12 13 14",
        "abc-def",
        "a b - c",
        "seconds",
        "Noodles are tasty",
        "Nonetheless",
        '{"foo": "bar"}',
        '{"description": "a red square", "confidence": 0.9}',
        "[1, 2, 3]",
        '[{"start": 1}]',
        '[{"start": null, "end": 2}]',
        '[{"start": true, "end": 2}]',
        '[{"start": -1, "end": 2}]',
        '[{"start": "NaN", "end": 2}]',
        "[[1, 2], [3]]",
        '{"events": null}',
    ],
)
def test_parse_spans_unparseable(answer):
    with pytest.raises(UnparseableAnswer) as info:
        parse_spans(answer)
    assert isinstance(info.value, VlbeamError)
    message = str(info.value)
    assert message  # always says why
    if answer.strip():
        # the message quotes a whitespace-normalised snippet of the answer
        assert "no time spans found" in message
        assert " ".join(answer.split())[:40] in message
    else:
        assert "empty" in message


def test_unparseable_snippet_is_bounded():
    answer = "garbage " * 500
    with pytest.raises(UnparseableAnswer) as info:
        parse_spans(answer)
    message = str(info.value)
    assert "garbage garbage" in message
    assert len(message) < 300


def test_parse_spans_none_is_empty_answer():
    with pytest.raises(UnparseableAnswer, match="empty"):
        parse_spans(None)


QWEN_SPATIO_TEMPORAL = (
    '[{"time": 1.0, "bbox_2d": [10, 20, 110, 220], "label": "cat"}, '
    '{"time": 2.0, "bbox_2d": [12, 20, 112, 220], "label": "cat"}]'
)


def test_qwen_spatio_temporal_items_become_point_spans():
    assert parse_spans(QWEN_SPATIO_TEMPORAL) == spans((1, 1, "cat"), (2, 2, "cat"))


def test_brackets_in_trailing_prose():
    answer = '[{"start": 1, "end": 2}, {"start": 3, "end": 4}]\n(times are approximate [1])'
    assert parse_spans(answer) == spans((1, 2, None), (3, 4, None))


def test_date_in_prose_is_not_a_span():
    with pytest.raises(UnparseableAnswer):
        parse_spans("2024-01-05")


def test_wrapper_with_range_string_has_no_brace_description():
    assert parse_spans('{"answer": "1 - 2"}') == spans((1, 2, None))


# --------------------------------------------------------------------------- clamp_spans


def test_clamp_orders_reversed_span():
    assert clamp_spans([Span(15.0, 12.0, "x", 1)], 10.0, 20.0) == [Span(12.0, 15.0, "x", 1)]


def test_clamp_to_window():
    assert clamp_spans([Span(5.0, 25.0, "x")], 10.0, 20.0) == [Span(10.0, 20.0, "x")]
    assert clamp_spans([Span(5.0, 12.0)], 10.0, 20.0) == [Span(10.0, 12.0)]
    assert clamp_spans([Span(18.0, 25.0)], 10.0, 20.0) == [Span(18.0, 20.0)]
    assert clamp_spans([Span(25.0, 5.0)], 10.0, 20.0) == [Span(10.0, 20.0)]


def test_clamp_drops_spans_outside_the_window():
    window = (10.0, 20.0)
    outside = [Span(1.0, 5.0), Span(5.0, 1.0), Span(21.0, 30.0), Span(30.0, 21.0)]
    assert clamp_spans(outside, *window) == []
    inside = Span(12.0, 13.0, "kept")
    assert clamp_spans([Span(1.0, 5.0), inside, Span(21.0, 30.0)], *window) == [inside]


def test_clamp_rounds_to_milliseconds():
    [span] = clamp_spans([Span(1.23456, 2.98765, "x", 2)], 0.0, 10.0)
    assert (span.start_s, span.end_s) == (1.235, 2.988)
    assert (span.description, span.query_index) == ("x", 2)


def test_clamp_keeps_order_and_empty():
    assert clamp_spans([], 0.0, 10.0) == []
    out = clamp_spans([Span(5.0, 6.0, "b"), Span(1.0, 2.0, "a")], 0.0, 10.0)
    assert [s.description for s in out] == ["b", "a"]


def test_clamp_is_symmetric_in_span_direction():
    assert clamp_spans([Span(10.0, 2.0)], 10.0, 20.0) == clamp_spans([Span(2.0, 10.0)], 10.0, 20.0)


# --------------------------------------------------------------------------- merge_spans


def test_merge_overlapping_windows():
    merged = merge_spans([(0, Span(8.0, 12.0)), (1, Span(10.0, 15.0))], "a red square", 0.5)
    assert merged == [MergedSpan("a red square", 8.0, 15.0, None, (0, 1))]


def test_merge_keeps_distant_spans_apart():
    merged = merge_spans([(0, Span(0.0, 2.0)), (1, Span(3.0, 4.0))], "q", 0.5)
    assert [(m.start_s, m.end_s, m.window_indexes) for m in merged] == [
        (0.0, 2.0, (0,)),
        (3.0, 4.0, (1,)),
    ]


def test_merge_small_gap_joins():
    merged = merge_spans([(0, Span(0.0, 2.0)), (1, Span(2.4, 4.0))], "q", 0.5)
    assert [(m.start_s, m.end_s, m.window_indexes) for m in merged] == [(0.0, 4.0, (0, 1))]
    # "no later than gap_s after": a gap of exactly gap_s still joins
    merged = merge_spans([(0, Span(0.0, 2.0)), (1, Span(2.5, 4.0))], "q", 0.5)
    assert len(merged) == 1
    # the same gap with gap_s = 0 stays apart
    assert len(merge_spans([(0, Span(0.0, 2.0)), (1, Span(2.4, 4.0))], "q", 0.0)) == 2


def test_merge_contained_span_keeps_outer_end():
    merged = merge_spans([(0, Span(0.0, 10.0, "long")), (1, Span(2.0, 3.0, "short"))], "q", 0)
    assert merged == [MergedSpan("q", 0.0, 10.0, "long", (0, 1))]


def test_merge_three_windows_chain():
    chain = [(2, Span(8.0, 12.0)), (0, Span(0.0, 5.0)), (1, Span(4.0, 9.0))]
    assert merge_spans(chain, "q", 0.5) == [MergedSpan("q", 0.0, 12.0, None, (0, 1, 2))]


def test_merge_window_indexes_are_a_sorted_set():
    same_window = [(3, Span(0.0, 1.0)), (3, Span(0.5, 2.0)), (1, Span(1.5, 2.5))]
    [merged] = merge_spans(same_window, "q", 0.0)
    assert merged.window_indexes == (1, 3)


def test_merge_empty():
    assert merge_spans([], "q", 0.5) == []
    assert merge_spans([], None, 0.5) == []


def test_timeline_keeps_different_overlapping_events_apart():
    events = [(0, Span(0.0, 5.0, "a red square appears")), (0, Span(1.0, 3.0, "a dog barks"))]
    merged = merge_spans(events, None, 0.5)
    assert {(m.description, m.start_s, m.end_s) for m in merged} == {
        ("a red square appears", 0.0, 5.0),
        ("a dog barks", 1.0, 3.0),
    }
    assert all(m.query is None for m in merged)


def test_timeline_merges_near_identical_descriptions():
    events = [
        (0, Span(0.0, 5.0, "A red square appears")),
        (1, Span(4.0, 8.0, "a red  square appearing")),
    ]
    assert merge_spans(events, None, 0.5) == [
        MergedSpan(None, 0.0, 8.0, "A red square appears", (0, 1))
    ]


def test_timeline_looks_past_an_unrelated_event():
    events = [
        (0, Span(0.0, 5.0, "a red square appears")),
        (0, Span(1.0, 3.0, "a dog barks")),
        (1, Span(4.0, 8.0, "a red square appears")),
    ]
    merged = sorted(merge_spans(events, None, 0.5), key=lambda m: m.start_s)
    assert merged == [
        MergedSpan(None, 0.0, 8.0, "a red square appears", (0, 1)),
        MergedSpan(None, 1.0, 3.0, "a dog barks", (0,)),
    ]


def test_timeline_none_descriptions():
    assert len(merge_spans([(0, Span(0.0, 2.0)), (1, Span(1.0, 3.0))], None, 0.0)) == 1
    assert len(merge_spans([(0, Span(0.0, 2.0)), (1, Span(1.0, 3.0, "x"))], None, 0.0)) == 2


def test_query_mode_ignores_descriptions():
    merged = merge_spans([(0, Span(0.0, 2.0, "cat")), (1, Span(1.0, 3.0, "dog"))], "q", 0.0)
    assert merged == [MergedSpan("q", 0.0, 3.0, "cat", (0, 1))]


def test_similar():
    assert similar("A red  square", "a red square")
    assert not similar("a red square", "a dog barks loudly")
    assert similar(None, None)
    assert not similar(None, "x")
    assert not similar("x", None)


def _scene(rng: random.Random) -> list[tuple[int, Span]]:
    """Spans from overlapping 10 s windows (5 s stride), distinct (start, end) each."""
    words = ["a red square appears", "a dog barks", "a car passes by", "the door opens"]
    out = []
    for i in range(40):
        start = round(rng.uniform(0, 100), 2) + i * 1e-3
        out.append((int(start // 5), Span(start, start + rng.uniform(0.1, 6), rng.choice(words))))
    return out


@pytest.mark.parametrize("query", ["q", None])
def test_merge_is_order_independent(query):
    rng = random.Random(1234)
    items = _scene(rng)
    expected = merge_spans(items, query, 0.5)
    assert 1 < len(expected) < len(items)  # the scene does merge something, not everything
    for _ in range(20):
        shuffled = items[:]
        rng.shuffle(shuffled)
        assert merge_spans(shuffled, query, 0.5) == expected
    # every input window index lands in some merged span
    assert {i for m in expected for i in m.window_indexes} == {i for i, _ in items}


def test_query_merge_result_is_disjoint():
    items = _scene(random.Random(99))
    merged = merge_spans(items, "q", 0.5)
    for a, b in itertools.pairwise(merged):
        assert b.start_s > a.end_s + 0.5


def test_merge_with_tied_times_is_order_independent():
    items = [
        (0, Span(4.0, 6.0, "a red square appears")),
        (1, Span(4.0, 6.0, "a red square appearing")),
    ]
    assert merge_spans(items, None, 0.5) == merge_spans(items[::-1], None, 0.5)


# --------------------------------------------------------------------------- grounding.py

REF = WindowRef("doc1", "file:///v.mp4", 3, 10.0, 20.0, (10.0, 12.0, 14.0))
PROV = Provenance(model="m", backend="fake", prompt_id="timeline_v1", run_id="r1")


def test_assign_single_query_without_numbers():
    items = [Span(1.0, 2.0), Span(3.0, 4.0)]
    assert assign_queries(items, ["a red square"]) == [
        ("a red square", items[0]),
        ("a red square", items[1]),
    ]


def test_assign_single_query_with_any_number():
    # one query: whatever number the model wrote, the span can only answer that query
    items = [Span(1.0, 2.0, None, 1), Span(3.0, 4.0, None, 7)]
    assert [q for q, _ in assign_queries(items, ["only"])] == ["only", "only"]


def test_assign_multiple_queries_by_number():
    items = [Span(1.0, 2.0, None, 2), Span(3.0, 4.0, None, 1)]
    assert assign_queries(items, ["cat", "dog"]) == [("dog", items[0]), ("cat", items[1])]


@pytest.mark.parametrize("query_index", [None, 0, 3, -1])
def test_assign_multiple_queries_needs_valid_numbers(query_index):
    with pytest.raises(UnparseableAnswer, match=re.escape("(1..2)")):
        assign_queries([Span(1.0, 2.0, None, query_index)], ["cat", "dog"])


def test_assign_timeline():
    items = [Span(1.0, 2.0, "x", 2)]
    assert assign_queries(items, []) == [(None, items[0])]
    assert assign_queries([], ["cat", "dog"]) == []


def test_window_spans_parses_clamps_and_assigns():
    text = '[{"query": 2, "start": 12, "end": 25}, {"query": 1, "start": 1, "end": 5}]'
    assert window_spans(REF, text, ["cat", "dog"]) == [("dog", Span(12.0, 20.0, None, 2))]


def test_window_spans_timeline_and_single_query():
    text = "<11 seconds> - <13.5 seconds>: a red square"
    assert window_spans(REF, text, []) == [(None, Span(11.0, 13.5, "a red square"))]
    assert window_spans(REF, text, ["red"]) == [("red", Span(11.0, 13.5, "a red square"))]


def test_window_spans_raises_on_garbage_and_missing_numbers():
    with pytest.raises(UnparseableAnswer):
        window_spans(REF, "!!!!!!!", [])
    with pytest.raises(UnparseableAnswer):
        window_spans(REF, '[{"start": 12, "end": 13}]', ["cat", "dog"])


def test_window_row_and_event_row():
    result = VLResult("[]", input_tokens=100, output_tokens=2, finish_reason="stop", latency_s=0.5)
    row = window_row(REF, result, PROV)
    assert row["window_index"] == 3 and row["num_frames"] == 3
    assert row["frame_times_s"] == [10.0, 12.0, 14.0]
    assert (row["raw_output"], row["input_tokens"], row["prompt_id"]) == ("[]", 100, "timeline_v1")
    merged = MergedSpan("cat", 11.0, 13.0, None, (2, 3))
    event = event_row(("doc1", "file:///v.mp4"), merged, PROV, meta=(("k", "v"),))
    assert event["meta"] == {"k": "v"}
    assert event["window_indexes"] == [2, 3]
    assert (event["query"], event["start_s"], event["end_s"]) == ("cat", 11.0, 13.0)
    assert (event["doc_id"], event["run_id"], event["model"]) == ("doc1", "r1", "m")


# --------------------------------------------------------------------------- prompts


def test_query_prompt_numbers_the_queries():
    prompt = grounding_prompt(None, ["a red square", "a dog barks"])
    assert prompt.prompt_id == GROUNDING_QUERY_PROMPT_ID == "grounding_query_v1"
    assert "1. a red square\n2. a dog barks" in prompt.text
    assert "{queries}" not in prompt.text
    assert prompt.text.startswith(builtin_prompt(GROUNDING_QUERY_PROMPT_ID).text.split("{")[0])


def test_timeline_prompt_without_queries():
    prompt = grounding_prompt(None, [])
    assert prompt.prompt_id == TIMELINE_PROMPT_ID == "timeline_v1"
    assert prompt.text == builtin_prompt(TIMELINE_PROMPT_ID).text
    assert '"description"' in prompt.text


def test_prompt_file_fills_queries(tmp_path):
    path = tmp_path / "my_grounding.txt"
    path.write_text("\nFind these:\n{queries}\nAnswer JSON.\n", encoding="utf-8")
    prompt = grounding_prompt(str(path), ["cat", "dog"])
    assert prompt.text == "Find these:\n1. cat\n2. dog\nAnswer JSON."
    assert re.fullmatch(r"file:my_grounding:[0-9a-f]{12}", prompt.prompt_id)
    # the id pins the file's content
    assert grounding_prompt(str(path), ["cat", "dog"]).prompt_id == prompt.prompt_id
    path.write_text("Find these, please:\n{queries}\n", encoding="utf-8")
    assert grounding_prompt(str(path), ["cat"]).prompt_id != prompt.prompt_id


def test_prompt_file_replaces_the_timeline(tmp_path):
    path = tmp_path / "events.txt"
    path.write_text("List events.", encoding="utf-8")
    prompt = grounding_prompt(str(path), [])
    assert prompt.text == "List events."
    assert prompt.prompt_id.startswith("file:events:")


def test_empty_prompt_file_is_refused(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text(" \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        grounding_prompt(str(path), ["cat"])


def test_read_queries_merges_strips_and_dedupes(tmp_path):
    path = tmp_path / "queries.txt"
    path.write_text("a dog barks\n\n  a red square  \n\t\na car passes\na dog barks\n")
    assert read_queries([" a red square", "", "  ", "the door opens"], str(path)) == [
        "a red square",
        "the door opens",
        "a dog barks",
        "a car passes",
    ]


def test_read_queries_sources_alone():
    assert read_queries(None, None) == []
    assert read_queries([], None) == []
    assert read_queries(["b", "a", "b"], None) == ["b", "a"]
