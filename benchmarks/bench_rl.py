"""RL throughput: GRPO steps/s and rollouts/s with the behavioural reward, on CPU with the tiny model.

    .venv/bin/python benchmarks/bench_rl.py [--steps 20] [--generations 4] [--batch 8] [--sft-steps 120]

Builds the test suite's scripted-teacher world (120 traces, a 2-layer 64-wide LLaMA, a short full
SFT; tests/student_world.py) in a temp dir, then measures, side by side:

    grpo        TRL GRPOTrainer steps/s and completions/s (one completion = one sampled assistant
                turn, scored by trainer.rl's turn reward)
    rollouts    multi-step replay rollouts/s (trainer/evaluate.py's step-by-step generation with
                the teacher's observations, scored by trainer.reward.similarity): what `trainer
                reward`, `mine` and `ab-test` spend their time on
    reward      the reward function alone: scored turns/s (no model)

A 1B-class student on a GPU is the documented next measurement, not run here (no GPU on these
machines): the same command with `--base meta-llama/Llama-3.2-1B-Instruct --sft-steps 0`, where
`--base` is an already fine-tuned student directory or hub id; expect generation to dominate, and
use TRL's vLLM integration (GRPOConfig use_vllm) before scaling steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-completion", type=int, default=96)
    ap.add_argument("--sft-steps", type=int, default=120)
    ap.add_argument("--rollout-examples", type=int, default=32)
    ap.add_argument("--base", help="An existing student (dir or hub id) instead of the tiny world's SFT student.")
    ap.add_argument("--json", action="store_true", help="Print the results as JSON.")
    args = ap.parse_args()

    import torch

    from tests.student_world import build_world, rows
    from trainer.config import load_config
    from trainer.reward import rollouts, score_workflows
    from trainer.rl import build_prompts, make_turn_reward, train_rl

    tmp = Path(tempfile.mkdtemp(prefix="bench-rl-"))
    t0 = time.perf_counter()
    world = build_world(tmp / "world", sft_steps=max(args.sft_steps, 1))
    student = args.base or str(world.sft_model)
    setup_s = time.perf_counter() - t0
    results: dict = {"device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
                     "student": student, "setup_s": round(setup_s, 1)}

    # The reward alone.
    train = rows(world, "train")
    prompts = build_prompts(train)
    reward = make_turn_reward()
    kwargs = {k: [p[k] for p in prompts] for k in ("teacher_turn", "tool_schemas", "context")}
    completions = ['Reading it.\n<tool_call>{"name": "Read", "arguments": {"file_path": "src/a.py"}}</tool_call>'] * len(prompts)
    t0 = time.perf_counter()
    reward([p["prompt"] for p in prompts], completions, **kwargs)
    results["reward_turns_per_s"] = round(len(prompts) / (time.perf_counter() - t0), 1)

    # Multi-step replay rollouts.
    held = (rows(world, "test") + rows(world, "validation"))[: args.rollout_examples]
    t0 = time.perf_counter()
    wfs = rollouts(student, held, max_new_tokens=args.max_completion, max_turns=8, batch_size=32)
    elapsed = time.perf_counter() - t0
    results["rollouts_per_s"] = round(len(held) / elapsed, 2)
    results["rollout_turns_per_s"] = round(sum(len(w.steps) + (w.answer is not None) for w in wfs) / elapsed, 2)
    results["held_out_similarity"] = round(score_workflows(held, wfs)["summary"]["similarity"], 3)

    # GRPO.
    cfg = load_config(overrides=[
        ("run.out", str(tmp)), ("rl.model", student), ("rl.data_dir", str(world.data_dir)),
        ("rl.output_dir", str(tmp / "rl")), ("rl.max_steps", args.steps), ("rl.learning_rate", 5e-4),
        ("rl.num_generations", args.generations), ("rl.per_device_train_batch_size", args.batch),
        ("rl.max_completion_length", args.max_completion), ("rl.save_steps", 10_000), ("rl.logging_steps", 5),
        ("rl.eval_examples", 0), ("reward.discriminator_weight", 0.0),
    ])
    summary = train_rl(cfg, log=lambda s: None)
    runtime = summary["train_runtime_s"]
    results["grpo_steps"] = summary["global_step"]
    results["grpo_steps_per_s"] = round(summary["global_step"] / runtime, 3)
    results["grpo_completions_per_s"] = round(summary["global_step"] * args.batch / runtime, 2)
    results["grpo_s_per_step"] = round(runtime / summary["global_step"], 3)
    results["train_reward_first_last"] = [summary["train_reward_first"], summary["train_reward_last"]]

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"RL benchmark on {results['device']} ({results['threads']} threads), student {student}")
    print(f"  setup (world build incl. SFT)      {results['setup_s']:>8} s")
    print(f"  reward function alone              {results['reward_turns_per_s']:>8} turns/s")
    print(f"  multi-step replay rollouts         {results['rollouts_per_s']:>8} rollouts/s ({results['rollout_turns_per_s']} turns/s)")
    print(f"  GRPO ({args.generations} generations, batch {args.batch})       {results['grpo_steps_per_s']:>8} steps/s "
          f"({results['grpo_s_per_step']} s/step, {results['grpo_completions_per_s']} completions/s)")
    print(f"  train reward first → last log      {results['train_reward_first_last']}")


if __name__ == "__main__":
    main()
