"""One RunInference over every model request of the run (pages and video windows alike),
so the model loads once per worker process whatever the mix of tasks.

Input: (key, VLRequest), the key being a PageRef or a WindowRef (anything with a
`failure(stage, error_type, message)` method). Output: (key, VLResult) for results
that came back, and `failures` (stage `inference`) for errored results and for the
batches RunInference's own dead-letter output caught.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from vlbeam.transforms.dead_letter import FAILURES_TAG, count_failure


def dead_letter_error(exc) -> tuple[str, str]:
    """(error_type, message) from a RunInference dead letter's exception part, which
    Beam gives as `(type, repr(exception), traceback lines)`."""
    if isinstance(exc, BaseException):
        return type(exc).__name__, str(exc) or repr(exc)
    exc_type, exc_repr = exc[0], exc[1]
    lines = [line.strip() for line in (exc[2] if len(exc) > 2 else []) if line.strip()]
    message = lines[-1] if lines else str(exc_repr)
    return getattr(exc_type, "__name__", str(exc_type)), message


class _SplitErrors(beam.DoFn):
    def process(self, keyed):
        key, prediction = keyed
        result = prediction.inference
        if result.ok:
            yield key, result
        else:
            failure = key.failure("inference", result.error_type, result.error_message or "")
            count_failure(failure)
            yield beam.pvalue.TaggedOutput(FAILURES_TAG, failure)


class _FailedBatches(beam.DoFn):
    def process(self, failed):
        batch, exc = failed
        error_type, message = dead_letter_error(exc)
        for key, _request in batch:
            failure = key.failure("inference", error_type, message)
            count_failure(failure)
            yield failure


class InferVL(beam.PTransform):
    def __init__(self, handler: ModelHandler) -> None:
        super().__init__()
        self._handler = handler

    def expand(self, requests):
        main, dead = (
            requests
            | "Qwen3VL" >> RunInference(KeyedModelHandler(self._handler)).with_exception_handling()
        )
        results = main | "SplitErrors" >> beam.ParDo(_SplitErrors()).with_outputs(
            FAILURES_TAG, main="results"
        )
        batch_failures = dead.failed_inferences | "FailedBatches" >> beam.ParDo(_FailedBatches())
        failures = (results[FAILURES_TAG], batch_failures) | "InferenceFailures" >> beam.Flatten()
        return {"results": results.results, "failures": failures}
