"""Retries of flagged answers (`--retry-degenerate N`): the temperature of each attempt and
the better of two answers. Pure functions, no Beam, no model."""

from __future__ import annotations

from dataclasses import dataclass

from vlbeam.transforms.answers.degenerate import find_repetition, quality_flags

# ---------------------------------------------------------------------------------------------
# Retries of flagged pages

# Attempt 0 is the configured (greedy) call; retry k samples at RETRY_FIRST_TEMPERATURE +
# (k - 1) x RETRY_TEMPERATURE_STEP, capped: 0.5, 0.7, 0.9, 1.0, ... Sampling is what breaks a
# greedy loop; Qwen3-VL's own recommended sampling temperature (0.7) is the second retry.
RETRY_FIRST_TEMPERATURE = 0.5
RETRY_TEMPERATURE_STEP = 0.2
RETRY_MAX_TEMPERATURE = 1.0


def retry_temperature(attempt: int) -> float:
    """Sampling temperature for `attempt` (0 = the first, greedy call; 1.. = retries)."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if attempt == 0:
        return 0.0
    t = RETRY_FIRST_TEMPERATURE + (attempt - 1) * RETRY_TEMPERATURE_STEP
    return round(min(RETRY_MAX_TEMPERATURE, t), 6)


@dataclass(frozen=True)
class Answer:
    """One attempt's answer for a page, with its flags."""

    text: str
    finish_reason: str | None
    flags: tuple[str, ...]
    attempt: int = 0

    @classmethod
    def of(
        cls, text: str | None, finish_reason: str | None, blank: bool = False, attempt: int = 0
    ) -> Answer:
        """An answer with its `quality_flags` computed."""
        text = text or ""
        return cls(text, finish_reason, tuple(quality_flags(text, finish_reason, blank)), attempt)


def useful_length(text: str, finish_reason: str | None = None) -> int:
    """Characters of an answer (whitespace collapsed) with any degenerate loop counted once."""
    flat = " ".join(text.split())
    loop = find_repetition(text, finish_reason) or find_repetition(text, "length")
    if loop is None:
        return len(flat)
    return len(flat) - loop.span + len(loop.unit)


def better_answer(a: Answer, b: Answer) -> Answer:
    """The better of two answers for one page: fewer flags, then more non-degenerate text
    (`useful_length`); on a tie, `a` (the earlier attempt)."""
    if len(a.flags) != len(b.flags):
        return a if len(a.flags) < len(b.flags) else b
    return (
        b if useful_length(b.text, b.finish_reason) > useful_length(a.text, a.finish_reason) else a
    )
