"""Throughput of the HTTP API backend's client against a local server that answers after a
fixed delay with bounded concurrency: achieved requests/s vs the ideal (concurrency / delay)
at 8, 64 and 256 concurrent requests. The server runs in its own process (127.0.0.1 only).
Prints a table and writes JSON.

    .venv/bin/python bench/bench_http.py [--delay 0.5] [--rounds 6] [--out FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SERVER = r"""
import asyncio, sys
from aiohttp import web
delay, limit, port = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
gate = asyncio.Semaphore(limit)
ANSWER = {"id": "r", "model": "bench", "choices": [{"message": {"content": "ok"},
          "finish_reason": "stop"}], "usage": {"prompt_tokens": 10, "completion_tokens": 1}}
async def chat(request):
    await request.read()
    async with gate:
        await asyncio.sleep(delay)
    return web.json_response(ANSWER)
app = web.Application(client_max_size=1 << 24)
app.router.add_post("/v1/chat/completions", chat)
web.run_app(app, host="127.0.0.1", port=port, print=None, backlog=1024)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(port)


def small_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buf, format="PNG")
    return buf.getvalue()


def measure(concurrency: int, delay: float, rounds: int) -> dict:
    from vlbeam.schemas.elements import VLRequest
    from vlbeam.transforms.backends.openai_engine import ApiEngine
    from vlbeam.transforms.backends.openai_protocol import ApiConfig

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(delay), str(concurrency),
                               str(port)])  # fmt: skip
    try:
        wait_port(port)
        cfg = ApiConfig(provider="openai", base_url=f"http://127.0.0.1:{port}/v1", model="bench",
                        max_concurrency=concurrency, max_attempts=1, timeout_s=60)  # fmt: skip
        engine = ApiEngine(cfg)
        image = small_png()
        # the engine alone, fed 4 x max_concurrency requests at once (the pipeline's flow is
        # measured end to end by bench_inference_flow.py)
        size = 4 * concurrency
        batch = [VLRequest(images=(image,), prompt=f"page {i}") for i in range(size)]
        engine.infer(batch[:1])  # connect once outside the timing
        started = time.perf_counter()
        failed = 0
        for _ in range(rounds):
            failed += sum(not r.ok for r in engine.infer(batch))
        wall = time.perf_counter() - started
        engine.close()
    finally:
        server.kill()
        server.wait()
    achieved = size * rounds / wall
    ideal = concurrency / delay
    return {
        "concurrency": concurrency,
        "requests": size * rounds,
        "failed": failed,
        "wall_s": round(wall, 3),
        "achieved_rps": round(achieved, 1),
        "ideal_rps": round(ideal, 1),
        "ratio": round(achieved / ideal, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=1.0, help="server answer delay (s)")
    parser.add_argument("--rounds", type=int, default=6, help="batches per concurrency level")
    parser.add_argument("--levels", default="8,64,256")
    parser.add_argument("--out", default=str(REPO / "bench/results/bench_http.json"))
    args = parser.parse_args()
    rows = [measure(int(c), args.delay, args.rounds) for c in args.levels.split(",")]
    print(
        f"server delay {args.delay} s; each level: {args.rounds} batches of 4 x `concurrency` "
        f"requests through ApiEngine (one aiohttp pool), load avg {os.getloadavg()[0]:.2f}"
    )
    print(f"{'concurrency':>11s} {'requests':>9s} {'failed':>7s} {'wall s':>8s} "
          f"{'achieved rps':>13s} {'ideal rps':>10s} {'of ideal':>9s}")  # fmt: skip
    for r in rows:
        print(f"{r['concurrency']:11d} {r['requests']:9d} {r['failed']:7d} {r['wall_s']:8.2f} "
              f"{r['achieved_rps']:13.1f} {r['ideal_rps']:10.1f} {r['ratio']:9.1%}")  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"delay_s": args.delay, "levels": rows}, indent=2))


if __name__ == "__main__":
    main()
