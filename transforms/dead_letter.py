"""Dead-letter plumbing shared by every stage."""

from __future__ import annotations

from apache_beam.metrics import Metrics

from vlbeam.schemas.elements import Failure

FAILURES_TAG = "failures"
NAMESPACE = "vlbeam"


def count_failure(failure: Failure) -> None:
    """Count a failure in Beam metrics: in total and by stage and error type."""
    Metrics.counter(NAMESPACE, "failures").inc()
    Metrics.counter(NAMESPACE, f"failures.{failure.stage}.{failure.error_type}").inc()
