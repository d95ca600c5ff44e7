"""`vlbeam plan` against the run it plans: a 5,000-page PDF, planned, then run with
`--backend openai` against an instant local server (answers at once, a fixed usage), each
end to end through the CLI in its own process; and `vlbeam plan` over the whole corpus.
Target (issue #23): plan < 5 % of the run's time on the long PDF. Prints a table, writes
bench/results/bench_plan.json.

    ./py bench/bench_plan.py [--pages 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("VLBEAM_CORPUS") or REPO.parent / "shared" / "corpus")
SOURCE_PDF = "pdf/good/pdfjs_tracemonkey.pdf"  # 14 real pages, imported over and over


def long_pdf(path: Path, pages: int) -> Path:
    import pypdfium2 as pdfium

    source = pdfium.PdfDocument(str(CORPUS / SOURCE_PDF))
    out = pdfium.PdfDocument.new()
    while len(out) < pages:
        out.import_pages(source, list(range(min(len(source), pages - len(out)))))
    out.save(str(path))
    out.close()
    source.close()
    return path


class InstantServer:
    """OpenAI chat completions that answer at once (127.0.0.1, a free port)."""

    def __init__(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    async def _chat(self, request):
        from aiohttp import web

        body = await request.json()
        self.requests += 1
        return web.json_response({
            "id": f"r{self.requests}", "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "text"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 1, "total_tokens": 1001},
        })  # fmt: skip

    def start(self) -> InstantServer:
        from aiohttp import web

        async def setup():
            app = web.Application(client_max_size=64 << 20)
            app.router.add_post("/v1/chat/completions", self._chat)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(setup(), self._loop).result(30)
        return self


def timed(argv: list[str]) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "vlbeam.pipeline.cli", *argv],
                          capture_output=True, text=True, check=False)  # fmt: skip
    wall = time.monotonic() - started
    if done.returncode:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=5000)
    parser.add_argument("--out", default=str(REPO / "bench/results/bench_plan.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vlbeam-bench-plan-"))
    pdf = long_pdf(work / "long.pdf", args.pages)
    server = InstantServer().start()
    api = ["--backend=openai", "--provider=openai", f"--base-url=http://127.0.0.1:{server.port}/v1",
           "--api-model=m", "--api-key-env=", "--max-concurrency=64"]  # fmt: skip
    plan_s, plan_out = timed(["plan", f"--input={pdf}", *api, "--json"])
    planned = json.loads(plan_out)
    everything = [f"--input={CORPUS}/pdf/*/*", f"--input={CORPUS}/video/*/*"]
    corpus_s, corpus_out = timed(["plan", *everything, "--model=tiny-random", "--json"])
    run_s, _ = timed(["run", f"--input={pdf}", f"--output={work / 'out'}", *api,
                      "--progress=none"])  # fmt: skip
    corpus = json.loads(corpus_out)
    rows = [
        {"what": f"vlbeam plan, {args.pages}-page PDF", "wall_s": round(plan_s, 2),
         "pages": planned["pages"], "model_calls": planned["model_calls"]},
        {"what": f"vlbeam run --backend openai (instant server), {args.pages}-page PDF",
         "wall_s": round(run_s, 2), "pages": planned["pages"], "model_calls": server.requests},
        {"what": "vlbeam plan, corpus (pdf + video, good + bad)", "wall_s": round(corpus_s, 2),
         "pages": corpus["pages"], "model_calls": corpus["model_calls"]},
    ]  # fmt: skip
    ratio = plan_s / run_s
    print(f"{'what':<70} {'wall s':>8} {'pages':>7} {'calls':>7}")
    for row in rows:
        print(f"{row['what']:<70} {row['wall_s']:>8.2f} {row['pages']:>7} {row['model_calls']:>7}")
    print(f"plan / run = {ratio:.3%} (target < 5 %)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "plan_over_run": ratio,
                                          "cpus": os.cpu_count()}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
