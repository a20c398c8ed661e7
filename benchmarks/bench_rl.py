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

With --compare, the question of issue 11 item 4 instead: does RL raise the *greedy* held-out reward
over the SFT student? For each algorithm and seed, `trainer rl` from the same SFT student, then the
held-out reward (multi-step replay rollouts, greedy and sampled) side by side, mean ± sd over seeds,
with wall times; --out writes every run's numbers as JSON (docs/rl.md has the measured table):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_rl.py --compare --world /tmp/world \
        --algorithms student_centred grpo --seeds 0 1 2 --out compare.json [-o rl.sc_learning_rate=1e-3 ...]

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


# The settings compared (the test world's, tests/test_rl.py): shared by every algorithm ...
COMMON = [
    ("rl.eval_examples", 32), ("rl.eval_split", "test"), ("rl.eval_samples", 4), ("rl.temperature", 0.5),
    ("reward.max_new_tokens", 160), ("reward.max_turns", 6), ("reward.discriminator_weight", 0.0),
    ("rl.save_steps", 10_000), ("rl.logging_steps", 5),
]
# ... and each algorithm's own.
ALGORITHMS = {
    "grpo": [("rl.algorithm", "grpo"), ("rl.max_steps", 24), ("rl.learning_rate", 5e-5), ("rl.num_generations", 8),
             ("rl.per_device_train_batch_size", 32), ("rl.max_completion_length", 160)],
    "student_centred": [("rl.algorithm", "student_centred"), ("rl.max_steps", 40), ("rl.sc_learning_rate", 1e-4),
                        ("rl.sc_batch_size", 8), ("rl.sc_teacher_share", 0.5)],
}
# The control for student_centred: the same number of examples, steps and learning rate, all of them
# teacher examples (teacher prefix -> teacher turn): is it the student's own states that help, or
# just more SFT?
ALGORITHMS["teacher_sft"] = ALGORITHMS["student_centred"]


def _mean_sd(values: list[float], digits: int = 3, sign: bool = False) -> str:
    import statistics

    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{'+' if sign else ''}.{digits}f} ± {sd:.{digits}f}"


def _parse_override(text: str):
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def compare(args) -> None:
    """SFT vs each RL algorithm on the greedy (and sampled) held-out reward, over seeds."""
    import trainer.rl as rl_mod
    from tests.student_world import build_world
    from trainer.config import load_config

    world = build_world(Path(args.world) if args.world else Path(tempfile.mkdtemp(prefix="bench-rl-")) / "world",
                        sft_steps=max(args.sft_steps, 1), log=print)
    tmp = Path(tempfile.mkdtemp(prefix="bench-rl-compare-"))
    # The SFT student's held-out reward is the same for every run: measure it once.
    measured: dict = {}
    held_out = rl_mod.held_out_reward

    def cached(cfg, model_path, rows):
        key = (model_path, cfg.rl.temperature, cfg.rl.eval_samples, cfg.rl.seed if model_path != str(world.sft_model) else -1)
        if key not in measured:
            measured[key] = held_out(cfg, model_path, rows)
        return measured[key]

    rl_mod.held_out_reward = cached
    import random

    import trainer.student_centred as sc_mod

    build_examples = sc_mod.build_examples

    def teacher_only(divergences, rows, teacher_share, seed=0):
        n = len(build_examples(divergences, rows, teacher_share, seed))
        pool = sc_mod.teacher_examples(rows)
        return random.Random(seed).sample(pool, min(n, len(pool)))
    extra = [_parse_override(o) for o in args.override]
    runs = []
    for algorithm in args.algorithms:
        for seed in args.seeds:
            out = tmp / f"{algorithm}-{seed}"
            cfg = load_config(overrides=[
                ("run.out", str(out)), ("rl.model", str(world.sft_model)), ("rl.data_dir", str(world.data_dir)),
                ("rl.output_dir", str(out / "rl")), ("rl.seed", seed), *COMMON, *ALGORITHMS[algorithm], *extra])
            sc_mod.build_examples = teacher_only if algorithm == "teacher_sft" else build_examples
            t0 = time.perf_counter()
            summary = rl_mod.train_rl(cfg, log=print if args.verbose else (lambda s: None))
            wall = time.perf_counter() - t0
            run = {"algorithm": algorithm, "seed": seed, "wall_s": round(wall, 1), "train_runtime_s": summary["train_runtime_s"],
                   "global_step": summary["global_step"],
                   "before": {"greedy": summary["before"]["similarity"], "sampled": summary["before"].get("sampled", {}).get("similarity")},
                   "after": {"greedy": summary["after"]["similarity"], "sampled": summary["after"].get("sampled", {}).get("similarity"),
                             "terms": summary["after"]["terms"]},
                   "rounds": summary.get("rounds"), "overrides": [list(o) for o in [*ALGORITHMS[algorithm], *extra]]}
            print(f"{algorithm} seed {seed}: greedy {run['before']['greedy']:.3f} → {run['after']['greedy']:.3f}, "
                  f"sampled {run['before']['sampled']} → {run['after']['sampled']} ({wall:.0f}s)", flush=True)
            runs.append(run)
            if args.out:
                Path(args.out).write_text(json.dumps({"runs": runs, "world": world.timings}, indent=2) + "\n")
    print(comparison_table(runs))


def comparison_table(runs: list[dict]) -> str:
    """Markdown: the SFT student and each algorithm, greedy and sampled held-out reward, mean ± sd over seeds."""
    lines = ["| student | seeds | greedy held-out reward | sampled (T=0.5, 4 draws) | Δ greedy vs SFT | training time (s) |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    if runs:
        b = runs[0]["before"]
        lines.append(f"| after SFT | — | {b['greedy']:.3f} | {_mean_sd([b['sampled']] if b['sampled'] is not None else [])} | — | — |")
    for algorithm in dict.fromkeys(r["algorithm"] for r in runs):
        rs = [r for r in runs if r["algorithm"] == algorithm]
        lines.append(
            f"| after {algorithm} | {', '.join(str(r['seed']) for r in rs)} | {_mean_sd([r['after']['greedy'] for r in rs])} | "
            f"{_mean_sd([r['after']['sampled'] for r in rs if r['after']['sampled'] is not None])} | "
            f"{_mean_sd([r['after']['greedy'] - r['before']['greedy'] for r in rs], sign=True)} | {_mean_sd([r['train_runtime_s'] for r in rs], 0)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare", action="store_true", help="SFT vs RL algorithms on the greedy held-out reward, over seeds.")
    ap.add_argument("--world", help="--compare: the test world's folder (built there once, reused after).")
    ap.add_argument("--algorithms", nargs="+", default=["student_centred", "grpo"], choices=sorted(ALGORITHMS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("-o", "--override", action="append", default=[], help="--compare: SECTION.KEY=VALUE for every run.")
    ap.add_argument("--out", help="--compare: write the runs as JSON here.")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-completion", type=int, default=96)
    ap.add_argument("--sft-steps", type=int, default=120)
    ap.add_argument("--rollout-examples", type=int, default=32)
    ap.add_argument("--base", help="An existing student (dir or hub id) instead of the tiny world's SFT student.")
    ap.add_argument("--json", action="store_true", help="Print the results as JSON.")
    args = ap.parse_args()
    if args.compare:
        return compare(args)

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
