"""Batched vs one-prompt-at-a-time greedy generation on a toy base model (prompts per second).

    python benchmarks/generation.py --model .cache/sgt/toy-small-seed0/base --batch-size 32

Target: >= 5x at batch 32. Same prompts, same max_new_tokens, same outputs (checked).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sgt.data.formats import PromptFormat
from sgt.data.sources import read_local_rows
from sgt.generation import generate
from sgt.models import default_device, load_model, load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=".cache/sgt/toy-small-seed0/base", help="toy base model folder")
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    world = Path(args.model).parent
    rows = read_local_rows(world / "data" / "harm_eval.jsonl") + read_local_rows(world / "data" / "benign_eval.jsonl")
    prompts = [r["prompt"] for r in rows][: args.prompts]
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, "auto", device=default_device())
    fmt = PromptFormat(tokenizer, "plain")
    generate(model, tokenizer, prompts[:4], fmt, batch_size=4, max_new_tokens=4)  # warm-up

    start = time.perf_counter()
    batched = generate(model, tokenizer, prompts, fmt, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    single = [generate(model, tokenizer, [p], fmt, batch_size=1, max_new_tokens=args.max_new_tokens)[0] for p in prompts]
    t_single = time.perf_counter() - start
    same = sum(a == b for a, b in zip(batched, single))
    result = {"device": str(default_device()), "torch_threads": torch.get_num_threads(), "prompts": len(prompts),
              "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
              "batched_prompts_per_s": round(len(prompts) / t_batched, 1),
              "single_prompts_per_s": round(len(prompts) / t_single, 1),
              "speedup": round(t_single / t_batched, 2), "identical_outputs": f"{same}/{len(prompts)}"}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
