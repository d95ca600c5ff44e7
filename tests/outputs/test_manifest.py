"""The run manifest: absolute URIs, and no secret from any flag (Beam's, vlbeam's, unknown)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from vlbeam.outputs.manifest import (
    MASK,
    RunManifest,
    _known_option_names,
    _mask_value,
    absolute_uri,
    safe_options,
)
from vlbeam.pipeline.options import VlbeamOptions

# Every word the README gives for a secret-bearing name (schemas/redaction.py's rule, written
# out here independently so that dropping a word there fails a test here).
WORDS = ("key", "secret", "password", "passwd", "passphrase", "pwd", "token", "credential",
         "connection_string", "auth", "private", "cookie", "signature")  # fmt: skip
SECRET_WORDS = re.compile("|".join(WORDS) + "|^sig$", re.I)
NOT_SECRET = ("api_key_env", "pdf_password_env", "pdf_passwords_file", "gcp_oauth_scopes")


def _options(*flags: str) -> PipelineOptions:
    return PipelineOptions(["--input=in/*.pdf", "--output=out", *flags])


@pytest.mark.parametrize(
    "flag",
    [
        "--s3_secret_access_key",
        "--s3_access_key_id",
        "--s3_session_token",
        "--azure_connection_string",
        "--pdf-password",
        "--pdf_password",
        "--some_api_key",  # unknown pass-through flags
        "--some_token",
        "--my_service_credentials",
        "--unknown_flag",
    ],
)
def test_each_secret_bearing_flag_is_masked(flag: str) -> None:
    secret = f"S3cr3t-value-of-{flag.strip('-')}"
    found: set[str] = set()
    safe = safe_options(_options(f"{flag}={secret}"), found)
    text = json.dumps(safe)
    assert secret not in text
    assert safe[flag.lstrip("-").replace("-", "_")] == MASK
    assert secret in found  # and blanked out of the error text, see below


def test_every_beam_flag_named_like_a_secret_is_masked() -> None:
    """Every string flag any registered options class defines whose name says key, secret,
    password, token, credential or connection string."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False, add_help=False, conflict_handler="resolve")
    pending, seen = list(PipelineOptions.__subclasses__()), set()
    while pending:
        cls = pending.pop(0)
        if str(cls) not in seen:
            seen.add(str(cls))
            cls._add_argparse_args(parser)
        pending.extend(cls.__subclasses__())
    flags = {}
    for action in parser._actions:
        takes_string = action.type in (None, str) and action.nargs is None and not action.choices
        if SECRET_WORDS.search(action.dest) and takes_string and action.const is None:
            flags[action.dest] = f"secret-{action.dest}-value"
    names = set(flags)
    assert {"s3_secret_access_key", "s3_access_key_id", "azure_connection_string",
            "pdf_password"} <= names  # fmt: skip
    options = _options(*[f"--{dest}={value}" for dest, value in flags.items()])
    text = json.dumps(safe_options(options))
    for dest, value in flags.items():
        if dest in NOT_SECRET:
            assert value in text, dest  # a variable's name and a path are not secrets
        else:
            assert value not in text, dest


def test_secrets_inside_other_values_are_masked() -> None:
    options = _options(
        "--base-url=https://alice:hunter22@llm.internal:8000/v1",
        "--api-header=X-Api-Key=hdr-secret-1",
        "--api-header=X-Title=vlbeam",
        '--extra-body={"api_key": "body-secret-1", "top_k": 5}',
        "--experiments=use_runner_v2",
        "--experiments=auth_token=exp-secret-1",
    )
    found: set[str] = set()
    safe = safe_options(options, found)
    text = json.dumps(safe)
    for secret in ("hunter22", "hdr-secret-1", "body-secret-1", "exp-secret-1"):
        assert secret not in text and secret in found
    assert safe["base_url"] == f"https://alice:{MASK}@llm.internal:8000/v1"
    assert safe["api_header"] == [f"X-Api-Key={MASK}", "X-Title=vlbeam"]
    assert json.loads(safe["extra_body"]) == {"api_key": MASK, "top_k": 5}
    assert safe["experiments"] == ["use_runner_v2", f"auth_token={MASK}"]


@pytest.mark.parametrize("word", [*WORDS, "sig"])
def test_each_secret_word_is_masked_by_name_in_known_flags(word: str) -> None:
    """The name rule itself, through known flags (an unknown flag is masked whatever its
    name, so it can't show the rule): a JSON key of --extra-body, a header of --api-header,
    a key=value of --experiments and a query parameter of --base-url, each named with the
    word; the same values under plain names are kept (the control)."""
    name = f"x_{word}" if word != "sig" else word
    header = name.replace("_", "-").title()
    values = {where: f"v-{where}-{word}-1" for where in ("body", "header", "exp", "query")}
    options = _options(
        f"--base-url=https://llm.internal/v1?{name}={values['query']}&plain=q-kept",
        f"--api-header={header}={values['header']}",
        "--api-header=X-Title=h-kept",
        f'--extra-body={{"{name}": "{values["body"]}", "top_k": "b-kept"}}',
        f"--experiments={name}={values['exp']}",
        "--experiments=plain=e-kept",
    )
    found: set[str] = set()
    text = json.dumps(safe_options(options, found))
    for where, value in values.items():
        assert value not in text, (where, word)
        assert value in found, (where, word)
    for kept in ("q-kept", "h-kept", "b-kept", "e-kept"):
        assert kept in text


@pytest.mark.parametrize("name", NOT_SECRET)
def test_names_that_hold_no_secret_are_kept(name: str) -> None:
    found: set[str] = set()
    text = json.dumps(safe_options(_options(f'--extra-body={{"{name}": "kept-value"}}'), found))
    assert "kept-value" in text and not found


def test_signed_url_query_is_masked() -> None:
    found: set[str] = set()
    url = "https://acct.blob.core.windows.net/c/in/*.pdf?sv=2024-01-01&sig=SIGSECRET&se=x"
    masked = _mask_value(url, found)
    assert "SIGSECRET" not in masked and "sv=2024-01-01" in masked and found == {"SIGSECRET"}


def test_plain_values_are_kept() -> None:
    flags = ["--max-new-tokens=77", "--api-key-env=MY_KEY", "--pdf-password-env=PDF_PW",
             "--model=m", "--flexrs_goal=COST_OPTIMIZED"]  # fmt: skip
    safe = safe_options(_options(*flags))
    assert safe["max_new_tokens"] == 77
    assert safe["api_key_env"] == "MY_KEY" and safe["pdf_password_env"] == "PDF_PW"
    assert safe["model"] == "m" and safe["flexrs_goal"] == "COST_OPTIMIZED"
    assert "pdf_password" not in safe  # not given: nothing to record


def test_inputs_and_output_are_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    options = _options("--input=gs://bucket/in/**.pdf", "--input=~/scans/*.pdf")
    opts = options.view_as(VlbeamOptions)
    manifest = RunManifest("r1", opts, options)
    base = manifest._base
    assert base["inputs"][0] == str(tmp_path / "in" / "*.pdf")
    assert base["inputs"][1] == "gs://bucket/in/**.pdf"
    assert base["inputs"][2] == str(Path("~/scans/*.pdf").expanduser())
    assert base["output"] == str(tmp_path / "out")
    assert base["options"]["input"] == base["inputs"]
    assert base["options"]["output"] == base["output"]
    assert absolute_uri("s3://b/x") == "s3://b/x"


def test_a_failed_runs_error_never_quotes_a_secret(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PDF_PW_FOR_TEST", "env-held-password")
    options = _options(
        "--s3_secret_access_key=AKIAsecretvalue", "--pdf-password-env=PDF_PW_FOR_TEST"
    )
    manifest = RunManifest("r1", options.view_as(VlbeamOptions), options)
    path = manifest.finish(
        str(tmp_path), "failed",
        error="boto: signature mismatch for AKIAsecretvalue; pdf env-held-password refused",
    )  # fmt: skip
    text = Path(path).read_text()
    assert "AKIAsecretvalue" not in text and "env-held-password" not in text
    assert json.loads(text)["error"] == f"boto: signature mismatch for {MASK}; pdf {MASK} refused"


def test_known_names_include_beam_and_vlbeam_flags() -> None:
    names = _known_option_names()
    assert {"runner", "s3_secret_access_key", "pdf_password", "max_new_tokens"} <= names
