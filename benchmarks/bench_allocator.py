"""LoRA training steps on CPU under glibc's default malloc and under the settings `trainer` uses.

    .venv/bin/python benchmarks/bench_allocator.py                  # SmolLM2-135M's shape, ~10 minutes
    .venv/bin/python benchmarks/bench_allocator.py --layers 10 --steps 30 --rounds 1 --threads 1

Each arm is a fresh process (GLIBC_TUNABLES is read when a process starts) running the same LoRA
steps with bf16 autocast on a randomly initialised LLaMA of SmolLM2-135M-Instruct's shape (hidden
576, 30 layers, 9 heads, 3 KV heads, vocab 49,152: the logits of one step are ~350 MB), batches
of 2 like `--preset smollm2-demo`'s, each step's length drawn from --min-tokens..--tokens (580-1,090
by default, the preset's examples; the same draws in every arm). The arms alternate over rounds so
that a busy machine slows them alike; the line to read is each arm's tokens/s (real tokens, not
padding) as a ratio of the default's, with its page faults, kernel CPU time and peak memory (what
retaining freed blocks costs: with a new length every step it climbs for tens of steps, so read
peak memory from runs of ~30 steps).

Arms:
  default   glibc as configured (large blocks are mmapped and unmapped on every free)
  retain    trainer/allocator.py's TUNABLES: blocks stay in malloc's free lists
  pad       retain, with each batch padded to a multiple of --pad tokens as `trainer sft` does
            (sft.pad_to_multiple_of): a few shapes recur, so kept blocks are reused whole
  hugetlb   glibc.malloc.hugetlb=1: malloc's memory on transparent huge pages, still unmapped on free
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.allocator import TUNABLES  # noqa: E402  (after the path insert)

# arm: (GLIBC_TUNABLES, pad each batch to a multiple of --pad tokens)
ARMS = {
    "default": (None, False),
    "retain": (TUNABLES, False),
    "pad": (TUNABLES, True),
    "hugetlb": ("glibc.malloc.hugetlb=1", False),
}

WORKER = r"""
import json, random, resource, sys, time
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model

args = json.loads(sys.argv[1])
torch.manual_seed(0)
torch.set_num_threads(args["threads"])
config = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=args["layers"],
                     num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                     max_position_embeddings=2048, tie_word_embeddings=True)
model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
lengths = random.Random(0)
pad = args["pad"]

def step():
    n = lengths.randint(args["min_tokens"], args["tokens"])
    padded = -(-n // pad) * pad if pad else n
    ids = torch.randint(0, 49152, (args["batch"], padded))
    mask = torch.zeros_like(ids)
    mask[:, :n] = 1
    labels = ids.masked_fill(mask == 0, -100)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return args["batch"] * n

step()  # warm-up: the first step's allocations are new under every arm
usage = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
tokens = sum(step() for _ in range(args["steps"]))
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "tokens_per_s": tokens / seconds,
    "faults_per_step": (after.ru_minflt - usage.ru_minflt) / args["steps"],
    "kernel_share": (after.ru_stime - usage.ru_stime) / max(1e-9, (after.ru_stime - usage.ru_stime) + (after.ru_utime - usage.ru_utime)),
    "peak_rss_mb": after.ru_maxrss / 1024,
}))
"""


def run_arm(arm: tuple, args) -> dict:
    tunables, padded = arm
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["UNDERSTUDY_SYSTEM_MALLOC"] = "1"
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    payload = json.dumps({"layers": args.layers, "steps": args.steps, "batch": args.batch,
                          "tokens": args.tokens, "min_tokens": min(args.min_tokens, args.tokens),
                          "pad": args.pad if padded else 0, "threads": args.threads})
    out = subprocess.run([sys.executable, "-c", WORKER, payload], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench_allocator: an arm failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30, help="SmolLM2-135M has 30")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per arm and round (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=1090, help="longest example")
    parser.add_argument("--min-tokens", type=int, default=580, help="shortest example (= --tokens: one fixed length)")
    parser.add_argument("--pad", type=int, default=128, help="the pad arm's multiple (sft.pad_to_multiple_of)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--arms", default="default,retain,pad")
    args = parser.parse_args()

    arms = {name: ARMS[name] for name in args.arms.split(",")}
    results: dict[str, list[dict]] = {name: [] for name in arms}
    for round_ in range(args.rounds):
        order = list(arms) if round_ % 2 == 0 else list(reversed(arms))
        for name in order:
            results[name].append(run_arm(arms[name], args))
            print(f"round {round_ + 1} {name:8} {results[name][-1]['tokens_per_s']:7.1f} tokens/s", flush=True)

    base = statistics.median(r["tokens_per_s"] for r in results["default"]) if "default" in results else None
    print(f"\n{args.layers} layers, batch {args.batch} x {min(args.min_tokens, args.tokens)}-{args.tokens} tokens, {args.steps} steps x {args.rounds} rounds, "
          f"{args.threads} threads (medians)")
    print(f"{'arm':8} {'tokens/s':>9} {'vs default':>11} {'faults/step':>12} {'kernel CPU':>11} {'peak RSS':>9}")
    for name, runs in results.items():
        tps = statistics.median(r["tokens_per_s"] for r in runs)
        ratio = f"{tps / base:.2f}x" if base else "—"
        print(f"{name:8} {tps:9.1f} {ratio:>11} {statistics.median(r['faults_per_step'] for r in runs):12,.0f} "
              f"{statistics.median(r['kernel_share'] for r in runs):10.0%} "
              f"{max(r['peak_rss_mb'] for r in runs):7,.0f} MB")


if __name__ == "__main__":
    main()
