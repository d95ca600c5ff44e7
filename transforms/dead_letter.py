"""The one dead-letter path: every failure is counted, then tagged for the `failures` table."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from vlbeam.schemas.elements import Failure

FAILURES_TAG = "failures"
NAMESPACE = "vlbeam"


def count_failure(failure: Failure) -> None:
    """Count a failure in Beam metrics: in total and by stage and error type."""
    Metrics.counter(NAMESPACE, "failures").inc()
    Metrics.counter(NAMESPACE, f"failures.{failure.stage}.{failure.error_type}").inc()


def dead_letter(failure: Failure) -> beam.pvalue.TaggedOutput:
    """Count `failure` and send it to the stage's `failures` output."""
    count_failure(failure)
    return beam.pvalue.TaggedOutput(FAILURES_TAG, failure)
