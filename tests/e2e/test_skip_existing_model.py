"""`--skip-existing` skips a file only if it was processed OK by the same model and backend:
after a change of `--model` (through the real flags and the real backend), of the backend
under the same model name, or when the earlier run left the file partial, every page of it
is processed again."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import require_module
from tests.pipeline_helpers import SAMPLES_GLOB, fake_handler, inked_page, read_table, run_job
from vlbeam.schemas.elements import VLResult
from vlbeam.schemas.errors import VlbeamError

FLAGS = ("--skip-existing", "--max-new-tokens=2", "--target-long-side=256")


def statuses(out: Path, run_id: str) -> dict[str, tuple[str, str]]:
    return {
        Path(d["source_uri"]).name: (d["status"], d["model"])
        for d in read_table(out, "documents")
        if d["run_id"] == run_id
    }


def pages_of(out: Path, run_id: str) -> list[str]:
    return sorted(
        Path(p["source_uri"]).name for p in read_table(out, "pages") if p["run_id"] == run_id
    )


@pytest.mark.slow
def test_skip_existing_reprocesses_after_a_change_of_model(tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    names = ["born_digital.pdf", "scanned_page.pdf"]
    other = str(tiny_model)  # the same weights under another --model: another model

    run_job([SAMPLES_GLOB], out, *FLAGS, "--model=tiny-random", "--run-id=a")
    assert statuses(out, "a") == dict.fromkeys(names, ("ok", "tiny-random"))
    # the same model again: nothing to do (the control: skipping works at all)
    run_job([SAMPLES_GLOB], out, *FLAGS, "--model=tiny-random", "--run-id=b")
    assert statuses(out, "b") == dict.fromkeys(names, ("skipped", "tiny-random"))
    assert pages_of(out, "b") == []
    # nothing to do loads no model (the engine is made on a stage's first unit)
    assert "  model loads: 0 " in capsys.readouterr().out

    # another --model: every file is processed again, by that model
    run_job([SAMPLES_GLOB], out, *FLAGS, f"--model={other}", "--run-id=c")
    assert statuses(out, "c") == dict.fromkeys(names, ("ok", other))
    assert pages_of(out, "c") == names
    assert {p["model"] for p in read_table(out, "pages") if p["run_id"] == "c"} == {other}
    summary = capsys.readouterr().out
    assert "  documents: 2\n" in summary and "skipped" not in summary

    # and from then on, that model's results count as done
    run_job([SAMPLES_GLOB], out, *FLAGS, f"--model={other}", "--run-id=d")
    assert statuses(out, "d") == dict.fromkeys(names, ("skipped", other))


# -- the same model name behind another backend; a partial document --------------------------


def answer(_model, batch, _cfg) -> list[VLResult]:
    return [VLResult(text="page", input_tokens=1, output_tokens=1, finish_reason="stop",
                     latency_s=0.0) for _ in batch]  # fmt: skip


def red_fails_while(poison: Path):
    """A model double that fails a red page while `poison` exists and reads every other."""

    def infer(_model, batch, _cfg) -> list[VLResult]:
        def red(request) -> bool:
            image = Image.open(io.BytesIO(request.images[0])).convert("RGB")
            r, g, b = image.getpixel((image.width // 2, image.height // 2))
            return r > 200 and g < 60 and b < 60

        return [
            VLResult.failed(VlbeamError("poisoned page")) if poison.exists() and red(r)
            else answer(None, [r], None)[0]
            for r in batch
        ]  # fmt: skip

    return infer


def test_skip_existing_reprocesses_under_another_backend_with_the_same_model_name(tmp_path):
    require_module("aiohttp", "openai")
    from tests.fake_api_server import FakeApiServer

    out = tmp_path / "out"
    names = ["born_digital.pdf", "scanned_page.pdf"]
    flags = ("--skip-existing", "--target-long-side=256")
    run_job([SAMPLES_GLOB], out, *flags, "--run-id=a",
            handler=fake_handler(answer, model="qwen3-vl"))  # fmt: skip
    assert statuses(out, "a") == dict.fromkeys(names, ("ok", "qwen3-vl"))
    with FakeApiServer() as server:
        api = ("--backend=openai", "--provider=openai", "--api-model=qwen3-vl", "--no-preflight",
               f"--base-url={server.base_url}", "--api-key-env=")  # fmt: skip
        run_job([SAMPLES_GLOB], out, *flags, *api, "--run-id=b")
        assert len(server.model_requests()) == 2  # every page asked again, of the API
    assert statuses(out, "b") == dict.fromkeys(names, ("ok", "qwen3-vl"))
    assert {d["backend"] for d in read_table(out, "documents") if d["run_id"] == "b"} == {"openai"}
    assert pages_of(out, "b") == names


def test_skip_existing_reprocesses_a_partial_document(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    pages = [inked_page((200, 260), label="page 1"), inked_page((200, 260), "red", "page 2")]
    pages[0].save(src / "two.pdf", save_all=True, append_images=pages[1:])
    inked_page((200, 260), label="alone").save(src / "one.pdf")
    poison = tmp_path / "poison"
    poison.touch()
    out = tmp_path / "out"
    handler = fake_handler(red_fails_while(poison), model="m")
    run_job([f"{src}/*.pdf"], out, "--skip-existing", "--run-id=a", handler=handler)
    assert statuses(out, "a") == {"two.pdf": ("partial", "m"), "one.pdf": ("ok", "m")}
    poison.unlink()  # the page would be read now
    run_job([f"{src}/*.pdf"], out, "--skip-existing", "--run-id=b", handler=handler)
    assert statuses(out, "b") == {"two.pdf": ("ok", "m"), "one.pdf": ("skipped", "m")}
    assert pages_of(out, "b") == ["two.pdf", "two.pdf"]  # the whole document again
