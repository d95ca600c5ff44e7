"""Do the tests catch what they claim? Break the product code on purpose, run the test(s)
that guard the behaviour, expect them to fail, put the code back (issue #26).

Each mutation is a text patch to one product file: `old` must occur exactly once and is
replaced by `new` for the duration of its run; the file's bytes are restored afterwards
(also on Ctrl-C or an error). A mutation counts as caught when pytest reports failed tests
(exit code 1); an import or collection error (exit code 2 and up) is reported as such,
because a mutation that breaks the module's syntax proves nothing about the test.

    python bench/mutations.py                 # every mutation, a table at the end
    python bench/mutations.py --only 4 11     # the items named (issue #26 numbering)
    python bench/mutations.py --baseline      # first run each guarding test unmutated
    python bench/mutations.py --list

Run it from a checkout with nothing else changing the product files meanwhile. It writes
`bench/results/mutations.json` (one row per mutation).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    item: int  # the blind spot's number in issue #26
    name: str
    path: str  # product file, relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]  # pytest node ids that must fail
    timeout_s: int = 600

    def __post_init__(self) -> None:
        if self.old == self.new:
            raise ValueError(f"{self.name}: the patch changes nothing")


@dataclass
class Outcome:
    item: int
    name: str
    path: str
    tests: list[str]
    baseline: str = "not run"  # passed / FAILED / not run
    mutated: str = ""  # caught / MISSED / error (rc N) / timeout
    seconds: float = 0.0
    tail: list[str] = field(default_factory=list)


T = "tests/"
TEXT_POLICIES = (
    "e2e/test_text_policy.py::test_text_layer_policies_on_born_digital_and_scanned_pages"
)
CSP_BROWSER = (
    "outputs/test_report.py::test_the_csp_blocks_what_an_injected_tag_or_script_would_load"
)
MUTATIONS: tuple[Mutation, ...] = (
    # 1: swap_folders that never calls the atomic exchange: readers see no folder between
    # the two renames
    Mutation(
        1,
        "swap_folders skips renameat2(RENAME_EXCHANGE)",
        "outputs/compact.py",
        "    if _exchange(live, new):\n        return\n    parked",
        "    parked",
        (T + "outputs/test_compact.py::test_readers_see_the_old_rows_or_the_new_never_both",),
    ),
    # 2: the child never reopens a long document
    Mutation(
        2,
        "helper never reopens the document",
        "transforms/media/helper_process.py",
        "self.pages_since_open >= REOPEN_EVERY_PAGES:",
        "self.pages_since_open >= 10**9:",
        (T + "media/test_helper_process.py::test_long_documents_are_reopened_to_keep_memory_flat",),
    ),
    # 4: the README's secret words the issue found unexercised
    Mutation(
        4,
        "secret-name rule without auth|private|cookie|signature|passphrase|pwd",
        "schemas/redaction.py",
        'r"key|secret|passw|passphrase|pwd|token|credential|connection_?str|auth|private|cookie"'
        '\n    r"|signature|^sig$"',
        'r"key|secret|passw|token|credential|connection_?str|^sig$"',
        (T + "outputs/test_manifest.py",),
    ),
    # 14: 403 no longer counts as an authentication failure
    Mutation(
        14,
        "403 does not abort",
        "transforms/backends/openai_engine.py",
        "AUTH_STATUS = frozenset({401, 403})",
        "AUTH_STATUS = frozenset({401})",
        (T + "backends/test_api_backend.py::test_auth_failures_abort_after_that_many_in_a_row",),
    ),
    Mutation(
        14,
        "400 and 404 abort like 401",
        "transforms/backends/openai_engine.py",
        "AUTH_STATUS = frozenset({401, 403})",
        "AUTH_STATUS = frozenset({400, 401, 403, 404})",
        (T + "backends/test_api_backend.py::test_client_errors_never_abort_the_run",),
    ),
    # 8: concurrent waiters all scheduled one interval after "now" (no queue of starts)
    Mutation(
        8,
        "rate limiter schedules from now, not from the last start",
        "transforms/backends/openai_engine.py",
        "self._next = start + self._interval",
        "self._next = now + self._interval",
        (
            T + "backends/test_api_backend.py::test_rate_limiter_schedules_evenly_spaced_starts",
            T + "backends/test_api_backend.py::test_requests_per_minute_spaces_the_starts",
        ),
    ),
    Mutation(
        8,
        "rate limiter interval halved",
        "transforms/backends/openai_engine.py",
        "self._interval = 60.0 / per_minute if per_minute else 0.0",
        "self._interval = 30.0 / per_minute if per_minute else 0.0",
        (T + "backends/test_api_backend.py::test_requests_per_minute_spaces_the_starts",),
    ),
    # 16: an HTTP-date Retry-After ignored (backoff only)
    Mutation(
        16,
        "Retry-After HTTP date not parsed",
        "transforms/backends/openai_engine.py",
        "        when = parsedate_to_datetime(value).timestamp()",
        "        when = parsedate_to_datetime(value).timestamp()\n        return None",
        (T + "backends/test_api_backend.py::test_429_waits_for_a_retry_after_http_date",),
    ),
    Mutation(
        16,
        "Retry-After HTTP date measured against the monotonic clock",
        "transforms/backends/openai_engine.py",
        "when - (now if now is not None else time.time())",
        "when - (now if now is not None else time.monotonic())",
        (T + "backends/test_api_backend.py::test_429_waits_for_a_retry_after_http_date",),
    ),
    # 5: the text layer used as read, not cleaned
    Mutation(
        5,
        "prefer policy's text not cleaned",
        "transforms/inference.py",
        'text = clean_text_layer(ref.text_layer or "") if',
        'text = (ref.text_layer or "") if',
        (
            T
            + "e2e/test_text_policy.py::test_text_layer_policies_on_born_digital_and_scanned_pages",
        ),
    ),
    Mutation(
        5,
        "cleaning keeps pdfium's hyphen markers",
        "transforms/media/text_layer.py",
        'text.replace("\\r\\n", "\\n").replace(PDFIUM_SOFT_HYPHEN, "")',
        'text.replace("\\r\\n", "\\n")',
        (
            T
            + "e2e/test_text_policy.py::test_text_layer_policies_on_born_digital_and_scanned_pages",
        ),
    ),
    # 6: a looser CSP, seen by the exact directive comparison and, separately, by the browser
    Mutation(
        6,
        "CSP img-src also allows https:",
        "outputs/report/render.py",
        "\"default-src 'none'; img-src data:; ",
        "\"default-src 'none'; img-src data: https:; ",
        (T + "outputs/test_report.py::test_report_output_is_self_contained",),
    ),
    Mutation(
        6,
        "CSP with an added connect-src *",
        "outputs/report/render.py",
        "base-uri 'none'; form-action 'none'\"",
        "base-uri 'none'; form-action 'none'; connect-src *\"",
        (T + "outputs/test_report.py::test_report_output_is_self_contained",),
    ),
    Mutation(
        6,
        "CSP without base-uri",
        "outputs/report/render.py",
        "base-uri 'none'; form-action 'none'\"",
        "form-action 'none'\"",
        (T + "outputs/test_report.py::test_report_output_is_self_contained",),
    ),
    Mutation(
        6,
        "CSP img-src allows http: (browser test alone)",
        "outputs/report/render.py",
        "\"default-src 'none'; img-src data:; ",
        "\"default-src 'none'; img-src data: http:; ",
        (T + CSP_BROWSER,),
    ),
    Mutation(
        6,
        "CSP with connect-src * (browser test alone)",
        "outputs/report/render.py",
        "base-uri 'none'; form-action 'none'\"",
        "base-uri 'none'; form-action 'none'; connect-src *\"",
        (T + CSP_BROWSER,),
    ),
    # 7: the suite's own rules (here the "product" is the CI script and the test helper)
    Mutation(
        7,
        ".ci/run no longer exports CI=true",
        ".ci/run",
        "export CI=true\n",
        "",
        (T + "test_suite_rules.py",),
    ),
    Mutation(
        7,
        "an importorskip comes back",
        "tests/backends/test_managed_server.py",
        'require_module("PIL", "all")',
        'pytest.importorskip("PIL")',
        (T + "test_suite_rules.py",),
    ),
    Mutation(
        7,
        "require_module skips under CI too",
        "tests/conftest.py",
        '        if os.environ.get("CI") == "true":\n            raise\n',
        "",
        (T + "test_suite_rules.py",),
    ),
    # 11: a republished run id keeps the files of its first publish (the commit no longer
    # lists them, but nothing deletes them: a plain Parquet reader sees both publishes)
    Mutation(
        11,
        "publish keeps the same run id's earlier files",
        "outputs/publish.py",
        "        delete_quietly(view.garbage(table))\n",
        "",
        (
            T + "e2e/test_scheduled_runs.py::"
            "test_the_same_run_id_published_again_with_fewer_shards_leaves_no_stale_shard",
        ),
    ),
    # 12: what --skip-existing counts as done
    Mutation(
        12,
        "skip-existing ignores the backend",
        "pipeline/process.py",
        'r["model"] == model and r["backend"] == backend',
        'r["model"] == model',
        (
            T + "e2e/test_skip_existing_model.py::"
            "test_skip_existing_reprocesses_under_another_backend_with_the_same_model_name",
        ),
    ),
    Mutation(
        12,
        "skip-existing counts a partial document as done",
        "pipeline/process.py",
        'lambda r: r["status"] == "ok" and',
        'lambda r: r["status"] in ("ok", "partial") and',
        (T + "e2e/test_skip_existing_model.py::test_skip_existing_reprocesses_a_partial_document",),
    ),
    # 15: the merge gap and repeated queries
    Mutation(
        15,
        "merge gap 0 (overlap only)",
        "pipeline/process.py",
        "gap_s=1.0 / video_cfg.sampling.fps",
        "gap_s=0.0",
        (T + "e2e/test_grounding_merge.py",),
    ),
    Mutation(
        15,
        "merge gap fixed at 1 s whatever --fps",
        "pipeline/process.py",
        "gap_s=1.0 / video_cfg.sampling.fps",
        "gap_s=1.0",
        (T + "e2e/test_grounding_merge.py",),
    ),
    Mutation(
        15,
        "only the last --query kept",
        "pipeline/prompts.py",
        "found = list(queries or [])",
        "found = list(queries or [])[-1:]",
        (T + "e2e/test_grounding_merge.py",),
    ),
    # 13: time bounds through the job (a caught mutation here ends in pytest's timeout)
    Mutation(
        13,
        "helper calls wait without a deadline",
        "transforms/media/helper_process.py",
        "reply = _read_msg(proc.stdout.fileno(), time.monotonic() + timeout_s)",
        "reply = _read_msg(proc.stdout.fileno(), time.monotonic() + 3600)",
        (T + "e2e/test_helper_time_bounds.py",),
    ),
    Mutation(
        13,
        "--decode-timeout-s not used for a window",
        "transforms/video_frames.py",
        "                self._cfg.timeout_s,\n            )",
        "                100 * self._cfg.timeout_s,\n            )",
        (T + "e2e/test_helper_time_bounds.py",),
    ),
    # 3: the pipeline sends each page with its colours inverted (same size and token count:
    # only the answer of a model that looks at the picture can tell; the stock tiny
    # checkpoint answers newlines to both). The sharp checkpoint answers alike to mirrored,
    # flipped, shifted or greyscale pages of this sample, so those are not used here.
    Mutation(
        3,
        "pages reach the model with inverted colours",
        "transforms/ocr.py",
        "        images=(page.image,), prompt=prompt.text, "
        "prompt_first=prompt.prompt_first\n    )\n",
        "        images=(_inverted(page.image),), prompt=prompt.text,\n"
        "        prompt_first=prompt.prompt_first,\n    )\n\n\n"
        "def _inverted(data):\n"
        "    import io\n    from PIL import Image, ImageOps\n    buf = io.BytesIO()\n"
        "    ImageOps.invert(Image.open(io.BytesIO(data)).convert('RGB')).save(buf, 'PNG')\n"
        "    return buf.getvalue()",
        (T + "e2e/test_pipeline_ocr.py::test_tiny_model_end_to_end_on_samples",),
    ),
    # 9: the kill test waits for the first streamed bytes, then kills: a server that is not
    # restarted fails it
    Mutation(
        9,
        "a dead managed server is not restarted",
        "transforms/backends/managed_server.py",
        "            elif not self.alive():\n                self.restart()",
        "            elif False:\n                self.restart()",
        (T + "backends/test_managed_server.py::test_transformers_serve_start_kill_restart_stop",),
    ),
    # 10: expected values from the manifest, page boxes and packets
    Mutation(
        10,
        "page size truncated instead of rounded",
        "transforms/media/pdf_render.py",
        "max(1, round(width * scale)), max(1, round(height * scale))",
        "max(1, int(width * scale)), max(1, int(height * scale))",
        (T + "e2e/test_corpus_outcomes.py",),
    ),
    Mutation(
        10,
        "video duration from the container, not the stream",
        "transforms/media/video_decode.py",
        "    if stream.duration and time_base:",
        "    if False:",
        (T + "e2e/test_corpus_outcomes.py",),
    ),
)


def run_tests(tests: tuple[str, ...], timeout_s: int) -> tuple[int | None, list[str]]:
    env = {**os.environ, "CI": "true"}
    argv = [sys.executable, "-m", "pytest", "-n", "0", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(
            argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        return None, out.splitlines()[-6:]
    lines = (proc.stdout + proc.stderr).splitlines()
    return proc.returncode, [line for line in lines if line.strip()][-6:]


def apply(m: Mutation) -> bytes:
    path = REPO / m.path
    original = path.read_bytes()
    text = original.decode()
    count = text.count(m.old)
    if count != 1:
        raise SystemExit(f"{m.name}: the text to replace occurs {count} times in {m.path}")
    path.write_text(text.replace(m.old, m.new))
    return original


def check(m: Mutation, baseline: bool) -> Outcome:
    outcome = Outcome(m.item, m.name, m.path, list(m.tests))
    started = time.monotonic()
    if baseline:
        rc, tail = run_tests(m.tests, m.timeout_s)
        outcome.baseline = "passed" if rc == 0 else f"FAILED (rc {rc})"
        if rc != 0:
            outcome.tail = tail
    original = apply(m)
    try:
        rc, tail = run_tests(m.tests, m.timeout_s)
    finally:
        (REPO / m.path).write_bytes(original)
    outcome.mutated = {0: "MISSED", 1: "caught", None: "timeout"}.get(rc, f"error (rc {rc})")
    outcome.tail = outcome.tail or tail
    outcome.seconds = round(time.monotonic() - started, 1)
    return outcome


def table(outcomes: list[Outcome]) -> str:
    rows = [("item", "mutation", "baseline", "mutated", "s")]
    rows += [(str(o.item), o.name, o.baseline, o.mutated, f"{o.seconds:.0f}") for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", type=int, nargs="*", help="issue #26 item numbers")
    parser.add_argument("--baseline", action="store_true", help="run each test unmutated first")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--json", default=str(REPO / "bench" / "results" / "mutations.json"))
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.item in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.item:>2}  {m.name}  ({m.path})  -> {' '.join(m.tests)}")
        return 0
    outcomes = []
    for m in chosen:
        outcome = check(m, args.baseline)
        print(f"[{outcome.mutated}] {m.item}: {m.name} ({outcome.seconds:.0f} s)", flush=True)
        if outcome.mutated != "caught" or outcome.baseline.startswith("FAILED"):
            print("    " + "\n    ".join(outcome.tail), flush=True)
        outcomes.append(outcome)
    print()
    print(table(outcomes))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps([asdict(o) for o in outcomes], indent=2) + "\n")
    ok = all(o.mutated == "caught" and not o.baseline.startswith("FAILED") for o in outcomes)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
