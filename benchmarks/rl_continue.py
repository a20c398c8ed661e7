"""Student-centred SFT again from a finished run's examples, with other settings: is it the data or the dose?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rl_continue.py RUN --out DIR \
        [--lr 1e-4] [--steps 120] [--warmup 10] [--data student_centred|control] [--bf16]
        [--dagger MODEL]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rl_continue.py RUN --out DIR --eval-only MODEL

RUN is a `trainer run` folder whose RL stage ran student-centred (`-o rl.enabled=true`): its
sft/final student, dataset/ splits and rl/sc_examples.jsonl (the divergence examples and the teacher
turns mixed in). The rollouts over the train split, most of an RL stage's time, are not repeated:
the same examples train the same student with the settings given (trainer.student_centred's
continue_sft, as `trainer rl` runs it; --bf16 is set on its SFTConfig, which the config does not
expose). `--data control` trains instead on as many teacher turns drawn at random
from the train split (the control of docs/rl.md: the same dose without the student's states).
`--dagger MODEL` is DAgger's next round from a student an earlier round trained (this script's
DIR/final): MODEL is rolled out greedily on the train split, its divergences are added to the
earlier rounds' (the run's, or --earlier's), teacher turns are mixed in again at
`rl.sc_teacher_share`, and SFT continues from MODEL.

Then the greedy behavioural reward (trainer.reward: multi-step replay rollouts) on all of the
validation and test splits, with each example's terms, into DIR/result.json. docs/rl.md ("More
steps, a control, a weight average") has what it measured.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainer.reward import _read_rows  # noqa: E402


def examples(run: Path, data: str, seed: int) -> list[dict]:
    mixed = _read_rows(run / "rl" / "sc_examples.jsonl")
    if data == "student_centred":
        return mixed
    from trainer.student_centred import teacher_examples

    pool = teacher_examples(_read_rows(run / "dataset" / "train.jsonl"))
    return random.Random(seed).sample(pool, min(len(mixed), len(pool)))


def dagger_examples(cfg, run: Path, student: Path, out: Path, seed: int, earlier: Path) -> list[dict]:
    """The earlier rounds' divergences (the student examples of `earlier`, an sc_examples.jsonl) plus
    `student`'s own on the train split, teacher turns mixed in."""
    from trainer.evaluate import ModelPolicy
    from trainer.student_centred import build_examples, divergence_rollouts, write_divergences

    r = cfg.reward
    train_rows = _read_rows(run / "dataset" / "train.jsonl")
    first = [{"prompt": e["prompt"], "target": e["completion"][0], "tools": e.get("tools"),
              "trace_id": e.get("trace_id"), "turn": e["turn"]}
             for e in _read_rows(earlier) if e["source"] == "student"]
    t0 = time.monotonic()
    found = divergence_rollouts(ModelPolicy(str(student), r.max_new_tokens, r.max_turns), train_rows,
                                r.batch_size, cfg.rl.sc_answer_similarity)
    second = [d for d in found if d["turn"] is not None]
    write_divergences(out / "divergences.jsonl", found)
    print(f"this round: {len(second)} of {len(found)} train rollouts diverge ({time.monotonic() - t0:.0f} s); "
          f"with the earlier rounds' {len(first)}", flush=True)
    return build_examples(first + second, train_rows, cfg.rl.sc_teacher_share, seed=seed + 1)


def train(cfg, run: Path, out: Path, args) -> Path:
    import trl

    from trainer import student_centred

    plain = trl.SFTConfig

    def with_settings(*a, **kw):
        if args.bf16:
            kw["bf16"] = True
        return plain(*a, **kw)

    trl.SFTConfig = with_settings  # (continue_sft imports it from trl when it is called)
    try:
        t0 = time.monotonic()
        if args.dagger:
            start, data = args.dagger, dagger_examples(cfg, run, args.dagger, out, args.seed,
                                                                 args.earlier or run / "rl" / "sc_examples.jsonl")
        else:
            start, data = run / "sft" / "final", examples(run, args.data, args.seed)
        result = student_centred.continue_sft(cfg, start, data, out, args.steps, print)
    finally:
        trl.SFTConfig = plain
    print(f"trained {result['global_step']} steps in {time.monotonic() - t0:.0f} s, "
          f"loss {result['loss_first']:.4f} → {result['loss_last']:.4f}", flush=True)
    return Path(result["final"])


def greedy_reward(cfg, model: Path, rows: list[dict]) -> dict:
    from trainer.reward import rollouts, score_workflows

    r = cfg.reward
    scored = score_workflows(rows, rollouts(str(model), rows, r.max_new_tokens, r.max_turns, r.batch_size), r.weights)
    keep = ("trace_id", "similarity", "terms", "teacher", "student", "notes")
    return {**scored["summary"], "examples": [{k: e[k] for k in keep} for e in scored["examples"]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="a `trainer run` folder whose RL stage ran student-centred")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--warmup", type=float, default=10, help="warm-up steps (rl.sc_warmup_steps; the config's default is 0)")
    p.add_argument("--data", choices=["student_centred", "control"], default="student_centred")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (continue_sft trains in float32 on a CPU)")
    p.add_argument("--seed", type=int, help="data order and the control's draw (default: the run's rl.seed)")
    p.add_argument("--dagger", type=Path, help="a student the run's examples trained: DAgger's next round from it")
    p.add_argument("--earlier", type=Path, help="with --dagger: the earlier rounds' sc_examples.jsonl "
                   "(default RUN/rl/sc_examples.jsonl; after `rl.sc_rounds = 2`, RUN/rl/round-2/sc_examples.jsonl)")
    p.add_argument("--eval-only", type=Path, help="score this model instead of training one")
    args = p.parse_args()

    from trainer.config import load_config

    cfg = load_config(data=json.loads((args.run / "understudy_config.json").read_text())["config"])
    cfg.rl.sc_learning_rate = args.lr
    cfg.rl.sc_warmup_steps = args.warmup
    args.seed = cfg.rl.seed if args.seed is None else args.seed
    cfg.rl.seed = args.seed
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.eval_only or train(cfg, args.run, args.out, args)
    report = {"model": str(model), "settings": {k: str(v) for k, v in vars(args).items()}}
    for split in ("validation", "test"):
        rows = _read_rows(args.run / "dataset" / f"{split}.jsonl")
        t0 = time.monotonic()
        report[split] = greedy_reward(cfg, model, rows)
        terms = ", ".join(f"{k} {v:.3f}" for k, v in report[split]["terms"].items())
        print(f"{split} ({len(rows)}): greedy reward {report[split]['similarity']:.4f} ({terms}) "
              f"{time.monotonic() - t0:.0f} s", flush=True)
    (args.out / "result.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
