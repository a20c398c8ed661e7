"""`trainer rl`: improve the SFT student past imitation: GRPO with the behavioural reward, or student-centred SFT.

    trainer rl --model runs/x/sft/final --data runs/x/dataset --out runs/x/rl
    trainer rl --config understudy.toml --rl.max_steps 200 --rl.learning_rate 1e-5
    trainer rl --out runs/x/rl --resume                       # continue from the latest checkpoint

What is optimized, precisely. Each prompt is one point of a teacher trace: the conversation up to
one of the teacher's assistant turns (system prompt, tools, user prompt, and every earlier teacher
turn with the observations the teacher recorded), rendered with understudy's chat template and the
generation prompt (`rl.turns = "all"`; `"first"` keeps only the first turn). TRL's `GRPOTrainer`
samples `rl.num_generations` completions of the *next assistant turn* per prompt, and each is
rewarded by `turn_reward`: the deterministic similarity (trainer/reward.py: tool choice, order,
arguments, validity, style, length) to the teacher's actual turn at that point, mixed with the
discriminator's p(teacher) of the teacher's prefix followed by the student's turn when a
discriminator has been trained (`reward.discriminator_weight`).

This is single-step GRPO on teacher-forced prefixes, not a multi-step episode: the student is
scored on one turn at a time, and the next turn's prompt is the teacher's prefix, not the
student's own history. Multi-step rollouts, where each of the student's tool calls is answered
with the observation the teacher recorded (the replay environment of trainer/evaluate.py), are
what the held-out reward before and after RL is measured on (`rl.eval_examples`), and what
`trainer reward`, `trainer mine` and `trainer ab-test` use. TRL 1.16's `environment_factory` could
run whole tool-calling episodes inside GRPO, but its tools are Python methods whose schemas TRL
derives from signatures, which can't reproduce the trace's recorded tool schemas or arbitrary
tool names (MCP tools); the single-step form trains on exactly the prompts SFT trained on.

Student-centred (`rl.algorithm = "student_centred"`, trainer/student_centred.py): the student is
rolled out greedily on the train split in the replay environment, keeping its own turns in its
history, up to the first step where it leaves the teacher's workflow (other tools, other arguments,
an invalid call, answering when the teacher called or the reverse); the teacher's turn at that step,
given the student's own history, becomes an SFT target (loss on that turn only), mixed with
teacher examples (`rl.sc_teacher_share`), and SFT continues from the student (`rl.max_steps`,
`rl.sc_learning_rate`, `rl.sc_batch_size`; `rl.sc_rounds` > 1 rolls out again, DAgger-style).
SCoRe's idea (arXiv 2509.14257). It trains on the states the student itself reaches, with a dense
target instead of a sampled reward; the same held-out report before and after is written.
Measured on the tiny test world (docs/rl.md, benchmarks/bench_rl.py --compare), neither algorithm
raises the greedy held-out reward on every seed: student-centred at rl.sc_learning_rate 1e-4 raises
its mean (0.608 → 0.632 ± 0.029 over six seeds, four of six above SFT) and beats a teacher-only
control with the same steps; GRPO lowers it (0.573). On the `--demo` student, three DAgger rounds
(the preset's rl settings) raise it: +0.014 ± 0.003 on test and +0.013 ± 0.008 on validation over
seeds 0-2, each seed above SFT (docs/rl.md, "Three rounds").

PPO: removed from TRL in 1.13 (it lived in `trl.experimental.ppo` from 0.29 to 1.12). With
`rl.algorithm = "ppo"` this command says whether the installed TRL has it; it does not fall back
to a PPO of its own, and understudy's PPO path is not implemented, so use GRPO.

Held-out reward, before and after (`rl.eval_examples` of `rl.eval_split`): multi-step replay
rollouts scored by the same similarity, twice: greedy, the way `trainer serve` answers a request
that sets no temperature, and sampled at `rl.temperature` with `rl.eval_samples` draws per example
(seeded, so both models get comparable draws), the policy GRPO actually optimizes. They can move
apart: on the tiny test world (tests/test_rl.py, 24 steps at T=0.5 from the SFT student), the
sampled reward went 0.416 → 0.442 while greedy went 0.520 → 0.508. Pick the temperature you will
serve at, and measure with it.

Temperature matters for small students: a tiny model sampled at T=1 writes mostly malformed calls
(turn reward 0.35 against 0.58 greedy on the test world), so every group's reward spread is about
"well-formed or not" and GRPO learns little about which tool or argument; at T=0.3-0.6 the samples
are well-formed and differ where the decisions are.

Output directory:
    checkpoints/checkpoint-N/   GRPO checkpoints (rl.save_steps), each with understudy_config.json
    final/                      the RL'd student (model + tokenizer), loadable with from_pretrained
    reward.png                  the mean training reward per logging step
    rl_summary.json             steps, timings, the held-out reward before and after, and which
                                student goes on ("student", "kept": "rl" or "start"; rl.select_split)

Cluster scale: GRPOTrainer runs under accelerate, which owns the distribution; nothing here is
home-made. Generation is the bottleneck at scale: TRL's vLLM integration (`use_vllm` in GRPOConfig,
server or colocate mode) is the documented way, e.g.

    accelerate launch --config_file deepspeed_zero2.yaml -m trainer.cli rl --config understudy.toml
    trl vllm-serve --model runs/x/sft/final &     # then -o rl.* plus GRPOConfig use_vllm in a config

For many nodes, verl or OpenRLHF on Ray run GRPO/PPO with a custom Python reward: point their
reward function at `trainer.rl.turn_reward` (or `trainer.reward.similarity`) and their data at the
prompts `build_prompts` writes (`rl_prompts.jsonl`).
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import click

from trainer.config import STAGE_CONTEXT, ConfigError, UnderstudyConfig, resolve_cli_config

PPO_REMOVED = (
    "PPO is not available: the installed TRL {version} has no PPO trainer (PPO was removed from TRL in "
    "1.13; it lived in trl.experimental.ppo from 0.29 to 1.12). understudy does not ship a PPO of its own. "
    "Use rl.algorithm = \"grpo\" (the default)."
)
PPO_NOT_WIRED = (
    "The installed TRL {version} has trl.experimental.ppo, but understudy's RL stage only drives GRPO; "
    "PPO is not wired in. Use rl.algorithm = \"grpo\" (the default)."
)


def ppo_available() -> bool:
    """Whether the installed TRL ships a PPO trainer (trl.experimental.ppo, TRL 0.29 to 1.12)."""
    import warnings

    with warnings.catch_warnings():  # importing trl.experimental warns that it is experimental
        warnings.simplefilter("ignore")
        try:
            return importlib.util.find_spec("trl.experimental.ppo") is not None
        except ModuleNotFoundError:
            return False


def check_algorithm(cfg: UnderstudyConfig) -> None:
    if cfg.rl.algorithm == "ppo":
        import trl

        template = PPO_NOT_WIRED if ppo_available() else PPO_REMOVED
        raise ConfigError(template.format(version=trl.__version__))


def check_rl_config(cfg: UnderstudyConfig) -> None:
    rl = cfg.rl
    check_algorithm(cfg)
    if rl.max_steps < 1:
        raise ConfigError(f"rl.max_steps must be >= 1, got {rl.max_steps}")
    if rl.algorithm == "student_centred":
        if not 0 <= rl.sc_teacher_share < 1:
            raise ConfigError(f"rl.sc_teacher_share must be in [0, 1), got {rl.sc_teacher_share}")
        if rl.sc_rounds < 1 or rl.sc_rounds > rl.max_steps:
            raise ConfigError(f"rl.sc_rounds must be between 1 and rl.max_steps ({rl.max_steps}), got {rl.sc_rounds}")
        if rl.sc_samples < 0:
            raise ConfigError(f"rl.sc_samples must be >= 0, got {rl.sc_samples}")
        if rl.sc_learning_rate <= 0 or rl.sc_batch_size < 1:
            raise ConfigError(f"rl.sc_learning_rate must be > 0 and rl.sc_batch_size >= 1, got {rl.sc_learning_rate}, {rl.sc_batch_size}")
    if rl.eval_samples < 0:
        raise ConfigError(f"rl.eval_samples must be >= 0 (0: greedy held-out reward only), got {rl.eval_samples}")
    if rl.temperature <= 0:
        raise ConfigError(f"rl.temperature must be > 0: GRPO compares sampled completions, got {rl.temperature}")
    if rl.learning_rate <= 0:
        raise ConfigError(f"rl.learning_rate must be > 0, got {rl.learning_rate}")
    if rl.algorithm == "student_centred":
        pass  # no groups of generations
    elif rl.num_generations < 2:
        raise ConfigError(f"rl.num_generations must be >= 2 (GRPO compares completions of one prompt), got {rl.num_generations}")
    elif (rl.per_device_train_batch_size * rl.gradient_accumulation_steps) % rl.num_generations:
        raise ConfigError(
            f"rl.per_device_train_batch_size × rl.gradient_accumulation_steps "
            f"({rl.per_device_train_batch_size} × {rl.gradient_accumulation_steps}) must be a multiple of "
            f"rl.num_generations ({rl.num_generations})"
        )
    if not 0 <= cfg.reward.discriminator_weight <= 1:
        raise ConfigError(f"reward.discriminator_weight must be in [0, 1], got {cfg.reward.discriminator_weight}")


# ----------------------------------------------------------------------------------------------
# Prompts


def load_weights(path: Optional[Path]) -> dict[str, float]:
    if path is None or not Path(path).exists():
        return {}
    return {str(k): float(v) for k, v in json.loads(Path(path).read_text()).items()}


def build_prompts(rows: list[dict[str, Any]], turns: str = "all", weights: Optional[dict[str, float]] = None) -> list[dict[str, Any]]:
    """One prompt per teacher assistant turn (or first turn), over-sampled by mined weights.

    Columns: prompt (rendered text, BOS left to the tokenizer), teacher_turn (the turn as a
    Workflow JSON), tool_schemas, context (the messages before the turn, for the discriminator),
    trace_id and turn.
    """
    from trainer.chat_template import BEGIN_OF_TEXT, render
    from trainer.reward import teacher_turns

    weights = weights or {}
    out = []
    for row in rows:
        repeat = max(1, int(round(weights.get(str(row.get("trace_id")), 1.0))))
        points = teacher_turns(row)
        if turns == "first":
            points = points[:1]
        for k, (context, wf) in enumerate(points):
            text = render(context, row.get("tools"), add_generation_prompt=True)
            if text.startswith(BEGIN_OF_TEXT):
                text = text[len(BEGIN_OF_TEXT):]  # the tokenizer adds BOS itself
            item = {
                "prompt": text,
                "teacher_turn": json.dumps(wf.to_json()),
                "tool_schemas": row.get("tools") or "[]",
                "context": json.dumps([m for m in context if m["role"] != "system"]),
                "trace_id": str(row.get("trace_id")),
                "turn": k,
            }
            out.extend([item] * repeat)
    return out


# ----------------------------------------------------------------------------------------------
# The reward GRPO sees


def make_turn_reward(weights: Optional[dict[str, float]] = None, discriminator=None, discriminator_weight: float = 0.0):
    """A GRPO reward function: similarity of each completed turn to the teacher's, plus the discriminator."""
    from trainer.reward import TERMS, Workflow, combine, similarity, turn_workflow

    def turn_reward(prompts, completions, teacher_turn, tool_schemas, context=None, log_metric=None, **_) -> list[float]:
        student = [turn_workflow(c if isinstance(c, str) else c[-1]["content"]) for c in completions]
        teachers = [Workflow.from_json(json.loads(t)) for t in teacher_turn]
        breakdowns = [similarity(s, t, tools, weights) for s, t, tools in zip(student, teachers, tool_schemas)]
        sims = [b.total for b in breakdowns]
        p = None
        if discriminator is not None and discriminator_weight > 0 and context is not None:
            p = discriminator.p_teacher([_partial_text(json.loads(c), s) for c, s in zip(context, student)])
        if log_metric is not None:
            for t in TERMS:
                log_metric(f"terms/{t}", sum(b.terms[t] for b in breakdowns) / len(breakdowns))
            log_metric("similarity", sum(sims) / len(sims))
            if p is not None:
                log_metric("p_teacher", sum(p) / len(p))
        return [combine(s, p[i] if p is not None else None, discriminator_weight) for i, s in enumerate(sims)]

    turn_reward.__name__ = "behavioural_reward"
    return turn_reward


def _partial_text(context: list[dict[str, Any]], turn) -> str:
    """The teacher's prefix followed by the student's turn, rendered as the discriminator reads workflows."""
    from trainer.chat_template import BEGIN_OF_TEXT, render

    messages = list(context)
    if turn.steps:
        step = turn.steps[0]
        messages.append({"role": "assistant", "content": step.narration, "tool_calls": [
            {"type": "function", "function": {"name": c.name or "?", "arguments": json.dumps(c.arguments)}} for c in step.calls]})
    else:
        messages.append({"role": "assistant", "content": turn.answer or ""})
    text = render(messages)
    return text[len(BEGIN_OF_TEXT):] if text.startswith(BEGIN_OF_TEXT) else text


# ----------------------------------------------------------------------------------------------
# Training


def write_reward_curve(log_history: list[dict[str, Any]], path: Path) -> Optional[Path]:
    from trainer.progress import history_points, plot_curves

    rewards, sims = history_points(log_history, "reward"), history_points(log_history, "similarity")
    return plot_curves(path, "understudy RL (GRPO)", "behavioural reward", [
        ("reward (mean over completions)", rewards, "."),
        ("similarity", sims if sims != rewards else [], "."),
    ], ylim=(0, 1))


def _paths(cfg: UnderstudyConfig) -> dict[str, Path]:
    out = Path(cfg.run.out)
    return {
        "model": Path(cfg.rl.model or Path(cfg.sft.output_dir or out / "sft") / "final"),
        "data": Path(cfg.rl.data_dir or cfg.sft.data_dir or out / "dataset"),
        "out": Path(cfg.rl.output_dir or out / "rl"),
        "weights": Path(cfg.rl.mined_weights or Path(cfg.mine.output_dir or out / "mine") / "weights.json"),
    }


def held_out_reward(cfg: UnderstudyConfig, model_path: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean behavioural reward of multi-step replay rollouts on held-out rows: greedy, and (with
    rl.eval_samples) sampled at rl.temperature, the same draws for every model (seeded)."""
    import torch

    from trainer.reward import rollouts, score_workflows

    r, rl = cfg.reward, cfg.rl
    greedy = greedy_summary(cfg, model_path, rows)
    if rl.eval_samples > 0:
        repeated = [row for row in rows for _ in range(rl.eval_samples)]
        torch.manual_seed(rl.seed)
        wfs = rollouts(model_path, repeated, r.max_new_tokens, r.max_turns, r.batch_size, temperature=rl.temperature)
        greedy["sampled"] = {**score_workflows(repeated, wfs, r.weights)["summary"], "temperature": rl.temperature,
                             "samples_per_example": rl.eval_samples}
    return greedy


def _describe_held_out(s: dict[str, Any]) -> str:
    text = f"{s['similarity']:.3f} greedy"
    if "sampled" in s:
        text += f", {s['sampled']['similarity']:.3f} sampled at T={s['sampled']['temperature']:g}"
    return text


def train_rl(cfg: UnderstudyConfig, log: Callable[[str], None] = click.echo, discriminator=None) -> dict[str, Any]:
    """GRPO from the SFT student; returns the summary written to rl_summary.json."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from trainer.chat_template import END_OF_TURN, apply_chat_template
    from trainer.discriminator import Discriminator, discriminator_dir
    from trainer.reward import _read_rows
    from trainer.progress import ProgressLine, SaveConfigBesideCheckpoint
    from trainer.sft import check_student, latest_checkpoint, recorded_config

    check_rl_config(cfg)
    rl = cfg.rl
    paths = _paths(cfg)
    check_student(paths["model"], "rl.model", "run `trainer sft` or set rl.model")
    train_file = paths["data"] / "train.jsonl"
    if not train_file.exists():
        raise ConfigError(f"no training data at {train_file}: run `trainer build-dataset` or set rl.data_dir")
    out = paths["out"]
    out.mkdir(parents=True, exist_ok=True)
    recorded = recorded_config(cfg, paths["data"])
    recorded.save(out)

    weights = load_weights(paths["weights"])
    if weights:
        boosted = sum(1 for w in weights.values() if w > 1)
        log(f"[rl] over-sampling {boosted} mined prompt(s) from {paths['weights']}")
    prompts = build_prompts(_read_rows(train_file), rl.turns, weights)
    (out / "rl_prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    if discriminator is None and cfg.reward.discriminator_weight > 0 and (discriminator_dir(cfg) / "calibration.json").exists():
        discriminator = Discriminator.load(discriminator_dir(cfg))
    disc_note = f"discriminator weight {cfg.reward.discriminator_weight}" if discriminator is not None else "similarity only (no discriminator)"
    if rl.algorithm == "student_centred":
        log(f"[rl] student-centred SFT: the student's own rollouts on {train_file}, the teacher's turn at each first divergence")
    else:
        log(f"[rl] GRPO on {len(prompts)} turn prompts from {train_file}; reward: {disc_note}")

    eval_rows = []
    eval_file = paths["data"] / f"{rl.eval_split}.jsonl"
    if rl.eval_examples and eval_file.exists():
        eval_rows = _read_rows(eval_file, rl.eval_examples)
    summary: dict[str, Any] = {"start_model": str(paths["model"]), "prompts": len(prompts)}
    checkpoint_dir = out / "checkpoints"
    resume_from = latest_checkpoint(checkpoint_dir) if rl.resume else None
    if eval_rows:
        before_file = out / "before.json"
        if resume_from and before_file.exists():
            summary["before"] = json.loads(before_file.read_text())
        else:
            summary["before"] = held_out_reward(cfg, str(paths["model"]), eval_rows)
            before_file.write_text(json.dumps(summary["before"], indent=2) + "\n")
        log(f"[rl] held-out mean similarity before RL: {_describe_held_out(summary['before'])} ({len(eval_rows)} {rl.eval_split} examples)")

    if rl.algorithm == "student_centred":
        return _finish(cfg, summary, eval_rows, out, log, _train_student_centred(cfg, paths, train_file, out, log))

    tokenizer = AutoTokenizer.from_pretrained(paths["model"])
    apply_chat_template(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(paths["model"], dtype=torch.float32)
    # Each completion is one turn and ends at <|eot_id|>, as in serving and evaluation: TRL stops
    # generation and masks the completion at the model's EOS ids, so make sure that one is among them.
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    model.generation_config.eos_token_id = [eot] + [e for e in eos if e != eot]
    cuda = torch.cuda.is_available()
    args = GRPOConfig(
        output_dir=str(checkpoint_dir),
        max_steps=rl.max_steps,
        learning_rate=rl.learning_rate,
        per_device_train_batch_size=rl.per_device_train_batch_size,
        gradient_accumulation_steps=rl.gradient_accumulation_steps,
        num_generations=rl.num_generations,
        max_completion_length=rl.max_completion_length,
        pad_to_multiple_of=cfg.sft.pad_to_multiple_of or None,  # recurring shapes: trainer/allocator.py
        temperature=rl.temperature,
        beta=rl.beta,
        use_cpu=not cuda,
        # Recomputing activations saves GPU memory; on CPU it only costs time (TRL defaults it on).
        activation_checkpointing=cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        save_strategy="steps",
        save_steps=rl.save_steps,
        save_total_limit=rl.save_total_limit,
        logging_steps=rl.logging_steps,
        seed=rl.seed,
        data_seed=rl.seed,
        report_to=[] if rl.report_to == "none" else [rl.report_to],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=make_turn_reward(cfg.reward.weights, discriminator, cfg.reward.discriminator_weight),
        args=args,
        train_dataset=Dataset.from_list(prompts),
        processing_class=tokenizer,
        callbacks=[SaveConfigBesideCheckpoint(recorded), ProgressLine(log, "reward", ["reward_std", "kl"] if rl.beta else ["reward_std"])],
    )
    trainer.remove_callback(PrinterCallback)
    if rl.resume:
        log(f"[rl] resuming from {resume_from}" if resume_from else f"[rl] --resume: no checkpoint in {checkpoint_dir}, starting at step 0")
    t0 = time.monotonic()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    runtime = time.monotonic() - t0
    final = out / "final"
    trainer.model.save_pretrained(final)
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(final)
    history = list(trainer.state.log_history)
    write_reward_curve(history, out / "reward.png")
    rewards = [h["reward"] for h in history if "reward" in h]
    summary.update(
        final=str(final),
        global_step=trainer.state.global_step,
        train_runtime_s=round(runtime, 2),
        steps_per_second=round(trainer.state.global_step / runtime, 3) if runtime else None,
        train_reward_first=rewards[0] if rewards else None,
        train_reward_last=rewards[-1] if rewards else None,
        discriminator=bool(discriminator is not None),
    )
    return _finish(cfg, summary, eval_rows, out, log)


def _train_student_centred(cfg: UnderstudyConfig, paths: dict[str, Path], train_file: Path, out: Path, log) -> dict[str, Any]:
    from trainer.progress import history_points, plot_curves
    from trainer.reward import _read_rows
    from trainer.student_centred import train_student_centred

    result = train_student_centred(cfg, paths["model"], _read_rows(train_file), out, log, resume=cfg.rl.resume)
    history = result.pop("log_history")
    plot_curves(out / "loss.png", "understudy RL (student-centred SFT)", "loss (teacher's turn at the divergence)",
                [("train loss", history_points(history, "loss"), ".")])
    losses = [h["loss"] for h in history if "loss" in h]
    result.update(algorithm="student_centred", train_loss_first=losses[0] if losses else None,
                  train_loss_last=losses[-1] if losses else None)
    return result


def greedy_summary(cfg: UnderstudyConfig, model_path: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean behavioural reward (and its terms) of greedy multi-step replay rollouts on `rows`."""
    from trainer.reward import rollouts, score_workflows

    r = cfg.reward
    return score_workflows(rows, rollouts(model_path, rows, r.max_new_tokens, r.max_turns, r.batch_size), r.weights)["summary"]


def select_student(cfg: UnderstudyConfig, start: Path, final: Path, data_dir: Path, log) -> dict[str, Any]:
    """Which student goes on, decided on rl.select_split (never the split the result is reported on):
    the RL one only when its greedy reward there is above the starting student's."""
    from trainer.reward import _read_rows

    rl = cfg.rl
    if not rl.select_split:
        return {"student": str(final), "kept": "rl"}
    split_file = data_dir / f"{rl.select_split}.jsonl"
    if not split_file.exists():
        log(f"[rl] no {split_file} to choose between the students on: going on with the RL student")
        return {"student": str(final), "kept": "rl"}
    rows = _read_rows(split_file, rl.select_examples)
    if not rows:
        log(f"[rl] {split_file} is empty, nothing to choose between the students on: going on with the RL student")
        return {"student": str(final), "kept": "rl"}
    before, after = (greedy_summary(cfg, str(m), rows)["similarity"] for m in (start, final))
    kept = "rl" if after > before else "start"
    log(f"[rl] greedy reward on {len(rows)} {rl.select_split} examples: {before:.3f} before RL, {after:.3f} after → "
        + ("going on with the RL student" if kept == "rl" else f"going on with the student RL started from ({start})"))
    return {"student": str(final if kept == "rl" else start), "kept": kept,
            "selection": {"split": rl.select_split, "examples": len(rows), "before": before, "after": after}}


def _finish(cfg: UnderstudyConfig, summary: dict[str, Any], eval_rows: list[dict[str, Any]], out: Path, log,
            update: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The held-out reward after, the change, which student goes on, and rl_summary.json."""
    summary.update(update or {})
    summary.setdefault("algorithm", cfg.rl.algorithm)
    final = Path(summary["final"])
    paths = _paths(cfg)
    summary.update(select_student(cfg, paths["model"], final, paths["data"], log))
    if eval_rows:
        summary["after"] = held_out_reward(cfg, str(final), eval_rows)
        b, a = summary["before"], summary["after"]
        change = f"greedy {a['similarity'] - b['similarity']:+.3f}"
        if "sampled" in a and "sampled" in b:
            change += f", sampled {a['sampled']['similarity'] - b['sampled']['similarity']:+.3f}"
        log(f"[rl] held-out mean similarity after RL: {_describe_held_out(a)} (before {_describe_held_out(b)}; {change})")
    (out / "rl_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


@click.command("rl", context_settings=STAGE_CONTEXT)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="understudy.toml or YAML.")
@click.option("--model", "model_path", help="The SFT student to start from (rl.model); default {sft.output_dir}/final.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), help="Dataset directory (rl.data_dir).")
@click.option("--out", "output_dir", type=click.Path(file_okay=False), help="Output directory (rl.output_dir).")
@click.option("--algorithm", type=click.Choice(["grpo", "student_centred", "ppo"]),
              help="grpo (TRL GRPOTrainer); student_centred (SFT at the student's own first divergences); ppo is not available in TRL >= 1.13.")
@click.option("--max-steps", type=int, help="rl.max_steps")
@click.option("--resume", is_flag=True, default=None, help="Continue from the latest checkpoint.")
@click.pass_context
def command(ctx, config_path, model_path, data_dir, output_dir, algorithm, max_steps, resume):
    """Reinforce the student's workflows with GRPO (TRL) and the behavioural reward.

    Each prompt is the teacher's conversation up to one of its assistant turns; the student's
    sampled next turn is rewarded by its similarity to the teacher's (tool choice, order,
    arguments, validity, style, length) and, once trained, the discriminator's p(teacher).
    Held-out reward is measured before and after with multi-step replay rollouts.

    PPO was removed from TRL in 1.13 (TRL 1.16 is installed here); --algorithm ppo says whether the
    installed TRL has it and stops: understudy drives GRPO only and ships no PPO of its own. Several GPUs: `accelerate launch -m trainer.cli rl ...` (DeepSpeed/FSDP via accelerate;
    TRL's vLLM generation for speed); many nodes: verl or OpenRLHF on Ray with trainer.rl's reward
    (see the module docstring). Any config value can be set as --SECTION.KEY VALUE or -o SECTION.KEY=VALUE.
    """
    cfg = resolve_cli_config(
        config_path, ctx.args,
        [("rl.model", model_path), ("rl.data_dir", data_dir), ("rl.output_dir", output_dir),
         ("rl.algorithm", algorithm), ("rl.max_steps", max_steps), ("rl.resume", resume)],
    )
    try:
        check_algorithm(cfg)
        click.echo("Resolved config [rl] and [reward]:")
        click.echo(cfg.describe(["rl", "reward"]))
        train_rl(cfg)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
