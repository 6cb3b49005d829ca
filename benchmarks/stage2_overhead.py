"""Cost of one stage-2 optimisation step relative to one plain SFT step (same model, batch, tokens).

    python benchmarks/stage2_overhead.py              # full fine-tuning and LoRA, CPU or GPU
    python benchmarks/stage2_overhead.py --hidden 512 --layers 8 --steps 20

Every measurement runs in a fresh subprocess. Time = median wall time of an optimiser step
(forward, backward, optimiser) over `--steps` steps after warm-up, timed by a Trainer callback.
Memory = peak memory growth of the process over its state before the model was built (CPU: peak
RSS; CUDA: max_memory_allocated), so the full fine-tuning teacher copy counts.
Targets (issue): time <= 1.4x; memory <= 1.2x with LoRA.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(method: str, mode: str, args) -> dict:
    """One (method, mode) measurement in this process."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback

    from sgt.data.collate import Collator
    from sgt.methods.align import AlignConfig, AlignmentTrainer
    from sgt.training import EncodedDataset, apply_lora, training_arguments
    from sgt.trigger import SafetyTrigger

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    base_mem = torch.cuda.memory_allocated() / 2**20 if cuda else rss_mb()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
                         num_key_value_heads=max(1, args.hidden // 64), max_position_embeddings=args.seq + 16)
    dtype = torch.bfloat16 if cuda else torch.float32
    model = LlamaForCausalLM(config).to(dtype)
    prompt = args.seq // 2
    rows = []
    for i in range(args.batch * (args.steps + args.warmup)):
        ids = torch.randint(3, args.vocab, (args.seq,)).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:], "trigger_pos": 2,
                     "harmful": i % 2 == 0})
    align = AlignConfig(model="bench", trigger="bench", out="bench", batch_size=args.batch, grad_accum=1, lr=1e-5,
                        lora=mode == "lora", progress=False)
    teacher = None
    if mode == "lora":
        model = apply_lora(model, align)
    elif method == "stage2":
        import copy

        teacher = copy.deepcopy(model).requires_grad_(False).eval()
    device = "cuda" if cuda else "cpu"
    if teacher is not None:
        teacher.to(device)
    targs = training_arguments(align, "/tmp/sgt-bench", len(rows), dtype, max_steps=args.steps + args.warmup,
                               logging_steps=10**6)
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)

    common = dict(model=model, args=targs, train_dataset=EncodedDataset(rows), data_collator=Collator(0, "right"),
                  callbacks=[Timer()])
    if method == "sft":
        for r in rows:
            r.pop("harmful")
            r.pop("trigger_pos")
        trainer = Trainer(**common)
    else:
        trigger = SafetyTrigger(args.hidden, length=args.trigger_len, tied=False)
        trainer = AlignmentTrainer(**common, trigger=trigger, align=align,
                                   layers=list(range(1, args.layers + 1)), teacher=teacher)
    trainer.train()
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "mode": mode, "step_seconds": statistics.median(times[args.warmup:]),
            "peak_growth_mb": peak - base_mem, "device": device}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--trigger-len", type=int, default=4)
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args)))
        return
    results = {}
    passthrough = sys.argv[1:]
    for mode in ("full", "lora"):
        for method in ("sft", "stage2"):
            out = subprocess.run([sys.executable, __file__, *passthrough, "--one", method, mode], check=True,
                                 capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            results[(method, mode)] = json.loads(out.stdout.strip().splitlines()[-1])
    report = {"model": f"Llama hidden={args.hidden} layers={args.layers} vocab={args.vocab}",
              "batch": f"{args.batch} x {args.seq} tokens", "device": results[("sft", "full")]["device"]}
    for mode in ("full", "lora"):
        sft, s2 = results[("sft", mode)], results[("stage2", mode)]
        report[mode] = {"sft_step_s": round(sft["step_seconds"], 4), "stage2_step_s": round(s2["step_seconds"], 4),
                        "time_ratio": round(s2["step_seconds"] / sft["step_seconds"], 2),
                        "sft_peak_growth_mb": round(sft["peak_growth_mb"], 1),
                        "stage2_peak_growth_mb": round(s2["peak_growth_mb"], 1),
                        "memory_ratio": round(s2["peak_growth_mb"] / sft["peak_growth_mb"], 2)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
