"""The stages `trainer run` strings after eval: discriminator → mine → rl → ab-test.

    trainer run --demo --rl.enabled true --mine.enabled true --abtest.enabled true
    trainer run --config understudy.toml            # with [rl] enabled = true, [mine] enabled = true

Each is a pipeline stage like dataset/sft/eval (trainer/pipeline.py's Stage: a fingerprint of its
inputs in stage.json, written last; unchanged inputs skip it, an interrupted RL stage resumes from
its latest checkpoint):

    discriminator   trained on the SFT student's rollouts over the train split, only when a stage
                    reads it: GRPO's reward mixes it in (reward.discriminator_weight > 0), mining
                    scores with it, or the A/B test judges with it (without RL)
    mine            ranks the train prompts by how clearly the SFT student differs; its weights.json
                    makes the RL stage over-sample them, its dataset/ is the next SFT round's data
    rl              from the SFT student, by `rl.algorithm`: GRPO with the combined reward, over-sampling
                    mined prompts, or "student_centred" SFT on the student's own train rollouts up to
                    their first divergence from the teacher (trainer/student_centred.py); either way
                    rl_summary.json has the held-out reward before and after, greedy and sampled,
                    and the student that goes on: the RL one only if its greedy reward on
                    rl.select_split (validation) is above the SFT student's
    discriminator   retrained on the RL student (discriminator-rl/) for the A/B test, so its judge
                    is not the one RL was trained against
    ab-test         blind pairs on the held-out split, judged by that discriminator (and the LLM
                    judge when configured); people judge later with `trainer ab-test --serve`
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from trainer.config import UnderstudyConfig


def _discriminator_read_before_rl(cfg: UnderstudyConfig) -> bool:
    """Whether a stage reads the SFT student's discriminator: GRPO's reward mixes it in (student-centred
    SFT has no reward), mining scores with it, or the A/B test judges with it (only without RL: after
    RL it gets one trained on the RL student)."""
    return ((cfg.rl.enabled and cfg.rl.algorithm == "grpo" and cfg.reward.discriminator_weight > 0)
            or cfg.mine.enabled
            or (cfg.abtest.enabled and not cfg.rl.enabled))


def _stage_discriminator(cfg: UnderstudyConfig, student: Path, student_fp: str, data_dir: Path, out: Path, log) -> str:
    from trainer.discriminator import train_discriminator_for
    from trainer.pipeline import Stage, fingerprint

    fp = fingerprint("discriminator", student_fp, cfg.reward)
    stage = Stage("discriminator", out, fp, log)
    if not stage.up_to_date():
        stage.start()
        disc = train_discriminator_for(cfg, str(student), data_dir, out, log=log)
        stage.done(train_pair_accuracy=disc.info["train_pair_accuracy"])
    return fp


def run_after_eval(cfg: UnderstudyConfig, model_dir: Path, data_dir: Path, sft_fp: str, out: Path,
                   log: Callable[[str], None]) -> Path:
    """Run the enabled stages after eval; returns the student that goes on (rl/final when RL ran and
    beat the SFT student on rl.select_split)."""
    from trainer.pipeline import Stage, _dir, fingerprint

    if not (cfg.rl.enabled or cfg.mine.enabled or cfg.abtest.enabled):
        return model_dir
    for section in ("reward", "rl", "mine", "abtest"):
        getattr(cfg, section).data_dir = getattr(cfg, section).data_dir or str(data_dir)
    cfg.rl.model = cfg.rl.model or str(model_dir)

    disc_dir = _dir(cfg, "reward.discriminator_dir", out / "discriminator")
    cfg.reward.discriminator_dir = str(disc_dir)
    # Training one rolls the student out over the whole train split: skipped when nothing reads it.
    disc_fp = "none"
    if _discriminator_read_before_rl(cfg):
        disc_fp = _stage_discriminator(cfg, model_dir, sft_fp, data_dir, disc_dir, log)

    mine_fp = "none"
    if cfg.mine.enabled:
        from trainer.mine import run_mine

        mine_dir = _dir(cfg, "mine.output_dir", out / "mine")
        cfg.mine.output_dir = str(mine_dir)
        cfg.mine.model = cfg.mine.model or str(model_dir)
        mine_fp = fingerprint("mine", sft_fp, disc_fp, cfg.mine, cfg.reward)
        stage = Stage("mine", mine_dir, mine_fp, log)
        if stage.up_to_date():
            log((mine_dir / "mine.md").read_text() if (mine_dir / "mine.md").exists() else "")
        else:
            stage.start()
            report = run_mine(cfg, log=log)
            stage.done(mined=report["mined"], n=report["n"])

    student, student_fp = model_dir, sft_fp
    if cfg.rl.enabled:
        from trainer.rl import train_rl
        from trainer.sft import latest_checkpoint

        rl_dir = _dir(cfg, "rl.output_dir", out / "rl")
        cfg.rl.output_dir = str(rl_dir)
        if not cfg.mine.enabled:
            cfg.rl.mined_weights = cfg.rl.mined_weights or str(rl_dir / "no-mined-weights.json")
        rl_fp = fingerprint("rl", sft_fp, disc_fp, mine_fp, cfg.rl, cfg.reward)
        stage = Stage("rl", rl_dir, rl_fp, log)
        if not stage.up_to_date():
            if stage.interrupted_same_inputs() and latest_checkpoint(rl_dir / "checkpoints"):
                cfg.rl.resume = True
            stage.start()
            summary = train_rl(cfg, log=log)
            keys = ("global_step", "train_loss_first", "train_loss_last") if cfg.rl.algorithm == "student_centred" else (
                "global_step", "train_reward_first", "train_reward_last")
            stage.done(algorithm=cfg.rl.algorithm, **{k: summary.get(k) for k in keys}, kept=summary.get("kept"),
                       before=summary.get("before", {}).get("similarity"), after=summary.get("after", {}).get("similarity"))
        else:
            summary = json.loads((rl_dir / "rl_summary.json").read_text())
            if "before" in summary and "after" in summary:
                log(f"[rl] held-out mean similarity {summary['before']['similarity']:.3f} → {summary['after']['similarity']:.3f}")
            if summary.get("kept") == "start":
                log(f"[rl] going on with {summary['student']}: the RL student did not beat it on {cfg.rl.select_split}")
        # The RL student only when it beat the SFT one on rl.select_split (trainer/rl.py select_student).
        student, student_fp = Path(summary.get("student", rl_dir / "final")), rl_fp
        if cfg.abtest.enabled:
            # A judge the student was not trained against: retrain on the RL student's rollouts.
            disc_dir = out / "discriminator-rl"
            cfg.reward.discriminator_dir = str(disc_dir)
            disc_fp = _stage_discriminator(cfg, student, student_fp, data_dir, disc_dir, log)

    if cfg.abtest.enabled:
        from trainer.abtest import run_abtest

        ab_dir = _dir(cfg, "abtest.output_dir", out / "abtest")
        cfg.abtest.output_dir = str(ab_dir)
        cfg.abtest.model = cfg.abtest.model or str(student)
        # The student is rolled out with the reward settings and judged by that discriminator.
        fp = fingerprint("abtest", student_fp, disc_fp, cfg.reward, cfg.abtest)
        stage = Stage("ab-test", ab_dir, fp, log)
        if stage.up_to_date():
            log((ab_dir / "report.md").read_text() if (ab_dir / "report.md").exists() else "")
        else:
            stage.start()
            report = run_abtest(cfg, log=log, rebuild=True)
            stage.done(goal_met=report["goal_met"])
    return student
