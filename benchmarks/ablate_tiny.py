"""Ablations of the tiny demo recipe over seeds: which setting moves held-out accuracy, with spread.

Each arm is `trainer run --demo` with a few overrides; each seed changes the corpus (the scripted
teacher's draw), the tokenizer, the model's initial weights and the data order. Every run's held-out
summary (eval/eval.json) is collected into a table of mean ± sd per arm and metric, written as
Markdown, and drawn as a plot (mean with each seed's point), so one run of this script is one
ablation row of docs/learning.md.

    .venv/bin/python benchmarks/ablate_tiny.py --out /tmp/ablate --seeds 0 1 2 \\
        --arm "no warm-up" run.demo_copy_warmup_steps=0 --arm "span warm-up" \\
        -- -o sft.max_steps=300 -o eval.max_examples=60

Arms and the shared overrides (after `--`) are `trainer run` overrides. Runs are resumable: a run
whose stages are up to date is skipped by `trainer run` itself. A seed's later arms start from a copy
of its first arm's corpus, base and dataset, so an arm that only changes SFT (steps, learning rate,
LoRA) does not build the same warmed-up base again; `trainer run` rebuilds any copied stage whose
inputs the arm does change. Run with OMP_NUM_THREADS=1 on a busy machine (docs/learning.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

METRICS = ["first_tool_accuracy", "exact_sequence_match", "argument_match", "valid_call_rate", "answer_fact_recall"]
TRAINER = str(Path(sys.executable).with_name("trainer"))


def parse(argv: list[str]):
    shared: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, shared = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arm", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"),
                   help="an arm: its name, then trainer run overrides (repeatable)")
    p.add_argument("--parallel", type=int, default=1, help="runs at a time")
    args = p.parse_args(argv)
    return args, shared


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return out / f"{arm.replace(' ', '_')}-seed{seed}"


SHAREABLE = ("traces.jsonl", "base", "dataset")  # stages an SFT-only arm has in common with its seed's first


def share_stages(donor: Path, run: Path) -> None:
    """Copy the donor run's early stages into a run not started yet (stage.json travels with them)."""
    if run.exists():
        return
    run.mkdir(parents=True)
    for name in SHAREABLE:
        src = donor / name
        if src.is_dir():
            shutil.copytree(src, run / name)
        elif src.exists():
            shutil.copy2(src, run / name)


def command(out: Path, arm: list[str], seed: int, shared: list[str]) -> list[str]:
    name, overrides = arm[0], arm[1:]
    cmd = [TRAINER, "run", "--demo", "--out", str(run_dir(out, name, seed)), "-o", f"run.seed={seed}",
           "-o", f"sft.seed={seed}"]
    for o in overrides:
        cmd += ["-o", o]
    return cmd + shared


def summary(out: Path, arm: str, seed: int) -> dict:
    return json.loads((run_dir(out, arm, seed) / "eval" / "eval.json").read_text())["summary"]


def table(out: Path, arms: list[list[str]], seeds: list[int]) -> tuple[str, dict]:
    stats = {arm[0]: {m: [v for v in (summary(out, arm[0], s)["student"].get(m) for s in seeds) if v is not None]
                      for m in METRICS} for arm in arms}
    return markdown_table(stats), stats


def metrics_of(stats: dict) -> list[str]:
    """The metrics `stats` holds, in its order (every arm has the same ones)."""
    return list(next(iter(stats.values()), {})) or METRICS


def markdown_table(stats: dict) -> str:
    """One row per arm: each metric's mean ± sd over the arm's runs (`stats[arm][metric]` = values,
    every arm with the same metrics in the same order)."""
    metrics = metrics_of(stats)
    rows = ["| arm | " + " | ".join(metrics) + " |", "| --- |" + " ---: |" * len(metrics)]
    for name, per_metric in stats.items():
        n = max((len(v) for v in per_metric.values()), default=0)
        cells = [f"{statistics.mean(v):.3f} ± {statistics.stdev(v) if len(v) > 1 else 0:.3f}" if v else "—"
                 for v in per_metric.values()]
        rows.append(f"| {name} (n={n}) | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def plot(stats: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = metrics_of(stats)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), sharey=True)
    for ax, m in zip(axes, metrics):
        for i, (name, per_metric) in enumerate(stats.items()):
            values = per_metric[m]
            if not values:
                continue
            ax.bar(i, statistics.mean(values), color="#9db4d8")
            ax.scatter([i] * len(values), values, color="#1f3b73", zorder=3, s=14)
        ax.set_xticks(range(len(stats)), list(stats), rotation=20, ha="right", fontsize=8)
        ax.set_title(m.replace("_", " "), fontsize=9)
        ax.set_ylim(0, 1.05)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str]) -> int:
    args, shared = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(arm, seed) for seed in args.seeds for arm in args.arm]
    running: list[tuple[subprocess.Popen, str]] = []
    failed: list[str] = []

    def finish_one() -> None:
        proc, label = running.pop(0)
        if proc.wait() != 0:
            failed.append(label)

    for arm, seed in jobs:
        while len(running) >= args.parallel:
            finish_one()
        first = args.arm[0][0]
        if arm[0] != first and args.parallel == 1 and (run_dir(args.out, first, seed) / "eval" / "eval.json").exists():
            share_stages(run_dir(args.out, first, seed), run_dir(args.out, arm[0], seed))
        log = open(run_dir(args.out, arm[0], seed).with_suffix(".log"), "w")
        label = f"{arm[0]} seed {seed}"
        print(f"running {label}", flush=True)
        running.append((subprocess.Popen(command(args.out, arm, seed, shared), stdout=log, stderr=subprocess.STDOUT),
                        label))
    while running:
        finish_one()
    if failed:
        print(f"failed: {', '.join(failed)}: see their logs in {args.out}", file=sys.stderr)
        return 1
    text, stats = table(args.out, args.arm, args.seeds)
    (args.out / "ablation.md").write_text(text)
    plot(stats, args.out / "ablation.png")
    print(text + f"\n→ {args.out / 'ablation.md'}, {args.out / 'ablation.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
