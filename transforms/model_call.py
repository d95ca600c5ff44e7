"""Provenance columns shared by every model-output table."""

from __future__ import annotations

from apache_beam.metrics import Metrics

from vlbeam.schemas.elements import Provenance, VLResult
from vlbeam.transforms.dead_letter import NAMESPACE


def model_call_columns(result: VLResult, prov: Provenance) -> dict:
    """The values of `schemas.model_call.MODEL_CALL_FIELDS` for one result."""
    return {
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "finish_reason": result.finish_reason,
        "latency_s": result.latency_s,
        "provider": prov.provider,
        "served_model": result.served_model,
        "request_id": result.request_id,
        "reasoning": result.reasoning,
        "cost_usd": result.cost_usd,
    }


def count_usage(result: VLResult, page: bool = False) -> None:
    """Tokens and estimated cost of one model call, in Beam metrics (for the summary). Page
    costs are also counted on their own (nano-dollars: tiny per-page prices add up exactly
    enough), for the cost per 1,000 pages and the cost avoided."""
    Metrics.counter(NAMESPACE, "input_tokens").inc(result.input_tokens or 0)
    Metrics.counter(NAMESPACE, "output_tokens").inc(result.output_tokens or 0)
    if result.cost_usd:
        Metrics.counter(NAMESPACE, "cost_micro_usd").inc(round(result.cost_usd * 1e6))
        if page:
            Metrics.counter(NAMESPACE, "page_cost_nano_usd").inc(round(result.cost_usd * 1e9))
