"""Provenance columns shared by every model-output table."""

from __future__ import annotations

from vlbeam.pipeline.elements import Provenance, VLResult


def api_columns(result: VLResult, prov: Provenance) -> dict:
    return {
        "provider": prov.provider,
        "served_model": result.served_model,
        "request_id": result.request_id,
        "reasoning": result.reasoning,
        "cost_usd": result.cost_usd,
    }
