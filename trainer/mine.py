"""`trainer mine`: find the prompts where the student is easiest to tell from the teacher.

    trainer mine --model runs/x/rl/final --data runs/x/dataset       # rank, write weights and a dataset
    trainer mine --status                                            # what was mined last time, and why

For each prompt of the split (the train split by default: these are the prompts the next round
trains on) the student's workflow is rolled out with the teacher's observations replayed, and two
numbers say how clearly it differs from the teacher's:

    gap            1 - workflow similarity (trainer/reward.py), with the weakest term named
    disc           the discriminator's confidence that the student's workflow is not the
                   teacher's, 1 - p(teacher) (0 when no discriminator has been trained)

They are mixed (`mine.gap_weight`, `mine.discriminator_weight`) into one score, prompts are ranked
by it, and the top `mine.top_fraction` get weight `mine.oversample`. An A/B test's report
({run.out}/abtest/report.json), when present, adds its easily spotted held-out prompts: held-out
prompts are never trained on, so their workflow family (the teacher's tool sequence) is what is
boosted, in the training prompts of the same family.

Writes in {out}:
    mined.jsonl      the ranking: trace_id, prompt, score, gap, disc, weakest term and why
    weights.json     {trace_id: weight} for every prompt with weight > 1; `trainer rl` over-samples
                     with it (rl.mined_weights, found here by default)
    dataset/         the dataset with the mined training examples repeated `weight` times and the
                     held-out splits untouched: point the next SFT round at it (sft.data_dir)
    mine.md          the status report `--status` prints
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import click

from trainer.config import STAGE_CONTEXT, ConfigError, UnderstudyConfig, resolve_cli_config


def _paths(cfg: UnderstudyConfig) -> dict[str, Path]:
    out = Path(cfg.run.out)
    return {
        "model": Path(cfg.mine.model) if cfg.mine.model else latest_student(cfg),
        "data": Path(cfg.mine.data_dir or cfg.sft.data_dir or out / "dataset"),
        "out": Path(cfg.mine.output_dir or out / "mine"),
        "abtest": Path(cfg.abtest.output_dir or out / "abtest") / "report.json",
    }


def latest_student(cfg: UnderstudyConfig) -> Path:
    """The RL student when RL has produced one, else the SFT student."""
    out = Path(cfg.run.out)
    rl_final = Path(cfg.rl.output_dir or out / "rl") / "final"
    if rl_final.exists():
        return rl_final
    return Path(cfg.sft.output_dir or out / "sft") / "final"


def rank(rows: list[dict[str, Any]], scored: dict[str, Any], gap_weight: float = 0.5, disc_weight: float = 0.5) -> list[dict[str, Any]]:
    """Order prompts by how clearly the student differs (most first), each with its reasons."""
    from trainer.reward import TERMS

    total_w = gap_weight + (disc_weight if scored["examples"] and "p_teacher" in scored["examples"][0] else 0.0)
    ranked = []
    for row, ex in zip(rows, scored["examples"]):
        gap = 1.0 - ex["similarity"]
        disc = 1.0 - ex["p_teacher"] if "p_teacher" in ex else None
        score = (gap_weight * gap + (disc_weight * disc if disc is not None else 0.0)) / (total_w or 1.0)
        weakest = min(TERMS, key=lambda t: ex["terms"][t])
        ranked.append({
            "trace_id": str(row.get("trace_id")),
            "prompt": row.get("prompt"),
            "score": round(score, 4),
            "gap": round(gap, 4),
            "disc": None if disc is None else round(disc, 4),
            "weakest_term": weakest,
            "why": ex["notes"][weakest],
            "teacher": ex["teacher"],
            "student": ex["student"],
        })
    ranked.sort(key=lambda r: (-r["score"], r["trace_id"]))
    return ranked


def assign_weights(ranked: list[dict[str, Any]], top_fraction: float, oversample: int) -> dict[str, int]:
    n = int(round(len(ranked) * top_fraction))
    if top_fraction > 0 and ranked:
        n = max(n, 1)
    return {r["trace_id"]: oversample for r in ranked[:n]}


def family_boost(rows: list[dict[str, Any]], spotted_families: list[list[str]], oversample: int) -> dict[str, int]:
    """Training prompts whose teacher workflow matches a family the A/B test spotted easily."""
    from trainer.evaluate import teacher_sequence

    families = {tuple(f) for f in spotted_families}
    return {str(r.get("trace_id")): oversample for r in rows if tuple(teacher_sequence(r["messages"])) in families}


def write_oversampled_dataset(data_dir: Path, out_dir: Path, weights: dict[str, int]) -> Path:
    """Copy the dataset with each weighted training example repeated; held-out splits unchanged."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("validation.jsonl", "test.jsonl", "stats.json", "stats.md"):
        if (data_dir / name).exists():
            shutil.copyfile(data_dir / name, out_dir / name)
    with open(data_dir / "train.jsonl") as src, open(out_dir / "train.jsonl", "w") as dst:
        for line in src:
            if not line.strip():
                continue
            trace_id = str(json.loads(line).get("trace_id"))
            dst.write(line if line.endswith("\n") else line + "\n")
            for _ in range(weights.get(trace_id, 1) - 1):
                dst.write(line if line.endswith("\n") else line + "\n")
    return out_dir


def status_markdown(report: dict[str, Any], top: int = 10) -> str:
    lines = [
        f"# Mined prompts ({report['mined']} of {report['n']} over-sampled ×{report['oversample']})",
        "",
        f"Student: `{report['model']}`; split: {report['split']}; mined at {report['at']}.",
        f"Score = {report['gap_weight']:g}·gap (1 - similarity)"
        + (f" + {report['discriminator_weight']:g}·disc (1 - p(teacher))" if report["discriminator"] else " (no discriminator trained)"),
        f"Mean gap {report['mean_gap']:.3f}" + (f", mean disc {report['mean_disc']:.3f}" if report.get("mean_disc") is not None else "") + ".",
    ]
    if report.get("families"):
        lines.append(f"A/B-spotted workflow families boosted: {report['families']} ({report['family_boosted']} training prompts).")
    lines += ["", "Weakest terms among the mined prompts: " + ", ".join(f"{t} ×{n}" for t, n in report["weakest_terms"].items()), ""]
    lines += ["| rank | score | gap | disc | weakest | why | prompt |", "| ---: | ---: | ---: | ---: | --- | --- | --- |"]
    for i, r in enumerate(report["top"][:top], 1):
        disc = "—" if r["disc"] is None else f"{r['disc']:.2f}"
        lines.append(f"| {i} | {r['score']:.3f} | {r['gap']:.3f} | {disc} | {r['weakest_term']} | {r['why']} | {(r['prompt'] or '')[:70]} |")
    lines += ["", f"Next round: `trainer rl` reads {report['weights']}; `trainer sft --data {report['dataset']}` over-samples them.", ""]
    return "\n".join(lines)


def run_mine(cfg: UnderstudyConfig, log: Callable[[str], None] = click.echo, discriminator=None) -> dict[str, Any]:
    from trainer.discriminator import Discriminator, discriminator_dir
    from trainer.reward import _read_rows, rollouts, score_workflows

    m = cfg.mine
    if not 0 <= m.top_fraction <= 1:
        raise ConfigError(f"mine.top_fraction must be in [0, 1], got {m.top_fraction}")
    if m.oversample < 1:
        raise ConfigError(f"mine.oversample must be >= 1, got {m.oversample}")
    paths = _paths(cfg)
    split_file = paths["data"] / f"{m.split}.jsonl"
    if not split_file.exists():
        raise ConfigError(f"no {m.split} split at {split_file}: run `trainer build-dataset` or set mine.data_dir")
    from trainer.sft import check_student

    check_student(paths["model"], "mine.model", "run `trainer sft` (or `trainer rl`) or set mine.model")
    if discriminator is None and (discriminator_dir(cfg) / "calibration.json").exists():
        discriminator = Discriminator.load(discriminator_dir(cfg))
    rows = _read_rows(split_file, m.max_examples)
    log(f"[mine] rolling out {paths['model']} on {len(rows)} {m.split} prompts …")
    r = cfg.reward
    student = rollouts(str(paths["model"]), rows, r.max_new_tokens, r.max_turns, r.batch_size)
    scored = score_workflows(rows, student, r.weights, discriminator, r.discriminator_weight)
    ranked = rank(rows, scored, m.gap_weight, m.discriminator_weight)
    weights = assign_weights(ranked, m.top_fraction, m.oversample)

    families: list[list[str]] = []
    family_boosted = 0
    if paths["abtest"].exists():
        ab = json.loads(paths["abtest"].read_text())
        families = [s["teacher"] for s in ab.get("spotted", []) if s.get("teacher")]
        if families:
            extra = family_boost(rows, families, m.oversample)
            family_boosted = sum(1 for k in extra if k not in weights)
            weights.update(extra)

    out = paths["out"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "mined.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ranked))
    (out / "weights.json").write_text(json.dumps(weights, indent=2, sort_keys=True) + "\n")
    dataset = write_oversampled_dataset(paths["data"], out / "dataset", weights) if m.split == "train" else None
    mined = [r for r in ranked if r["trace_id"] in weights]
    discs = [r["disc"] for r in ranked if r["disc"] is not None]
    report = {
        "model": str(paths["model"]),
        "split": m.split,
        "n": len(ranked),
        "mined": len(weights),
        "oversample": m.oversample,
        "gap_weight": m.gap_weight,
        "discriminator_weight": m.discriminator_weight,
        "discriminator": discriminator is not None,
        "mean_gap": sum(r["gap"] for r in ranked) / max(len(ranked), 1),
        "mean_disc": sum(discs) / len(discs) if discs else None,
        "weakest_terms": dict(Counter(r["weakest_term"] for r in mined).most_common()),
        "families": families,
        "family_boosted": family_boosted,
        "top": mined[:50],
        "weights": str(out / "weights.json"),
        "dataset": str(dataset) if dataset else None,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / "mine.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "mine.md").write_text(status_markdown(report))
    log(status_markdown(report))
    return report


@click.command("mine", context_settings=STAGE_CONTEXT)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="understudy.toml or YAML.")
@click.option("--model", "model_path", help="The student (mine.model); default the RL student, else the SFT one.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), help="Dataset directory (mine.data_dir).")
@click.option("--out", "output_dir", type=click.Path(file_okay=False), help="Output directory (mine.output_dir).")
@click.option("--status", is_flag=True, help="Print what was mined last time and why; compute nothing.")
@click.pass_context
def command(ctx, config_path, model_path, data_dir, output_dir, status):
    """Rank prompts by how clearly the student differs from the teacher; over-sample them next round.

    Writes mined.jsonl (the ranking with reasons), weights.json (read by `trainer rl`), dataset/
    (train split with mined examples repeated, for the next `trainer sft`) and mine.md.
    Any config value can be set as --SECTION.KEY VALUE or -o SECTION.KEY=VALUE.
    """
    cfg = resolve_cli_config(
        config_path, ctx.args,
        [("mine.model", model_path), ("mine.data_dir", data_dir), ("mine.output_dir", output_dir)],
    )
    if status:
        md = _paths(cfg)["out"] / "mine.md"
        if not md.exists():
            raise click.ClickException(f"nothing mined yet at {md.parent}: run `trainer mine`")
        click.echo(md.read_text())
        return
    try:
        run_mine(cfg)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
