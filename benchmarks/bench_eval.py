"""Held-out evaluation speed: the student's workflows generated as `trainer eval` does (each
project's system turn and tools prefilled once, each turn continuing its row's last prompt:
trainer/shared_prefix.py) against the system turn cached alone and against plain left-padded
batches, side by side.

    .venv/bin/python benchmarks/bench_eval.py --run /tmp/run          # a `trainer run` output folder
    .venv/bin/python benchmarks/bench_eval.py --model DIR --data DIR --examples 16 --batch 16

The arms load the same student, step the same held-out examples in batches of `--batch` (eval's
`eval.batch_size`), greedy, with eval's turn limits, and alternate arm by arm `--rounds` times so
a busy machine slows them alike. Prints each arm's seconds, the ratios (above 1 is faster), and
whether every turn the student wrote is the same in all arms: the caches must change no step of a
workflow. `--bf16` adds a fourth arm, eval's own path with the student's weights in bf16
(`eval.precision`): rounding may change a turn there, so it prints how many workflows came out the
same instead (score them with `trainer eval` to see whether it matters). Nothing here asserts a
speed; tests/test_bench_eval.py checks that it runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_arm(policy, rows: list[dict], batch: int) -> tuple[float, list[list[str]]]:
    start = time.perf_counter()
    raw = []
    for i in range(0, len(rows), batch):
        raw += [episode.raw for episode in policy.run_batch(rows[i : i + batch])]
    return time.perf_counter() - start, raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a `trainer run --out` folder: its sft/final and dataset")
    parser.add_argument("--model", type=Path, help="the student (default: RUN/sft/final)")
    parser.add_argument("--data", type=Path, help="the dataset folder with test.jsonl (default: RUN/dataset)")
    parser.add_argument("--examples", type=int, default=16, help="held-out examples (default 16)")
    parser.add_argument("--batch", type=int, default=16, help="examples per batch, as eval.batch_size (default 16)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="per turn, as eval.max_new_tokens (default 256)")
    parser.add_argument("--max-turns", type=int, default=16, help="as eval.max_turns (default 16)")
    parser.add_argument("--rounds", type=int, default=1, help="alternations of the arms (default 1)")
    parser.add_argument("--bf16", action="store_true", help="also eval's path with bf16 weights (eval.precision)")
    args = parser.parse_args(argv)
    model = args.model or (args.run / "sft" / "final" if args.run else None)
    data = args.data or (args.run / "dataset" if args.run else None)
    if model is None or data is None:
        parser.error("give --run, or both --model and --data")
    if not (data / "test.jsonl").is_file():
        parser.error(f"no test split at {data / 'test.jsonl'}: run `trainer build-dataset` first")

    from trainer.evaluate import ModelPolicy

    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines() if line.strip()][: args.examples]
    cached = ModelPolicy(str(model), args.max_new_tokens, args.max_turns)
    system_only = ModelPolicy(str(model), args.max_new_tokens, args.max_turns)
    system_only.generator.max_remembered_bytes = 0  # no turn continues the last: all after the system turn again
    plain = ModelPolicy(str(model), args.max_new_tokens, args.max_turns)
    plain.generator.min_prefix = 10**9  # nothing is ever cached: every row left-padded, prefilled whole
    plain.generator.max_remembered_bytes = 0

    arms = (("cached", cached, "trainer eval (system turn + last prompt)"),
            ("system", system_only, "system turn cached alone"),
            ("plain", plain, "plain left padding"))
    exact = [name for name, _, _ in arms]  # the arms that must write every turn alike
    if args.bf16:
        arms += (("bf16", ModelPolicy(str(model), args.max_new_tokens, args.max_turns, precision="bf16"),
                  "trainer eval in bf16 (eval.precision)"),)
    times: dict[str, list[float]] = {name: [] for name, _, _ in arms}
    outputs: dict[str, list] = {}
    for _ in range(args.rounds):
        for name, policy, _ in arms:
            seconds, raw = run_arm(policy, rows, args.batch)
            times[name].append(seconds)
            outputs[name] = raw

    turns = sum(len(r) for r in outputs["cached"])
    print(f"{len(rows)} held-out workflows of {model}, batches of {args.batch}, {turns} student turns, {args.rounds} round(s)")
    for name, _, label in arms:
        print(f"  {label:42s} {statistics.median(times[name]):8.1f} s")
    print(f"  prefixes prefilled: {cached.generator.prefills} (distinct system turn + tools); "
          f"turns that continued their last prompt: {cached.generator.continued}")
    for name, _, label in arms[1:]:
        if name in exact:
            ratio = statistics.median(times[name]) / statistics.median(times["cached"])
            print(f"ratio {ratio:.2f}x faster than {label}")
    if args.bf16:
        ratio = statistics.median(times["cached"]) / statistics.median(times["bf16"])
        alike = sum(a == b for a, b in zip(outputs["bf16"], outputs["cached"]))
        print(f"ratio {ratio:.2f}x faster in bf16 than in float32; {alike} of {len(rows)} workflows written alike")
    same = all(outputs[name] == outputs["cached"] for name in exact)
    print("every turn identical in all arms" if same else
          "turns differ between the arms: a cache changed what the student wrote (a bug, or rounding at a near-tie)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
