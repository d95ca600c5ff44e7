"""vLLM's own offline `LLM.generate` on the bench's pages: the floor for `vlbeam --backend vllm`.

Run by an interpreter that has vLLM (bench_gpu.py starts it with `--vllm-python`), with the same
engine settings as the managed vLLM server (max model length, GPU memory utilisation, one image
and no video per prompt, prefix caching and the multimodal processor cache off) and the same
fixed answer length (min_tokens = max_tokens). Prints one line: VLBEAM_BENCH_RESULT {json}.
Engine start-up and a warm-up batch are outside the timed part.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

RESULT_MARKER = "VLBEAM_BENCH_RESULT "
# The chat template of the bench's checkpoint (vlbeam's Qwen3-VL template) for one image + text.
PROMPT = (
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{prompt}<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--pages-dir", required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--answer-tokens", type=int, required=True)
    parser.add_argument("--max-model-len", type=int, required=True)
    parser.add_argument("--gpu-memory-utilization", type=float, required=True)
    parser.add_argument("--limit-mm-per-prompt", default='{"image": 1, "video": 0}')
    parser.add_argument("--mm-processor-cache-gb", type=float, default=0.0)
    parser.add_argument("--no-prefix-caching", action="store_true")
    parser.add_argument("--warmup", type=int, default=8)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    import vllm
    from PIL import Image
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(
        model=args.model,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        limit_mm_per_prompt=json.loads(args.limit_mm_per_prompt),
        mm_processor_cache_gb=args.mm_processor_cache_gb,
        enable_prefix_caching=not args.no_prefix_caching,
        seed=0,
    )
    init_s = time.perf_counter() - started
    paths = sorted(Path(args.pages_dir).glob("*.png"))
    images = [Image.open(p).convert("RGB") for p in paths]
    prompt = PROMPT.format(prompt=args.prompt)
    inputs = [{"prompt": prompt, "multi_modal_data": {"image": image}} for image in images]
    params = SamplingParams(
        temperature=0.0, max_tokens=args.answer_tokens, min_tokens=args.answer_tokens
    )
    llm.generate(inputs[: args.warmup], params, use_tqdm=False)
    started = time.perf_counter()
    outputs = llm.generate(inputs, params, use_tqdm=False)
    wall = time.perf_counter() - started
    result = {
        "pages": len(outputs),
        "wall_s": wall,
        "output_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
        "input_tokens": sum(len(o.prompt_token_ids or ()) for o in outputs),
        "init_s": init_s,
        "vllm_version": vllm.__version__,
    }
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
