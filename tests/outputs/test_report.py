"""`vlbeam report`: the self-contained QA report, checked in a real browser.

Headless Chromium loads each report from a file:// URL and is driven over the Chrome
DevTools protocol (aiohttp's websocket client): the tests read what a reader sees (texts,
element positions, loaded thumbnails), every console message and exception, and every network
request the page made, and save a screenshot under the test's temporary folder. Without
Chromium the browser tests skip locally and fail under CI (`CI=true`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import FrozenInstanceError, dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import SAMPLES, require_module
from tests.pipeline_helpers import fake_handler, run_job
from vlbeam.outputs import report as rep
from vlbeam.pipeline.cli import main as cli_main
from vlbeam.schemas import TABLES
from vlbeam.schemas.elements import VLResult

aiohttp = require_module("aiohttp", "openai")

HOSTILE_ANSWER = (
    "# Chapter II\n\n<script>window.__pwned = 1; console.error('pwned')</script>\n\n"
    '<img src=x onerror="window.__pwned = 2">\n\n[click](javascript:window.__pwned=3) '
    "**bold** and `<b>code</b>`"
)
HOSTILE_NAME = "q&a <img src=x onerror=window.__pwned=4>.pdf"
WINDOW_ERROR = 'upstream <b>overloaded</b> & "retry" later'
PAGE_ERROR = "page 2 <script>window.__pwned=5</script> refused"

# ------------------------------------------------------------------------------ browser


def find_chromium() -> str | None:
    if os.environ.get("VLBEAM_CHROMIUM"):
        return os.environ["VLBEAM_CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@dataclass
class PageLoad:
    url: str
    facts: dict
    console: list[dict] = field(default_factory=list)  # console API calls (any level)
    errors: list[str] = field(default_factory=list)  # exceptions, error logs, failed loads
    requests: list[str] = field(default_factory=list)  # every URL the page requested

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests if u != self.url and not u.startswith("data:")]


class Browser:
    """One headless Chromium per test module, driven over CDP (flattened sessions)."""

    def __init__(self, exe: str, workdir: Path) -> None:
        self.profile = workdir / "profile"
        self.log_path = workdir / "chromium.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                "--hide-scrollbars",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=self._log,
            stderr=self._log,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and len(port_file.read_text().split("\n")) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"chromium did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        port, path = port_file.read_text().split("\n")[:2]
        self.ws_url = f"ws://127.0.0.1:{port.strip()}{path.strip()}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def load(self, path: Path, screenshot: Path, script: str = "") -> PageLoad:
        return asyncio.run(asyncio.wait_for(self._load(path, screenshot, script), 90))

    async def _load(self, path: Path, screenshot: Path, script: str) -> PageLoad:
        url = path.resolve().as_uri()
        result = PageLoad(url=url, facts={})
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(self.ws_url, max_msg_size=0) as ws,
        ):
            cdp = _Cdp(ws, result)
            target = (await cdp.send("Target.createTarget", url="about:blank"))["targetId"]
            session = (await cdp.send("Target.attachToTarget", targetId=target, flatten=True))[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log", "Network"):
                await cdp.send(f"{domain}.enable", session=session)
            await cdp.send(
                "Emulation.setDeviceMetricsOverride",
                session=session,
                width=1280,
                height=1000,
                deviceScaleFactor=1,
                mobile=False,
            )
            loaded = cdp.expect("Page.loadEventFired", session)
            await cdp.send("Page.navigate", session=session, url=url)
            await asyncio.wait_for(loaded, 30)
            reply = await cdp.send(
                "Runtime.evaluate",
                session=session,
                expression=FACTS_JS + script,
                returnByValue=True,
                awaitPromise=True,
            )
            if "exceptionDetails" in reply:
                raise AssertionError(f"fact script failed: {reply['exceptionDetails']}")
            result.facts = json.loads(reply["result"]["value"])
            await asyncio.sleep(0.2)  # let late console messages arrive
            shot = await cdp.send("Page.captureScreenshot", session=session, format="png")
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            await cdp.send("Target.closeTarget", targetId=target)
            cdp.stop()
        return result


class _Cdp:
    def __init__(self, ws, result: PageLoad) -> None:
        self.ws, self.result = ws, result
        self.next_id = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.waiters: list[tuple[str, str | None, asyncio.Future]] = []
        self.reader = asyncio.ensure_future(self._read())

    def stop(self) -> None:
        self.reader.cancel()

    async def send(self, method: str, session: str | None = None, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        await self.ws.send_str(json.dumps(message))
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def expect(self, method: str, session: str | None) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.waiters.append((method, session, future))
        return future

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
                continue
            method, params = data.get("method"), data.get("params", {})
            self._record(method, params)
            for waiter in list(self.waiters):
                if waiter[0] == method and waiter[1] in (None, data.get("sessionId")):
                    self.waiters.remove(waiter)
                    if not waiter[2].done():
                        waiter[2].set_result(params)

    def _record(self, method: str, params: dict) -> None:
        r = self.result
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            r.console.append({"type": params["type"], "text": text})
            if params["type"] in ("error", "assert", "warning"):
                r.errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            r.errors.append(
                f"exception: {details.get('exception', {}).get('description', details)}"
            )
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            entry = params["entry"]
            r.errors.append(f"log {entry['level']} ({entry['source']}): {entry['text']}")
        elif method == "Network.requestWillBeSent":
            r.requests.append(params["request"]["url"])
        elif method == "Network.loadingFailed":
            r.errors.append(f"load failed: {params.get('errorText')}")


# What a reader sees, measured in the page after it loaded (positions from layout).
FACTS_JS = r"""
var visible = function(el){ var r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden'; };
var facts = {metrics: {}, failures: [], timelines: [], thumbs: [], notes: []};
document.querySelectorAll('[data-metric]').forEach(function(card){
  facts.metrics[card.dataset.metric] = {value: card.querySelector('.value').innerText,
    detail: card.querySelector('.detail').innerText, visible: visible(card)}; });
document.querySelectorAll('#failures-table tbody tr').forEach(function(tr){
  var c = tr.querySelectorAll('td');
  facts.failures.push({stage: c[0].innerText, type: c[1].innerText, file: c[2].innerText,
    unit: c[3].innerText, message: c[4].querySelector('.msg').innerText, visible: visible(tr)});
});
document.querySelectorAll('.timeline').forEach(function(tl){
  var track = tl.querySelector('.spans-track').getBoundingClientRect();
  var wtrack = tl.querySelector('.track.windows').getBoundingClientRect();
  var doc = tl.closest('article');
  facts.timelines.push({query: tl.dataset.query, title: tl.querySelector('.tl-title').innerText,
    doc: doc.querySelector('h3').innerText,
    spans: Array.from(tl.querySelectorAll('.span')).map(function(s){
      var r = s.getBoundingClientRect();
      return {start: +s.dataset.start, end: +s.dataset.end,
              left: (r.left - track.left) / track.width, width: r.width / track.width,
              top: r.top - track.top, visible: visible(s)}; }),
    windows: Array.from(tl.querySelectorAll('.win')).map(function(w){
      var r = w.getBoundingClientRect();
      return {index: +w.dataset.window, failed: w.classList.contains('failed'),
              left: (r.left - wtrack.left) / wtrack.width, text: w.innerText, title: w.title}; }),
    cards: Array.from(tl.querySelectorAll('.spancard')).map(function(c){ return c.innerText; }),
    omitted: Array.from(tl.querySelectorAll('.omitted')).map(function(o){ return o.innerText; })});
});
document.querySelectorAll('img').forEach(function(img){
  facts.thumbs.push({loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth,
    visible: visible(img), alt: img.alt}); });
document.querySelectorAll('.omitted').forEach(function(o){ facts.notes.push(o.innerText); });
facts.text = document.body.innerText;
facts.title = document.title;
facts.scripts = document.querySelectorAll('script').length;
facts.handlers = Array.from(document.querySelectorAll('*')).filter(function(el){
  return Array.from(el.attributes).some(function(a){ return /^on/i.test(a.name); }); }).length;
facts.links_out = Array.from(document.querySelectorAll('a[href]')).map(function(a){
  return a.getAttribute('href'); }).filter(function(h){ return h[0] !== '#'; });
facts.pwned = window.__pwned === undefined ? null : window.__pwned;
facts.script_ran = document.documentElement.getAttribute('data-script');
facts.docs = Array.from(document.querySelectorAll('article.doc')).map(function(a){
  return {name: a.querySelector('h3').innerText, suspect: a.classList.contains('suspect'),
          pages: Array.from(a.querySelectorAll('[data-page]')).map(function(p){
            return +p.dataset.page; })}; });
facts.no_flags_note = !!document.getElementById('no-quality-flags') &&
  visible(document.getElementById('no-quality-flags'));
"""
# appended after FACTS_JS: type into the failures filter, count the rows still shown
FILTER_JS = r"""
var box = document.querySelector('input[data-filter]');
box.value = %s; box.dispatchEvent(new Event('input'));
facts.filtered = Array.from(document.querySelectorAll('#failures-table tbody tr'))
  .filter(function(tr){ return visible(tr); }).length;
facts.filter_count = document.getElementById('failures-count').innerText;
"""
RETURN_JS = "\nJSON.stringify(facts);"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe = find_chromium()
    if exe is None:
        message = "chromium not found (Debian: apt-get install chromium; or set VLBEAM_CHROMIUM)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    instance = Browser(exe, tmp_path_factory.mktemp("chromium"))
    yield instance
    instance.close()


def assert_clean(load: PageLoad) -> None:
    """Nothing went wrong in the console, and no request left the file."""
    assert load.errors == [], load.errors
    assert load.url in load.requests  # the check below saw the page's own traffic
    assert load.foreign_requests() == []
    assert load.facts["links_out"] == []


# ------------------------------------------------------------------------------ a real run


def _make_pdf(path: Path, sizes: list[tuple[float, float]]) -> Path:
    """Pages of these sizes (points), each with a line of text drawn on it (a blank page
    would skip the model)."""
    from PIL import Image, ImageDraw

    pages = []
    for width, height in sizes:
        page = Image.new("RGB", (int(width), int(height)), "white")
        ImageDraw.Draw(page).text((40, 40), "A line of text", fill="black")
        pages.append(page)
    pages[0].save(path, format="PDF", resolution=72.0, save_all=True, append_images=pages[1:])
    return path


def qa_model(_model, batch, _cfg):
    """A test double of Qwen3-VL: markdown for one page, hostile markup for another, an error
    for the square page, spans where the sample video shows its red square (4-8 s), and an
    error for the last video window."""
    from PIL import Image

    results = []
    for request in batch:
        if request.frame_times_s is not None:
            first = request.frame_times_s[0]
            if first >= 8.0 - 1e-6:
                results.append(
                    VLResult(text=None, error_type="HTTP503", error_message=WINDOW_ERROR)
                )
                continue
            end = 5.0 if first < 4.0 else 8.0
            text = json.dumps([{"start": 4.0, "end": end, "description": "a red square appears"}])
            results.append(
                VLResult(
                    text=text,
                    input_tokens=100,
                    output_tokens=20,
                    finish_reason="stop",
                    latency_s=0.1,
                )
            )
            continue
        width, height = Image.open(io.BytesIO(request.images[0])).size
        if width == height:
            results.append(VLResult(text=None, error_type="HTTP500", error_message=PAGE_ERROR))
        elif width == 1050:  # samples/scanned_page.pdf
            results.append(
                VLResult(
                    text=HOSTILE_ANSWER,
                    input_tokens=50,
                    output_tokens=64,
                    finish_reason="length",
                    latency_s=0.2,
                )
            )
        else:
            text = (
                f"# Page {width}x{height}\n\nSome **bold** text.\n\n| a | b |\n|---|---|\n| 1 | 2 |"
            )
            results.append(
                VLResult(
                    text=text,
                    input_tokens=50,
                    output_tokens=10,
                    finish_reason="stop",
                    latency_s=0.2,
                )
            )
    return results


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """The real job (in-process runner, the real handler class with a scripted model) over the
    sample PDFs, a 3-page PDF with a hostile file name, and the sample video."""
    root = tmp_path_factory.mktemp("real-run")
    inputs = root / "in"
    inputs.mkdir()
    for name in ("born_digital.pdf", "scanned_page.pdf", "red_square.mp4"):
        shutil.copy(SAMPLES / name, inputs / name)
    _make_pdf(inputs / HOSTILE_NAME, [(612, 792), (500, 500), (792, 612)])
    out = root / "out"
    run_job(
        [str(inputs / "*")],
        out,
        "--run-id=r1",
        "--window-seconds=5",
        "--window-overlap-seconds=1",
        "--max-new-tokens=64",
        handler=fake_handler(qa_model, model="qa-double"),
    )
    return out


def test_report_of_a_real_run_in_the_browser(real_run, browser, tmp_path):
    html_path = tmp_path / "report.html"
    assert cli_main(["report", str(real_run), "-o", str(html_path)]) == 0
    load = browser.load(
        html_path, tmp_path / "screenshot.png", FILTER_JS % json.dumps("http503") + RETURN_JS
    )
    facts = load.facts
    assert_clean(load)
    assert facts["script_ran"] == "ran"  # the report's own script passed its CSP
    # summary: what a reader sees on the cards
    metrics = facts["metrics"]
    assert metrics["documents"]["value"] == "4" and metrics["documents"]["visible"]
    assert metrics["documents"]["detail"] == "2 ok · 2 partial"
    assert metrics["failures"]["value"] == "2"
    assert metrics["pages"]["value"] == "4"  # 1 + 1 sample pages, 2 of the 3-page PDF
    assert metrics["pages"]["detail"] == "of 5 pages; 1 failed"
    assert metrics["truncated"]["value"] == "1"
    assert metrics["windows"]["value"] == "2"
    assert metrics["windows"]["detail"] == "answered; 1 failed; 1 span"
    # suspects: both failures, with their messages as text
    assert len(facts["failures"]) == 2 and all(f["visible"] for f in facts["failures"])
    window_failure = next(f for f in facts["failures"] if f["type"] == "HTTP503")
    assert window_failure["message"] == WINDOW_ERROR
    assert window_failure["stage"] == "inference" and window_failure["unit"] == "2"
    assert window_failure["file"].endswith("red_square.mp4")
    page_failure = next(f for f in facts["failures"] if f["type"] == "HTTP500")
    assert page_failure["message"] == PAGE_ERROR and page_failure["file"].endswith(HOSTILE_NAME)
    assert facts["filtered"] == 1 and facts["filter_count"] == "1 shown"
    assert not facts["no_flags_note"]  # the run has a quality_flags column
    # the video's timeline: the merged span at 4-8 s of 12 s, the failed window marked
    (timeline,) = facts["timelines"]
    assert timeline["title"].startswith("event timeline")
    (span,) = timeline["spans"]
    assert span["visible"] and (span["start"], span["end"]) == (4.0, 8.0)
    assert span["left"] == pytest.approx(4.0 / 11.9933, abs=0.005)
    assert span["width"] == pytest.approx(4.0 / 11.9933, abs=0.005)
    windows = {w["index"]: w for w in timeline["windows"]}
    assert sorted(windows) == [0, 1, 2]
    assert [windows[i]["failed"] for i in (0, 1, 2)] == [False, False, True]
    assert windows[2]["left"] == pytest.approx(8.0 / 11.9933, abs=0.005)
    assert WINDOW_ERROR in windows[2]["title"]
    assert "0:04.0" in timeline["cards"][0] and "a red square appears" in timeline["cards"][0]
    # thumbnails: every page shown and the span's start frame, all loaded
    thumbs = facts["thumbs"]
    assert len(thumbs) == 2 + 3 + 1
    assert all(t["loaded"] and t["visible"] and 0 < t["width"] <= 320 for t in thumbs), thumbs
    assert any(t["alt"] == "frame at 4.0 s" for t in thumbs)
    # documents: suspects first, every page of each, the failed page shown as failed
    names = [d["name"] for d in facts["docs"]]
    assert names[0].endswith(HOSTILE_NAME)  # partial
    assert names[1].endswith("scanned_page.pdf")  # hit --max-new-tokens
    assert facts["docs"][0]["pages"] == [1, 2, 3]
    # hostile text stays text: nothing ran, and the reader sees the markup literally
    assert facts["pwned"] is None
    assert facts["scripts"] == 1 and facts["handlers"] == 0
    assert "<script>window.__pwned = 1; console.error('pwned')</script>" in facts["text"]
    assert '<img src=x onerror="window.__pwned = 2">' in facts["text"]
    assert HOSTILE_NAME in facts["text"]
    shot = (tmp_path / "screenshot.png").read_bytes()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000


def test_report_output_is_self_contained(real_run, tmp_path):
    """No URL but data: images and in-page anchors, and a CSP that forbids loading anything."""
    html_path = tmp_path / "r.html"
    report = rep.build_report(str(real_run), str(html_path))
    text = html_path.read_text()
    assert report.thumb_stats["made"] == 6 and report.thumb_stats["unavailable"] == 0
    tags = _tags(text)
    for tag, attrs in tags:
        for name, value in attrs:
            if name in ("src", "href"):
                assert value.startswith(("data:", "#")), (tag, name, value[:60])
            assert not name.startswith("on"), (tag, name)
    assert [t for t, _ in tags].count("script") == 1
    (csp,) = [dict(a)["content"] for t, a in tags if t == "meta" and dict(a).get("http-equiv")]
    (script,) = _script_texts(text)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert csp_directives(csp) == {
        "default-src": ["'none'"],  # nothing loads that isn't allowed below
        "img-src": ["data:"],  # thumbnails are inline
        "style-src": ["'unsafe-inline'"],
        "script-src": [f"'sha256-{digest}'"],  # the page's own script, by its hash
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
    }


def csp_directives(csp: str) -> dict[str, list[str]]:
    """A Content-Security-Policy as {directive: [sources]} (each directive once)."""
    directives: dict[str, list[str]] = {}
    for part in csp.split(";"):
        name, *sources = part.split() or [""]
        if name:
            assert name.lower() not in directives, f"{name} given twice"
            directives[name.lower()] = sources
    return directives


class _ScriptText(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inside, self.texts = False, []

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.inside = True
            self.texts.append("")

    def handle_endtag(self, tag):
        self.inside = self.inside and tag != "script"

    def handle_data(self, data):
        if self.inside:
            self.texts[-1] += data


def _script_texts(text: str) -> list[str]:
    parser = _ScriptText()
    parser.feed(text)
    return parser.texts


class _Hits(http.server.BaseHTTPRequestHandler):
    """A local server that records every path asked of it (the CSP test's far side)."""

    hits: list[str] = []

    def do_GET(self):
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png" if self.path.endswith(".png") else "text/css")
        self.end_headers()
        self.wfile.write(PIXEL_PNG if self.path.endswith(".png") else b"")

    def log_message(self, *args):
        pass


PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)
# loaded by the page itself (an image, a style sheet, a frame), and a fetch from the page
PROBES = (
    '<img alt="probe" src="{base}/img.png"><link rel="stylesheet" href="{base}/style.css">'
    '<iframe src="{base}/frame.html"></iframe></body>'
)
FETCH_JS = r"""
fetch(%s).then(function(){ return 'answered'; }, function(e){ return 'refused'; })
  .then(function(r){ facts.fetch = r; return JSON.stringify(facts); });
"""


def test_the_csp_blocks_what_an_injected_tag_or_script_would_load(tmp_path, browser):
    """Requests to a local server from tags slipped into the report and from a script in the
    page: without the CSP each reaches the server (the control: the check can fail); with
    it none does, and the report's own script still runs."""
    out = tmp_path / "out"
    write_big_run(out)
    report = rep.collect(rep.load_run(str(out)), SMALL)
    hits: list[str] = []
    handler = type("Hits", (_Hits,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        seen = {}
        for csp in (False, True):
            html = rep.render_html(report, csp=csp).replace("</body>", PROBES.format(base=base))
            path = tmp_path / f"probed-{csp}.html"
            path.write_text(html)
            hits.clear()
            load = browser.load(path, tmp_path / f"probed-{csp}.png",
                                FETCH_JS % json.dumps(base + "/fetch"))  # fmt: skip
            seen[csp] = (sorted(hits), load.facts["script_ran"])
    finally:
        server.shutdown()
        server.server_close()
    assert seen[False] == (["/fetch", "/frame.html", "/img.png", "/style.css"], "ran")
    assert seen[True] == ([], "ran")


class _TagParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))


def _tags(text: str) -> list[tuple[str, list]]:
    parser = _TagParser()
    parser.feed(text)
    return parser.tags


# ------------------------------------------------------------------------------ synthetic tables

DOC = "{:064x}".format


def _write(out: Path, run_id: str, table: str, rows: list[dict], schema=None) -> None:
    schema = schema or TABLES[table]
    folder = out / table / f"run={run_id}"
    folder.mkdir(parents=True, exist_ok=True)
    full = [{name: row.get(name) for name in schema.names} for row in rows]
    pq.write_table(pa.Table.from_pylist(full, schema=schema), folder / "part-00000.parquet")


def _common(run_id: str, **extra) -> dict:
    return {
        "text_source": "model",  # pages: the model read it, no flags, no retries
        "quality_flags": [],
        "retries": 0,
        "model": "m",
        "backend": "transformers",
        "prompt_id": "ocr_markdown_v1",
        "run_id": run_id,
        **extra,
    }


def write_big_run(out: Path, run_id: str = "r-big", started: str = "2026-01-02T00:00:00") -> None:
    """30 PDFs x 40 pages, 300 failures, quality flags on some pages, a long video with three
    queries: tables written directly with the schemas (plus a quality_flags column)."""
    docs, pages, failures = [], [], []
    for d in range(30):
        doc_id, uri = DOC(d + 1), f"missing/doc-{d:02d}.pdf"
        status = "partial" if d in (7, 21) else "ok"
        docs.append(
            _common(
                run_id,
                doc_id=doc_id,
                source_uri=uri,
                kind="pdf",
                size_bytes=1000,
                status=status,
                num_pages=40,
                num_failures=0,
            )
        )
        for n in range(1, 41):
            if status == "partial" and n in (5, 6):
                failures.append(
                    {
                        "source_uri": uri,
                        "doc_id": doc_id,
                        "stage": "render",
                        "unit": n,
                        "error_type": "RenderTimeout",
                        "message": f"page {n} took too long",
                        "run_id": run_id,
                    }
                )
                continue
            flags = ["repetition", "empty"] if (d == 12 and n in (3, 30)) else []
            pages.append(
                _common(
                    run_id,
                    doc_id=doc_id,
                    source_uri=uri,
                    page_number=n,
                    width_px=995,
                    height_px=1288,
                    text=f"# doc {d} page {n}\n\n" + "word " * 2000,
                    text_layer="layer " * 2000,
                    input_tokens=10,
                    output_tokens=5,
                    finish_reason="length" if (d == 3 and n == 40) else "stop",
                    latency_s=0.1,
                    cost_usd=0.001,
                    quality_flags=flags,
                )
            )
    for k in range(296):
        failures.append(
            {
                "source_uri": f"junk/file-{k:03d}.bin",
                "doc_id": None,
                "stage": "sniff",
                "unit": None,
                "error_type": "UnsupportedInput",
                "message": f"not a PDF, image or video ({k})",
                "run_id": run_id,
            }
        )
    failures.append(
        {
            "source_uri": "junk/<b>x</b>.bin",
            "doc_id": None,
            "stage": "ingest",
            "unit": None,
            "error_type": "HostileError",
            "message": PAGE_ERROR,
            "run_id": run_id,
        }
    )
    video = DOC(999)
    docs.append(
        _common(
            run_id,
            doc_id=video,
            source_uri="missing/long.mp4",
            kind="video",
            size_bytes=10,
            status="partial",
            duration_s=3600.0,
            num_failures=1,
            prompt_id="grounding_query_v1",
        )
    )
    failures.append(
        {
            "source_uri": "missing/long.mp4",
            "doc_id": video,
            "stage": "decode",
            "unit": 5,
            "error_type": "EmptyWindow",
            "message": "nothing decodes",
            "run_id": run_id,
        }
    )
    windows = [
        _common(
            run_id,
            doc_id=video,
            source_uri="missing/long.mp4",
            window_index=i,
            start_s=i * 56.0,
            end_s=min(i * 56.0 + 60.0, 3600.0),
            frame_times_s=[i * 56.0],
            num_frames=1,
            prompt_id="grounding_query_v1",
            raw_output="[]",
            finish_reason="stop",
        )
        for i in range(65)
        if i != 5
    ]
    events = [
        _common(
            run_id,
            doc_id=video,
            source_uri="missing/long.mp4",
            query="a dog",
            start_s=600.0 + 10 * k,
            end_s=605.0 + 10 * k,
            description=f"dog {k}",
            window_indexes=[10],
            prompt_id="grounding_query_v1",
        )
        for k in range(25)
    ] + [
        _common(
            run_id,
            doc_id=video,
            source_uri="missing/long.mp4",
            query="a cat",
            start_s=1800.0,
            end_s=2700.0,
            description="<i>cat</i>",
            window_indexes=[32, 33],
            prompt_id="grounding_query_v1",
        ),
        _common(
            run_id,
            doc_id=video,
            source_uri="missing/long.mp4",
            query="a cat",
            start_s=2000.0,
            end_s=2100.0,
            description="overlapping",
            window_indexes=[35],
            prompt_id="grounding_query_v1",
        ),
    ]
    _write(out, run_id, "documents", docs)
    _write(out, run_id, "pages", pages)
    _write(out, run_id, "failures", failures)
    _write(out, run_id, "video_windows", windows)
    _write(out, run_id, "video_events", events)
    (out / "_runs").mkdir(exist_ok=True)
    manifest = {
        "run_id": run_id,
        "status": "succeeded",
        "started_at": started,
        "wall_s": 120.0,
        "options": {
            "query": ["a dog", "a cat", "a bird"],
            "window_seconds": 60.0,
            "window_overlap_seconds": 4.0,
            "max_new_tokens": 512,
        },
        "inputs": ["missing/*"],
        "output": str(out),
        "versions": {},
    }
    (out / "_runs" / f"{run_id}.json").write_text(json.dumps(manifest))


SMALL = rep.ReportLimits(
    max_documents=5,
    max_pages_per_document=4,
    max_rows=50,
    max_text_chars=500,
    max_spans_per_timeline=20,
)


def test_large_run_is_bounded_suspects_first_and_counted(tmp_path, browser):
    out = tmp_path / "out"
    write_big_run(out)
    report = rep.collect(rep.load_run(str(out)), SMALL)
    rep.add_thumbnails(report)
    s = report.summary
    # the summary counts every row, whatever the report shows
    assert s.documents == 31 and s.documents_by_status == {"ok": 28, "partial": 3}
    assert s.pages_ok == 30 * 40 - 4 and s.pages_failed == 4 and s.pages_expected == 1200
    assert s.pages_flagged == 2 and s.pages_truncated == 1 and s.failures == 302
    assert s.windows_failed == 1 and s.events == 27
    assert s.cost_usd == pytest.approx(1196 * 0.001)
    assert s.pages_per_s == pytest.approx(1196 / 120)
    assert ("sniff", "UnsupportedInput", 296) in s.failures_by_stage_type
    # suspects first: partial docs, then docs with flagged/cut-off pages, then the rest
    names = [v.doc.source_uri for v in report.documents]
    assert names == [
        "missing/doc-07.pdf",
        "missing/doc-21.pdf",
        "missing/doc-03.pdf",
        "missing/doc-12.pdf",
        "missing/doc-00.pdf",
    ]
    pages_07 = [p.page_number for p in report.documents[0].pages]
    assert pages_07 == [1, 2, 5, 6]  # the failed pages first, then the start of the document
    assert [p.page_number for p in report.documents[3].pages] == [1, 2, 3, 30]
    assert report.documents[3].pages[3].flags == ("repetition", "empty")
    assert report.documents[2].pages[-1].truncated
    assert report.documents[0].pages[2].failures[0].error_type == "RenderTimeout"
    # text is cut to the limit, with the count of what was cut
    page = report.documents[4].pages[0]
    with pytest.raises(FrozenInstanceError):  # the views are read, never changed
        page.text = "changed"
    assert len(page.text) == 500 and page.text_cut == len("# doc 0 page 1\n\n") + 10000 - 500
    # thumbnails: the sources are gone, which the report says
    assert report.thumbs[("page", DOC(8), 1)] == rep.Thumb(
        note="no thumbnail: source file not found"
    )
    (video,) = report.videos
    assert [t.query for t in video.timelines] == ["a dog", "a cat", "a bird"]
    assert [t.spans_total for t in video.timelines] == [25, 2, 0]
    assert len(video.timelines[0].spans) == 20
    assert [sp.lane for sp in video.timelines[1].spans] == [0, 1]
    failed = [w for w in video.windows if w.state == "failed"]
    assert [(w.index, w.start_s, w.end_s) for w in failed] == [(5, 280.0, 340.0)]
    assert len(video.windows) == 65

    html_text = rep.render_html(report)
    assert len(html_text) < 250_000  # 1,200 pages of ~10 kB text each, bounded
    html_path = tmp_path / "big.html"
    html_path.write_text(html_text)
    load = browser.load(
        html_path, tmp_path / "big.png", FILTER_JS % json.dumps("hostileerror") + RETURN_JS
    )
    assert_clean(load)
    facts = load.facts
    assert facts["metrics"]["failures"]["value"] == "302"
    assert facts["metrics"]["flagged"]["value"] == "2"
    assert len(facts["failures"]) == 50 and facts["filtered"] == 1
    assert "252 more failures not shown (showing 50 of 302)." in facts["notes"]
    assert "25 more documents not shown (showing 5 of 30)." in facts["notes"]
    assert "36 more pages of this document not shown (showing 4 of 40)." in facts["notes"]
    assert "5 more spans not shown (showing 20 of 25)." in facts["notes"]
    hostile = next(f for f in facts["failures"] if f["type"] == "HostileError")
    assert hostile["message"] == PAGE_ERROR and hostile["file"] == "junk/<b>x</b>.bin"
    dog, cat, bird = facts["timelines"]
    assert (dog["query"], cat["query"], bird["query"]) == ("a dog", "a cat", "a bird")
    assert cat["spans"][0]["left"] == pytest.approx(0.5, abs=0.002)
    assert cat["spans"][0]["width"] == pytest.approx(0.25, abs=0.002)
    assert cat["spans"][1]["top"] > cat["spans"][0]["top"]  # overlapping: its own lane
    assert bird["spans"] == [] and "No span found." in facts["text"]
    assert [w["index"] for w in dog["windows"] if w["failed"]] == [5]
    assert "no thumbnail: source file not found" in facts["text"]
    assert facts["pwned"] is None and facts["handlers"] == 0


def test_escaping_alone_keeps_hostile_text_inert(tmp_path, browser):
    """Without the Content-Security-Policy, escaping alone must keep every hostile string text."""
    out = tmp_path / "out"
    write_big_run(out)
    run = rep.load_run(str(out))
    hostile_uri = f"missing/{HOSTILE_NAME}"
    docs = run.tables["documents"].to_pylist()
    docs[12]["source_uri"] = hostile_uri
    run.tables["documents"] = pa.Table.from_pylist(docs, schema=run.tables["documents"].schema)
    report = rep.collect(run, SMALL)
    view = report.documents[3]
    first, second, *rest = view.pages
    pages = (replace(first, text=HOSTILE_ANSWER), replace(second, text_layer=HOSTILE_ANSWER))
    documents = list(report.documents)
    documents[3] = replace(view, pages=(*pages, *rest))
    report.documents = tuple(documents)
    report.thumbs[("page", DOC(13), 1)] = rep.Thumb(note='"><img src=x onerror="window.__pwned=6">')
    html_path = tmp_path / "nocsp.html"
    html_path.write_text(rep.render_html(report, csp=False))
    assert "Content-Security-Policy" not in html_path.read_text()
    load = browser.load(html_path, tmp_path / "nocsp.png", RETURN_JS)
    assert_clean(load)
    facts = load.facts
    assert facts["pwned"] is None and facts["scripts"] == 1 and facts["handlers"] == 0
    assert len(facts["thumbs"]) == 0  # no <img> at all: the sources are missing
    assert HOSTILE_NAME in facts["text"]
    assert "<script>window.__pwned = 1; console.error('pwned')</script>" in facts["text"]
    assert '"><img src=x onerror="window.__pwned=6">' in facts["text"]
    assert not any(c["text"] == "pwned" for c in load.console)


# ------------------------------------------------------------------------------ pure parts


def test_markdown_renders_structure_and_escapes_everything():
    out = rep.render_markdown(
        "# Title\n\nSome **bold**, *it* and `a<b>`.\n\n- one\n- two\n\n1. first\n\n"
        "| h1 | h2 |\n|---|:--:|\n| <td>x</td> | 2 |\n\n"
        "```\n<script>x</script>\n```\n\n> quote\n---"
    )
    assert '<div class="md-h md-h1">Title</div>' in out
    assert "<strong>bold</strong>" in out and "<em>it</em>" in out
    assert "<code>a&lt;b&gt;</code>" in out
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in out and "<ol>\n<li>first</li>" in out
    assert "<th>h1</th>" in out and "<td>&lt;td&gt;x&lt;/td&gt;</td>" in out
    assert "<pre><code>&lt;script&gt;x&lt;/script&gt;\n</code></pre>" in out
    assert "<blockquote><p>quote</p>\n</blockquote><hr>" in out
    hostile = rep.render_markdown(HOSTILE_ANSWER + '\n\n![a" onerror="x](javascript:alert(1))')
    tags = {t for t, _ in _tags(hostile)}
    assert tags <= {"div", "p", "span", "strong", "code", "em"}, tags
    assert all(not n.startswith("on") and n != "href" for _, a in _tags(hostile) for n, _ in a)
    assert "&lt;script&gt;" in hostile and "[image: a&quot; onerror=&quot;x]" in hostile
    assert rep.render_markdown(None) == "" and rep.render_markdown("\n\n") == ""


def test_markdown_stays_fast_and_shallow_on_hostile_text():
    """Pathological answers (the length the report keeps) render in linear-ish time."""
    started = time.monotonic()
    for unit in ("![x](", "[a](b", "*a ", "** ", "[a", "|--  ", "`"):
        rep.render_markdown(unit * (6000 // len(unit)))
    assert time.monotonic() - started < 5
    deep = rep.render_markdown("> " * 3000 + "x")  # no recursion error
    assert deep.count("<blockquote>") == rep.MAX_QUOTE_DEPTH


def test_quality_flags_take_the_schemas_shape_only():
    """pages.quality_flags is a list of strings (schemas/pages.py); other shapes are errors."""
    assert rep.quality_flags(None) == [] and rep.quality_flags([]) == []
    assert rep.quality_flags(["repetition", ""]) == ["repetition"]
    for wrong in ('["a", "b"]', "a, b;c", {"empty": True}, [("empty", True)], ["a", None]):
        with pytest.raises(ValueError, match="list of strings"):
            rep.quality_flags(wrong)


def test_run_choice_and_cli_errors(tmp_path, capsys):
    out = tmp_path / "out"
    write_big_run(out, "r-old", "2026-01-01T00:00:00")
    write_big_run(out, "r-new", "2026-01-03T00:00:00")
    failed = {
        "run_id": "r-failed",
        "status": "failed",
        "started_at": "2026-01-04T00:00:00",
        "error": "job <b>died</b>",
    }
    (out / "_runs" / "r-failed.json").write_text(json.dumps(failed))
    # the latest run that has tables, by its manifest (the failed run left none)
    assert rep.load_run(str(out)).run_id == "r-new"
    assert rep.load_run(str(out), "r-old").run_id == "r-old"
    html_path = tmp_path / "x.html"
    assert cli_main(["report", str(out), "--run", "nope", "-o", str(html_path)]) == 2
    assert "no run 'nope'; runs here: r-failed, r-new, r-old" in capsys.readouterr().err
    assert cli_main(["report", str(out), "--run", "r-failed", "-o", str(html_path)]) == 0
    text = html_path.read_text()
    assert "job &lt;b&gt;died&lt;/b&gt;" in text and "No PDF or image in this run." in text
    html_path.unlink()
    assert not html_path.exists()
    assert cli_main(["report", str(tmp_path / "empty"), "-o", str(html_path)]) == 2
    assert "no vlbeam run found" in capsys.readouterr().err
    args = [
        "report",
        str(out),
        "--run",
        "r-old",
        "--no-thumbnails",
        "--max-documents",
        "2",
        "-o",
        str(html_path),
    ]
    assert cli_main(args) == 0
    text = html_path.read_text()
    assert "run r-old" in text and "Thumbnails were switched off" in text
    assert text.count('<article class="doc') == 2


def test_thumbnail_sources_and_budget(real_run, tmp_path, monkeypatch):
    # relative source_uris resolve against --source-root first, then the current folder
    monkeypatch.chdir(tmp_path)
    assert rep.resolve_source("born_digital.pdf") is None
    assert rep.resolve_source("born_digital.pdf", str(SAMPLES)) == str(SAMPLES / "born_digital.pdf")
    monkeypatch.chdir(SAMPLES.parent)
    assert rep.resolve_source("samples/red_square.mp4") == str(SAMPLES / "red_square.mp4")
    # a source whose content is not what the run saw gets no thumbnail, and says why
    maker = rep.Thumbnailer(rep.ReportLimits())
    try:
        pdf = rep.Document(DOC(1), str(SAMPLES / "born_digital.pdf"), "pdf", "ok")
        assert maker.pages(pdf, [1])[1].note.startswith("no thumbnail: the source changed")
        video = rep.Document(DOC(2), str(SAMPLES / "red_square.mp4"), "video", "ok", size_bytes=1)
        assert maker.frames(video, [4.0], 12.0)[4.0].note.endswith("(its size differs)")
    finally:
        maker.close()
    # past the byte budget, thumbnails are left out and counted
    report = rep.collect(rep.load_run(str(real_run)), rep.ReportLimits(max_thumbnail_bytes=1))
    rep.add_thumbnails(report)
    assert report.thumb_stats["made"] == 1 and report.thumb_stats["left_out"] == 5
    notes = [t.note for t in report.thumbs.values() if t.src is None]
    assert notes == ["left out: the thumbnail budget (1e-06 MB) is spent"] * 5
    assert "1 made" in rep.render_html(report)
