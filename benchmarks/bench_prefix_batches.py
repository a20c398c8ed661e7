"""SFT step time with the system turn computed once per batch (trainer/prefix_batches.py) against
every row computing it, side by side on the same model and the same batches.

    .venv/bin/python benchmarks/bench_prefix_batches.py            # ~1 minute on 2 cores
    .venv/bin/python benchmarks/bench_prefix_batches.py --rounds 5

Two shapes of batch, 4 rows of one project each: the `--demo`'s (a 384-token system turn, ~500
tokens of conversation) and a capture through the real Claude Code CLI in the compact context
(`signature` tools: ~1,300 tokens of system turn and tools, ~150-400 of conversation;
docs/learning.md §4). The model is the demo's tiny LLaMA shape (hidden 128, 4 layers, vocab 1,500),
forward and backward of the loss on the conversation's tokens. Arms alternate within each round, so
a noisy machine slows both; the line to read is the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {
    # name: (shared system-turn tokens, each row's own tokens)
    "demo": (384, (520, 470, 540, 500)),
    "real CLI capture": (1300, (160, 390, 240, 300)),
}


def batch(shared: int, own: tuple[int, ...], vocab: int):
    import torch

    generator = torch.Generator().manual_seed(0)
    width = shared + max(own)
    ids = torch.randint(3, vocab, (len(own), width), generator=generator)
    ids[:, :shared] = ids[0, :shared]
    labels = ids.clone()
    labels[:, :shared] = -100
    for row, n in enumerate(own):
        ids[row, shared + n:] = 0  # right padding, as TRL pads
        labels[row, shared + n:] = -100
    return ids, labels


def step_seconds(model, ids, labels, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=labels).loss.backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="steps timed per arm and round (median kept)")
    args = parser.parse_args(argv)

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer.prefix_batches import share_prefix_in_training

    vocab = 1500
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, max_position_embeddings=4096, tie_word_embeddings=True)
    plain = LlamaForCausalLM(config).train()
    shared = LlamaForCausalLM(config).train()
    shared.load_state_dict(plain.state_dict())
    share_prefix_in_training(shared)
    print(f"torch threads {torch.get_num_threads()}, {args.rounds} rounds × {args.repeats} steps per arm")
    for name, (prefix, own) in SHAPES.items():
        ids, labels = batch(prefix, own, vocab)
        step_seconds(plain, ids, labels, 1), step_seconds(shared, ids, labels, 1)  # warm both up
        every_row, once = [], []
        for _ in range(args.rounds):
            every_row.append(step_seconds(plain, ids, labels, args.repeats))
            once.append(step_seconds(shared, ids, labels, args.repeats))
        a, b = statistics.median(every_row), statistics.median(once)
        print(f"{name:>17}: {len(own)} rows × ({prefix} shared + {min(own)}-{max(own)} own) tokens · "
              f"every row {a * 1000:.0f} ms, once {b * 1000:.0f} ms a step · {a / b:.2f}x")


if __name__ == "__main__":
    main()
