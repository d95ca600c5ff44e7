"""What `--extract` adds to a run (issue #22): extraction's tokens and time per document
relative to that document's OCR, end to end through `vlbeam run`.

Runs the job twice on the same PDFs, each in a fresh process (`vlbeam run`): OCR only, then
OCR + `--extract` with a small invoice-like schema. From the second run's tables, per
document: OCR input/output tokens and summed model latency (the `pages` rows) against the
extraction's (the `extractions` row: every attempt and chunk summed). The end-to-end wall of
both runs gives the extraction pass's extra wall time.

Default model: the tiny random Qwen3-VL on CPU (`--model tiny-random`; llguidance-constrained
decoding, so the answers validate but say nothing), which measures the mechanics (the extra
request per document, the constraint's overhead), not a real model's costs. Pass `--model` /
backend flags after `--` to measure a real one, e.g. `-- --backend=vllm --model=Qwen/...`.

Run: `.venv/bin/python bench/bench_extract_cost.py [--inputs GLOB] [--max-new-tokens N]
[--out FILE] [-- extra vlbeam run flags]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "bench_extract_cost.json"
SCHEMA = {
    "title": "Document",
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 80},
        "kind": {"enum": ["invoice", "paper", "form", "letter", "other"]},
        "dates": {"type": "array", "maxItems": 4, "items": {"type": "string", "maxLength": 20}},
    },
    "required": ["title", "kind", "dates"],
    "additionalProperties": False,
}


def vlbeam_run(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vlbeam.pipeline.cli", "run", *args], check=True,
                   stdout=subprocess.DEVNULL, env=os.environ.copy())  # fmt: skip
    return time.perf_counter() - started


def per_document(out: Path) -> list[dict]:
    pages = pq.read_table(out / "pages").to_pylist()
    rows = []
    for ex in pq.read_table(out / "extractions").to_pylist():
        mine = [p for p in pages if p["doc_id"] == ex["doc_id"]]
        rows.append({
            "document": Path(ex["source_uri"]).name,
            "pages": len(mine),
            "ocr_in": sum(p["input_tokens"] or 0 for p in mine),
            "ocr_out": sum(p["output_tokens"] or 0 for p in mine),
            "ocr_s": sum(p["latency_s"] or 0 for p in mine),
            "ex_in": ex["input_tokens"] or 0,
            "ex_out": ex["output_tokens"] or 0,
            "ex_s": ex["latency_s"] or 0,
            "valid": ex["valid"],
            "attempts": ex["attempts"],
            "guided": ex["guided"],
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", default=str(REPO_ROOT / "samples" / "*.pdf"))
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    model = [] if any(a.startswith("--model") or a.startswith("--backend") for a in extra) else [
        "--model=tiny-random", "--device=cpu"]  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        schema = Path(work) / "document.schema.json"
        schema.write_text(json.dumps(SCHEMA))
        common = [f"--input={args.inputs}", f"--max-new-tokens={args.max_new_tokens}",
                  "--target-long-side=512", *model, *extra]  # fmt: skip
        ocr_wall = vlbeam_run([*common, f"--output={work}/ocr"])
        ex_wall = vlbeam_run([*common, f"--output={work}/ex", f"--extract={schema}"])
        rows = per_document(Path(work) / "ex")
    print(f"{'document':24} {'pages':>5} {'OCR tok in/out':>15} {'OCR s':>7} "
          f"{'extract tok in/out':>19} {'extract s':>9} {'tok %':>6} {'s %':>6} valid")  # fmt: skip
    for r in rows:
        tok = (r["ex_in"] + r["ex_out"]) / max(1, r["ocr_in"] + r["ocr_out"])
        sec = r["ex_s"] / r["ocr_s"] if r["ocr_s"] else float("nan")
        print(f"{r['document']:24} {r['pages']:>5} {r['ocr_in']:>7}/{r['ocr_out']:<7} "
              f"{r['ocr_s']:>7.2f} {r['ex_in']:>9}/{r['ex_out']:<9} {r['ex_s']:>9.2f} "
              f"{tok:>6.0%} {sec:>6.0%} {r['valid']}")  # fmt: skip
    extra_s = ex_wall - ocr_wall
    print(f"end to end: OCR only {ocr_wall:.1f} s, OCR + --extract {ex_wall:.1f} s "
          f"(+{extra_s:.1f} s, {ex_wall / ocr_wall - 1:+.0%}) for {len(rows)} docs")  # fmt: skip
    result = {"rows": rows, "ocr_wall_s": ocr_wall, "extract_wall_s": ex_wall, "flags": common}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
