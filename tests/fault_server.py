"""A fake OpenAI-compatible inference server run as a separate process, for `--backend vllm
--server-command "{python} tests/fault_server.py --port {port} ..."`: it answers the health
URL (`GET /v1/models`) and chat completions, reading the page it was sent from the pixels
(`page_colour` / `page_of`: a colour per page), so a row that names the wrong page fails a test.

Faults (argv):
- `--crash-on N`: a request showing page N kills the server at once (exit 1), every time:
  a poison request, as one that crashes vLLM.
- `--hang-after K`: the K-th chat request (and everything after it, the health URL included:
  the server is single-threaded) never gets an answer: a hung but running server.

Standard library and PIL only (it runs outside the test process).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer

STEP = 20  # colour step per digit: wide enough to survive JPEG inside the PDF


def page_colour(index: int) -> tuple[int, int, int]:
    """The background colour of page `index` (0-based, < 100)."""
    return (40 + STEP * (index // 10), 128, 40 + STEP * (index % 10))


def page_of(rgb: tuple[int, int, int]) -> int:
    """The page index a colour stands for (nearest step)."""
    red, _, blue = rgb[:3]
    return round((red - 40) / STEP) * 10 + round((blue - 40) / STEP)


def _image_page(url: str) -> int:
    from PIL import Image

    data = base64.b64decode(url.split(",", 1)[1])
    with Image.open(io.BytesIO(data)) as image:
        return page_of(image.convert("RGB").getpixel((1, 1)))


def _pages(body: dict) -> list[int]:
    pages = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    pages.append(_image_page(part["image_url"]["url"]))
    return pages


class _Handler(BaseHTTPRequestHandler):
    crash_on: int | None = None
    hang_after: int | None = None
    seen = 0
    lock = threading.Lock()

    def log_message(self, fmt, *args) -> None:  # quiet: the worker forwards our output
        return None

    def _send(self, code: int, payload: dict) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        with self.lock:
            _Handler.seen += 1
            seen = _Handler.seen
        if self.hang_after is not None and seen >= self.hang_after:
            print(f"hanging on request {seen}", flush=True)
            time.sleep(3600)
        pages = _pages(body)
        if self.crash_on is not None and self.crash_on in pages:
            print(f"crashing on page {self.crash_on}", flush=True)
            os._exit(1)
        text = " ".join(f"page {p}" for p in pages) or "no image"
        self._send(
            200,
            {
                "id": f"fake-{seen}",
                "object": "chat.completion",
                "model": body.get("model", "fake"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
            },
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--crash-on", type=int, default=None)
    parser.add_argument("--hang-after", type=int, default=None)
    args, _ = parser.parse_known_args(argv)
    _Handler.crash_on, _Handler.hang_after = args.crash_on, args.hang_after
    server_class = HTTPServer if args.hang_after is not None else ThreadingHTTPServer
    server = server_class((args.host, args.port), _Handler)
    print(f"fake server on {args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
