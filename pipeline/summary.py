"""The end-of-run summary, read from Beam metrics."""

from __future__ import annotations

from apache_beam.metrics.metric import MetricsFilter

from vlbeam.transforms.dead_letter import NAMESPACE


def counters(result) -> dict[str, int]:
    """All vlbeam counters of a finished pipeline (committed, else attempted values)."""
    found: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        found[counter.key.metric.name] = found.get(counter.key.metric.name, 0) + int(value or 0)
    return found


def format_summary(values: dict[str, int], wall_s: float, output: str, run_id: str) -> str:
    lines = [
        f"vlbeam run {run_id} finished in {wall_s:.1f} s -> {output}",
        f"  documents: {values.get('documents', 0)}"
        + (
            f" ({values['documents_skipped']} skipped: done before)"
            if values.get("documents_skipped")
            else ""
        ),
        f"  pages:     {values.get('pages_ok', 0)} OCR'd of {values.get('pages_rendered', 0)} "
        f"rendered ({values.get('pages_truncated', 0)} hit --max-new-tokens)",
        f"  video:     {values.get('video_windows_ok', 0)} windows grounded of "
        f"{values.get('video_windows_decoded', 0)} decoded "
        f"({values.get('video_frames', 0)} frames)",
        f"  tokens:    {values.get('input_tokens', 0)} in, {values.get('output_tokens', 0)} out",
        f"  failures:  {values.get('failures', 0)}",
        f"  model loads: {values.get('model_loads', 0)} (one per worker process)",
    ]
    passes = pass_line(values)
    if passes:
        lines.insert(4, passes)
    if values.get("units_planned"):
        lines.insert(
            -1,
            f"  units:     {values.get('units_done', 0)} done of {values['units_planned']} "
            f"planned ({values.get('units_failed', 0)} failed)",
        )
        if values.get("spend_nano_usd") and not values.get("cost_micro_usd"):
            lines.insert(-1, f"  spend:     ${values['spend_nano_usd'] / 1e9:.4f} (estimated)")
    if values.get("model_batches"):
        mean = values["model_batch_requests"] / values["model_batches"]
        lines.insert(-1, f"  batches:   {values['model_batches']} (mean size {mean:.2f})")
    avoided = {
        name.split(".", 1)[1]: n
        for name, n in values.items()
        if name.startswith("model_calls_avoided.") and n
    }
    pages = values.get("pages_ok", 0)
    page_cost = values.get("page_cost_nano_usd", 0) / 1e9
    if values.get("cost_micro_usd"):
        cost = values["cost_micro_usd"] / 1e6
        per_k = f", ${page_cost / pages * 1000:.4f} per 1,000 pages" if pages else ""
        lines.insert(-1, f"  cost:      ${cost:.4f} (estimated{per_k})")
    if avoided:
        read = pages - sum(avoided.values())
        saved = ""
        if page_cost and read > 0:
            saved = f"; about ${page_cost / read * sum(avoided.values()):.4f} saved"
        rules = ", ".join(f"{n} {rule.replace('_', ' ')}" for rule, n in sorted(avoided.items()))
        lines.insert(-1, f"  model calls avoided: {rules}{saved}")
    extracted = extraction_line(values)
    if extracted:
        lines.insert(-1, extracted)
    flagged = sorted(
        (name.split(".", 1)[1], n)
        for name, n in values.items()
        if name.startswith("pages_flagged.") and n
    )
    if flagged or values.get("model_retries"):
        text = ", ".join(f"{flag} {n}" for flag, n in flagged) or "none"
        retries = f" ({values['model_retries']} retries)" if values.get("model_retries") else ""
        lines.insert(-1, f"  flagged pages: {text}{retries}")
    by_type = sorted(
        (name.split(".", 1)[1], n)
        for name, n in values.items()
        if name.startswith("failures.") and n
    )
    lines += [f"    {stage_and_type}: {n}" for stage_and_type, n in by_type]
    return "\n".join(lines)


def pass_line(values: dict[str, int]) -> str | None:
    """Coarse-to-fine grounding: frames and calls per pass against what a dense pass would
    have sent (None when no window of the coarse pass was sent)."""
    if not values.get("video_calls.coarse"):
        return None
    parts = [
        f"{name} {values.get(f'video_frames.{name}', 0):,} frames "
        f"({values.get(f'video_calls.{name}', 0):,} calls)"
        for name in ("coarse", "refine")
    ]
    sent = values.get("video_frames.coarse", 0) + values.get("video_frames.refine", 0)
    dense = values.get("video_frames_dense_planned", 0)
    share = f" ({sent / dense:.1%})" if dense else ""
    return (
        f"  passes:    {', '.join(parts)}: {sent:,} frames sent where dense would send "
        f"{dense:,}{share}"
    )


def extraction_line(values: dict[str, int]) -> str | None:
    """--extract: valid / invalid rows and failed requests (None when nothing was asked)."""
    valid, invalid = values.get("extractions_valid", 0), values.get("extractions_invalid", 0)
    failed = values.get("extractions_failed", 0)
    if not (valid or invalid or failed):
        return None
    retries = values.get("extraction_retries", 0)
    return (
        f"  extractions: {valid} valid, {invalid} invalid, {failed} failed "
        f"({retries} retries with the validator's errors)"
    )
