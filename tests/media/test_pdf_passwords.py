"""PDF passwords outside the options: --pdf-password-env and --pdf-passwords-file, resolved per
file on the worker; --pdf-password still works with a warning. No password in a table, a log,
a failure message, the manifest, the options or a pickled transform."""

from __future__ import annotations

import base64
import bz2
import contextlib
import hashlib
import io
import json
import logging
import pickle
import shutil
import zlib
from pathlib import Path

import apache_beam as beam
import pyarrow.dataset as ds
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

from tests.pipeline_helpers import fake_handler, run_job
from vlbeam.pipeline.options import VlbeamOptions, render_config
from vlbeam.pipeline.run import run
from vlbeam.schemas import TABLES
from vlbeam.schemas.config import RenderConfig
from vlbeam.schemas.errors import EncryptedPdf, RemoteError
from vlbeam.transforms.media import pdf_passwords
from vlbeam.transforms.media.helper_process import HelperProcess
from vlbeam.transforms.media.pdf_passwords import (
    PasswordMap,
    PasswordsFileError,
    check_password_sources,
    load_passwords,
    parse_passwords,
    pdf_password,
    with_pdf_password,
)

RC4 = "pdf/bad/samplefiles_libreoffice-writer-password.pdf"
RC4_PASSWORD = "openpassword"
AES = "pdf/bad/pdfjs_saslprep-r6.pdf"
AES_PASSWORD = "S\u00aaSL\u00adprep"  # opens only in its SASLprep form, "SaSLprep"
WRONG_PASSWORD = "not-the-password-4711"
# every form a password could take in a file: raw, SASLprep'd, and as JSON escapes it
SECRETS = [RC4_PASSWORD, AES_PASSWORD, "SaSLprep", WRONG_PASSWORD]

DOC = "d" * 64


@pytest.fixture(autouse=True)
def _fresh_cache():
    pdf_passwords._cache.clear()
    yield
    pdf_passwords._cache.clear()


# ---------------------------------------------------------------- the passwords file


def test_lookup_order_doc_id_then_uri_then_globs_in_file_order() -> None:
    passwords = PasswordMap(
        (
            ("*.pdf", "any-pdf"),
            ("gs://b/finance/*.pdf", "finance"),
            ("gs://b/finance/q4.pdf", "q4-exact"),
            (DOC, "by-content"),
            ("report-??.pdf", "report"),
        )
    )
    assert passwords.lookup("gs://b/finance/q4.pdf", DOC) == "by-content"
    assert passwords.lookup("gs://b/finance/q4.pdf", "e" * 64) == "q4-exact"
    assert passwords.lookup("gs://b/finance/q3.pdf") == "any-pdf"  # first glob that matches
    assert passwords.lookup("gs://b/other/report-07.pdf") == "any-pdf"
    only_names = PasswordMap((("report-??.pdf", "report"), ("gs://b/finance/*", "finance")))
    assert only_names.lookup("/data/in/report-07.pdf") == "report"
    assert only_names.lookup("gs://b/finance/sub/x.pdf") == "finance"  # fnmatch: * spans /
    assert only_names.lookup("gs://b/other/x.pdf") is None
    assert RC4_PASSWORD not in repr(PasswordMap(((RC4, RC4_PASSWORD),)))


@pytest.mark.parametrize(
    "text",
    [
        '{"a.pdf": "openpassword"',  # truncated
        '["openpassword"]',
        '{"a.pdf": ["openpassword"]}',
        '{"": "openpassword"}',
        "a.pdf openpassword",
    ],
)
def test_a_bad_passwords_file_never_quotes_its_content(text: str) -> None:
    with pytest.raises(PasswordsFileError) as info:
        parse_passwords(text, "the file")
    assert RC4_PASSWORD not in str(info.value)


def test_passwords_file_is_read_through_beam_filesystems_once(tmp_path: Path) -> None:
    path = tmp_path / "pw.json"
    path.write_text(json.dumps({"a.pdf": RC4_PASSWORD}))
    assert load_passwords(str(path)).lookup("/x/a.pdf") == RC4_PASSWORD
    path.write_text("{}")  # read once per process: a worker does not re-read per document
    assert load_passwords(str(path)).lookup("/x/a.pdf") == RC4_PASSWORD
    with pytest.raises(PasswordsFileError, match="cannot read the PDF passwords file"):
        load_passwords(str(tmp_path / "missing.json"))


def test_precedence_file_then_env_then_flag(tmp_path: Path) -> None:
    path = tmp_path / "pw.json"
    path.write_text(json.dumps({"a.pdf": "from-file"}))
    cfg = RenderConfig(password="from-flag", password_env="PW", passwords_file=str(path))
    env = {"PW": "from-env"}
    assert pdf_password(cfg, "/in/a.pdf", environ=env) == "from-file"
    assert pdf_password(cfg, "/in/b.pdf", environ=env) == "from-env"
    assert pdf_password(cfg, "/in/b.pdf", environ={"PW": ""}) == "from-flag"
    assert pdf_password(RenderConfig(), "/in/a.pdf", environ=env) is None
    resolved = with_pdf_password(cfg, "/in/a.pdf", environ=env)
    assert resolved.password == "from-file" and "from-file" not in repr(resolved)
    plain = RenderConfig()
    assert with_pdf_password(plain, "/in/a.pdf", environ=env) is plain


def test_config_holds_names_only(monkeypatch, caplog) -> None:
    monkeypatch.setenv("VLBEAM_TEST_PDF_PW", AES_PASSWORD)
    options = PipelineOptions(["--input=x", "--output=y", "--pdf-password-env=VLBEAM_TEST_PDF_PW"])
    with caplog.at_level(logging.DEBUG):
        cfg = render_config(options.view_as(VlbeamOptions))
    assert cfg.password is None and cfg.password_env == "VLBEAM_TEST_PDF_PW"
    assert AES_PASSWORD.encode() not in pickle.dumps(cfg)
    assert AES_PASSWORD not in json.dumps(options.get_all_options(retain_unknown_options=True))
    assert AES_PASSWORD not in caplog.text and "travels in the pipeline options" not in caplog.text
    with pytest.raises(ValueError, match="environment variable name"):
        RenderConfig(password_env="NOT A NAME")


def test_legacy_flag_works_with_a_warning(caplog) -> None:
    options = PipelineOptions(["--input=x", "--output=y", f"--pdf-password={RC4_PASSWORD}"])
    with caplog.at_level(logging.WARNING):
        cfg = render_config(options.view_as(VlbeamOptions))
    assert cfg.password == RC4_PASSWORD
    assert "--pdf-password travels in the pipeline options" in caplog.text
    assert RC4_PASSWORD not in caplog.text


def test_launcher_checks(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(f"{RC4_PASSWORD}\n")
    with pytest.raises(PasswordsFileError, match="not valid JSON") as info:
        check_password_sources(RenderConfig(passwords_file=str(bad)))
    assert RC4_PASSWORD not in str(info.value)
    warnings = check_password_sources(RenderConfig(password_env="UNSET_VAR"), environ={})
    assert warnings == [
        "--pdf-password-env: UNSET_VAR is not set here; it must be set where pages are "
        "rendered (the workers)"
    ]
    options = PipelineOptions(["--input=x", "--output=y", f"--pdf-passwords-file={bad}"])
    with pytest.raises(PasswordsFileError):  # before the job starts
        render_config(options.view_as(VlbeamOptions))


# ---------------------------------------------------------------- the real renderer


def test_the_helper_opens_both_encrypted_corpus_pdfs_with_file_passwords(
    tmp_path: Path, corpus: Path
) -> None:
    """What the worker does per document (see document_pages): resolve, then count and render."""
    rc4, aes = (corpus / RC4).read_bytes(), (corpus / AES).read_bytes()
    aes_id = hashlib.sha256(aes).hexdigest()
    path = tmp_path / "pw.json"
    path.write_text(json.dumps({aes_id: AES_PASSWORD, "samplefiles_*.pdf": RC4_PASSWORD}))
    cfg = RenderConfig(target_long_side=128, passwords_file=str(path))
    worker = HelperProcess()
    try:
        for data, uri, doc_id in ((rc4, f"/in/{Path(RC4).name}", "a" * 64),
                                  (aes, "/in/renamed.pdf", aes_id)):  # fmt: skip
            assert worker.count_pages(doc_id, data, pdf_password(cfg, uri, doc_id)) == 1
            page = worker.render(doc_id, data, "pdf", 1, with_pdf_password(cfg, uri, doc_id))
            assert max(page.width_px, page.height_px) == 128
        wrong = RenderConfig(target_long_side=128, password_env="PW")
        with pytest.raises(RemoteError) as info:
            worker.count_pages(
                "b" * 64, rc4, pdf_password(wrong, "/x.pdf", environ={"PW": WRONG_PASSWORD})
            )
        assert info.value.error_type_name == EncryptedPdf.__name__
        assert WRONG_PASSWORD not in str(info.value)
    finally:
        worker.close()


# ---------------------------------------------------------------- the whole pipeline


def _all_text(out: Path) -> str:
    """Every value of every table, the manifests and any other file under `out`."""
    parts = []
    for table in TABLES:
        if (out / table).exists():
            rows = ds.dataset(out / table, partitioning="hive").to_table().to_pylist()
            parts.append(json.dumps(rows, default=str, ensure_ascii=False))
    for path in out.rglob("*.json"):
        parts.append(path.read_text())
    return "\n".join(parts)


def _pickled_payloads(pipeline: beam.Pipeline) -> list[bytes]:
    """Every pickled DoFn of the pipeline, decoded (Beam stores them base64 + bz2 or zlib)."""
    proto = pipeline.to_runner_api()
    found = []
    for transform in proto.components.transforms.values():
        if transform.spec.urn != common_urns.primitives.PAR_DO.urn:
            continue
        payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
        raw = base64.b64decode(payload.do_fn.payload)
        for decompress in (bz2.decompress, zlib.decompress):
            with contextlib.suppress(OSError, ValueError, zlib.error):
                raw = decompress(raw)
                break
        found.append(raw)
    return found


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


@contextlib.contextmanager
def _captured_logs():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.fixture(scope="module")
def secret_run(tmp_path_factory, corpus: Path):
    """One run over the encrypted corpus PDFs with passwords from a file and the environment:
    the RC4 file by name, the AES-256 one by content (doc_id), a copy of the RC4 file with a
    wrong password, and a changed copy of the AES-256 file (another doc_id, in no entry) whose
    password comes from the environment."""
    src = tmp_path_factory.mktemp("secret-in")
    out = tmp_path_factory.mktemp("secret-out") / "out"
    shutil.copy(corpus / RC4, src / "rc4.pdf")
    shutil.copy(corpus / AES, src / "aes256.pdf")
    shutil.copy(corpus / RC4, src / "wrong.pdf")
    (src / "env.pdf").write_bytes((corpus / AES).read_bytes() + b"\n% a copy\n")
    aes_id = hashlib.sha256((corpus / AES).read_bytes()).hexdigest()
    secrets_dir = tmp_path_factory.mktemp("secrets")
    passwords = secrets_dir / "pdf-passwords.json"
    passwords.write_text(json.dumps({"rc4.pdf": RC4_PASSWORD, aes_id: AES_PASSWORD,
                                     "wrong.pdf": WRONG_PASSWORD}))  # fmt: skip
    argv = [f"--input={src}/*.pdf", f"--output={out}", "--run-id=secret1",
            f"--pdf-passwords-file={passwords}",
            "--pdf-password-env=VLBEAM_TEST_PDF_PW"]  # fmt: skip
    options = PipelineOptions(argv)
    pipeline = beam.Pipeline(runner="FnApiRunner", options=options)
    with pytest.MonkeyPatch.context() as mp, _captured_logs() as logs:
        mp.setenv("VLBEAM_TEST_PDF_PW", AES_PASSWORD)
        pdf_passwords._cache.clear()
        run(argv, test_pipeline=pipeline, model_handler=fake_handler())
    return {"out": out, "logs": logs.getvalue(), "options": options, "pipeline": pipeline}


def test_no_password_reaches_options_pickles_tables_logs_or_manifest(secret_run) -> None:
    options, pipeline = secret_run["options"], secret_run["pipeline"]
    assert _leaks(json.dumps(options.get_all_options(retain_unknown_options=True))) == []
    assert _leaks(pickle.dumps(options).decode("latin-1")) == []
    payloads = _pickled_payloads(pipeline)
    assert any(b"RenderConfig" in p for p in payloads)  # the decoding works: the config is there
    for payload in payloads:
        assert not [s for s in SECRETS if s.encode() in payload]
    assert _leaks(_all_text(secret_run["out"])) == []
    assert secret_run["logs"]  # the run did log
    assert _leaks(secret_run["logs"]) == []


def test_encrypted_corpus_pdfs_open_with_file_and_env_passwords(secret_run) -> None:
    out = secret_run["out"]
    docs = {
        Path(r["source_uri"]).name: r for r in ds.dataset(out / "documents").to_table().to_pylist()
    }
    assert {n: d["status"] for n, d in docs.items()} == {
        "rc4.pdf": "ok", "aes256.pdf": "ok", "env.pdf": "ok", "wrong.pdf": "failed",
    }  # fmt: skip
    pages = ds.dataset(out / "pages").to_table().to_pylist()
    assert sorted(Path(p["source_uri"]).name for p in pages) == ["aes256.pdf", "env.pdf", "rc4.pdf"]
    [failure] = ds.dataset(out / "failures").to_table().to_pylist()
    assert failure["error_type"] == "EncryptedPdf" and "wrong" in failure["message"]


def test_legacy_flag_opens_the_aes256_saslprep_pdf_through_the_pipeline(
    tmp_path: Path, corpus: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(corpus / AES, src / "aes256.pdf")
    shutil.copy(corpus / RC4, src / "rc4.pdf")  # another password: fails, cleanly
    with _captured_logs() as logs:
        run_job([f"{src}/*.pdf"], out, "--run-id=legacy1", f"--pdf-password={AES_PASSWORD}",
                handler=fake_handler())  # fmt: skip
    docs = {Path(r["source_uri"]).name: r["status"]
            for r in ds.dataset(out / "documents").to_table().to_pylist()}  # fmt: skip
    assert docs == {"aes256.pdf": "ok", "rc4.pdf": "failed"}
    [page] = ds.dataset(out / "pages").to_table().to_pylist()
    assert page["text_layer"] == "Hello pdf.js world"
    [failure] = ds.dataset(out / "failures").to_table().to_pylist()
    assert failure["error_type"] == "EncryptedPdf"
    assert _leaks(_all_text(out)) == []  # tables, failure message, manifest
    assert "--pdf-password travels in the pipeline options" in logs.getvalue()
    assert _leaks(logs.getvalue()) == []
