"""`trainer reward`: how closely does the student work the way the teacher did? Two signals.

    trainer reward --model runs/x/sft/final --data runs/x/dataset                    # similarity only
    trainer reward --train-discriminator                                              # (re)train the judge, then score
    trainer reward --config understudy.toml --reward.weights '{"order": 2}'

1. Workflow similarity (deterministic, this module). The student's workflow on a prompt is compared
   with the teacher's trace for the same prompt, term by term, each in [0, 1]:

       tool_choice  which tools: F1 of the multisets of tool names called
       order        in what order: 1 - Levenshtein(student, teacher tool sequence) / longer length
       arguments    with what: for calls matched by tool name in the same step, the share of the
                    teacher's argument keys the student set to the same value (trainer/evaluate.py)
       validity     calls that parse, name an offered tool and validate against its JSON schema
       style        how it explains: difflib similarity of the narration and of the final answer,
                    and whether it stopped with an answer when the teacher did
       length       how much: min/max ratio of the number of steps and of the characters written

   The total is the weighted mean (`reward.weights`, default DEFAULT_WEIGHTS). Each term carries a
   one-line explanation (`Breakdown.notes`), so a low reward says what was wrong.

2. A learned discriminator (trainer/discriminator.py): a sequence classifier trained with TRL's
   RewardTrainer to score teacher workflows above student workflows for the same prompt. Its
   p(teacher) for a workflow is the second signal; retrain it (`--train-discriminator`, or each RL
   round in `trainer run`) as the student improves, so RL can't settle on exploiting a fixed judge.

Combined: (1 - w) * similarity + w * p_teacher, w = `reward.discriminator_weight` (similarity alone
when no discriminator was trained).

Rollouts here are trainer/evaluate.py's: the student answers turn by turn, and each of its tool
calls is answered with the observation the teacher recorded at that step (a replay environment).
The same code scores a single assistant turn (`turn_reward`), which is what GRPO optimizes.

Writes {out}/reward.json (summary, per-example terms and notes) and reward.md.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import click

from trainer.config import STAGE_CONTEXT, ConfigError, UnderstudyConfig, resolve_cli_config
from trainer.evaluate import (
    Episode,
    argument_match,
    call_is_valid,
    sequence_similarity,
    teacher_steps,
    tool_schemas,
)

TERMS = ["tool_choice", "order", "arguments", "validity", "style", "length"]
DEFAULT_WEIGHTS = {"tool_choice": 0.25, "order": 0.2, "arguments": 0.2, "validity": 0.1, "style": 0.15, "length": 0.1}


# ----------------------------------------------------------------------------------------------
# A workflow, whoever produced it


@dataclass
class Call:
    name: Optional[str]
    arguments: dict[str, Any]
    valid_json: bool = True


@dataclass
class Step:
    narration: str
    calls: list[Call]


@dataclass
class Workflow:
    """What one agent did on one prompt: steps of (narration, parallel calls), then an answer.

    `answer` is None when the agent never stopped (it was still calling tools when the teacher's
    trace ran out of observations to replay, or it hit the turn limit).
    """

    steps: list[Step] = field(default_factory=list)
    answer: Optional[str] = None

    @property
    def sequence(self) -> list[str]:
        return [c.name or "?" for s in self.steps for c in s.calls]

    @property
    def calls(self) -> list[Call]:
        return [c for s in self.steps for c in s.calls]

    @property
    def narration(self) -> str:
        return "\n".join(s.narration for s in self.steps if s.narration)

    def chars(self) -> int:
        return len(self.narration) + len(self.answer or "")

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": [{"narration": s.narration, "calls": [vars(c) for c in s.calls]} for s in self.steps],
            "answer": self.answer,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Workflow":
        return cls(
            steps=[Step(s["narration"], [Call(**c) for c in s["calls"]]) for s in data.get("steps", [])],
            answer=data.get("answer"),
        )


def teacher_workflow(row: dict[str, Any]) -> Workflow:
    """The teacher's workflow, read from a dataset row's messages."""
    _, steps = teacher_steps(row["messages"])
    wf = Workflow()
    for s in steps:
        if s.calls:
            wf.steps.append(Step(s.content.strip(), [Call(n, a, True) for n, a in s.calls]))
        else:
            wf.answer = s.content.strip()
    return wf


def parse_turn(text: str) -> tuple[str, list[Call]]:
    from trainer.chat_template import parse_assistant_output

    parsed = parse_assistant_output(text)
    calls = [Call(c.name, c.arguments if isinstance(c.arguments, dict) else {}, c.valid_json) for c in parsed.tool_calls]
    return parsed.narration, calls


def episode_workflow(ep: Episode) -> Workflow:
    """A student's workflow from trainer/evaluate.py's Episode (its raw turns are re-parsed for the narration)."""
    wf = Workflow()
    for text in ep.raw:
        narration, calls = parse_turn(text)
        if calls:
            wf.steps.append(Step(narration, calls))
        else:
            wf.answer = narration
    return wf


def turn_workflow(text: str) -> Workflow:
    """One generated assistant turn as a (one-step or answer-only) workflow."""
    narration, calls = parse_turn(text)
    return Workflow(steps=[Step(narration, calls)]) if calls else Workflow(answer=narration)


def teacher_turns(row: dict[str, Any]) -> list[tuple[list[dict[str, Any]], Workflow]]:
    """For each teacher assistant turn: (the conversation before it, that turn as a workflow)."""
    messages = row["messages"]
    out = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        calls = [Call(tc["function"]["name"], _args(tc["function"].get("arguments")), True) for tc in m.get("tool_calls") or []]
        content = (m.get("content") or "").strip()
        out.append((messages[:i], Workflow(steps=[Step(content, calls)]) if calls else Workflow(answer=content)))
    return out


def _args(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# ----------------------------------------------------------------------------------------------
# Rendering: one neutral rendering for the discriminator, the LLM judge and the judging page


def workflow_messages(row: dict[str, Any], wf: Workflow) -> list[dict[str, Any]]:
    """The workflow as chat messages: the prompt, each step with the teacher's recorded results
    (what the agent saw in the replay), and the answer. Both sides of an A/B pair go through here."""
    _, t_steps = teacher_steps(row["messages"])
    user = next((m for m in row["messages"] if m["role"] == "user"), {"content": row.get("prompt", "")})
    messages: list[dict[str, Any]] = [{"role": "user", "content": user["content"]}]
    for i, step in enumerate(wf.steps):
        messages.append(
            {
                "role": "assistant",
                "content": step.narration,
                "tool_calls": [
                    {"type": "function", "function": {"name": c.name or "?", "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
                    for c in step.calls
                ],
            }
        )
        replayed = t_steps[i].replay[1:] if i < len(t_steps) else []
        observed = [m for m in replayed if m["role"] == "tool"]
        for j, _ in enumerate(step.calls):
            content = observed[j]["content"] if j < len(observed) else "(no recorded result)"
            messages.append({"role": "tool", "content": content})
        # A message the user sent mid-turn reached both sides with these results: a judge has to
        # see it to tell a change of course the user asked for from one the agent chose.
        messages.extend({"role": "user", "content": m["content"]} for m in replayed if m["role"] == "user")
    if wf.answer is not None:
        messages.append({"role": "assistant", "content": wf.answer})
    return messages


def workflow_text(row: dict[str, Any], wf: Workflow) -> str:
    """Plain text the discriminator reads: the chat template's rendering without system prompt or tool list
    (both are the same for the two sides, so they would only cost tokens)."""
    from trainer.chat_template import BEGIN_OF_TEXT, render

    text = render(workflow_messages(row, wf))
    return text[len(BEGIN_OF_TEXT):] if text.startswith(BEGIN_OF_TEXT) else text


def workflow_transcript(row: dict[str, Any], wf: Workflow, result_chars: int = 400) -> str:
    """A readable transcript for people and LLM judges: identical layout for teacher and student."""
    lines = []
    for m in workflow_messages(row, wf)[1:]:
        if m["role"] == "assistant":
            if m.get("content"):
                lines.append(m["content"])
            for tc in m.get("tool_calls") or []:
                lines.append(f"→ {tc['function']['name']} {tc['function']['arguments']}")
        else:
            text = m["content"]
            if len(text) > result_chars:
                text = text[:result_chars] + " …"
            lines.append("  " + text.replace("\n", "\n  "))
    if wf.answer is None:
        lines.append("(no final answer)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The deterministic similarity


@dataclass
class Breakdown:
    terms: dict[str, float]
    notes: dict[str, str]
    weights: dict[str, float]

    @property
    def total(self) -> float:
        w = sum(self.weights.get(t, 0.0) for t in self.terms)
        return sum(self.weights.get(t, 0.0) * v for t, v in self.terms.items()) / w if w else 0.0

    def explain(self) -> str:
        lines = [f"similarity {self.total:.3f} = weighted mean of:"]
        for t in TERMS:
            lines.append(f"  {t:<12} {self.terms[t]:.3f}  (weight {self.weights.get(t, 0):g})  {self.notes[t]}")
        return "\n".join(lines)


def _multiset_f1(a: Sequence[str], b: Sequence[str]) -> float:
    if not a and not b:
        return 1.0
    common = sum((Counter(a) & Counter(b)).values())
    if not common:
        return 0.0
    p, r = common / len(a), common / len(b)
    return 2 * p * r / (p + r)


def _ratio(a: float, b: float) -> float:
    return 1.0 if a == b == 0 else min(a, b) / max(a, b)


def _text_sim(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.strip(), b.strip(), autojunk=False).ratio()


def normalize_weights(weights: Optional[dict[str, float]]) -> dict[str, float]:
    merged = dict(DEFAULT_WEIGHTS)
    for k, v in (weights or {}).items():
        if k not in TERMS:
            raise ConfigError(f"reward.weights: unknown term '{k}'; terms are {', '.join(TERMS)}")
        if v < 0:
            raise ConfigError(f"reward.weights.{k} must be >= 0, got {v}")
        merged[k] = float(v)
    if not any(merged.values()):
        raise ConfigError("reward.weights are all 0: give at least one term a weight")
    return merged


def similarity(student: Workflow, teacher: Workflow, tools: Any = None, weights: Optional[dict[str, float]] = None) -> Breakdown:
    """Score `student` against `teacher` term by term (see the module docstring)."""
    weights = normalize_weights(weights)
    s_seq, t_seq = student.sequence, teacher.sequence
    terms: dict[str, float] = {}
    notes: dict[str, str] = {}

    terms["tool_choice"] = _multiset_f1(s_seq, t_seq)
    missing = list((Counter(t_seq) - Counter(s_seq)).elements())
    extra = list((Counter(s_seq) - Counter(t_seq)).elements())
    notes["tool_choice"] = "same tools" if not missing and not extra else (
        ", ".join(filter(None, [missing and f"missing {missing}", extra and f"extra {extra}"]))
    )

    terms["order"] = sequence_similarity(s_seq, t_seq)
    notes["order"] = "same order" if s_seq == t_seq else f"{s_seq} vs teacher {t_seq}"

    matches: list[float] = []
    for i, step in enumerate(student.steps):
        if i >= len(teacher.steps):
            break
        unused = list(teacher.steps[i].calls)
        for c in step.calls:
            j = next((k for k, u in enumerate(unused) if u.name == c.name), None)
            if j is not None:
                matches.append(argument_match(c.arguments, unused.pop(j).arguments))
    if not t_seq:
        terms["arguments"] = 1.0 if not s_seq else 0.0
        notes["arguments"] = "no calls to compare" if not s_seq else "teacher called no tools"
    else:
        # Unmatched teacher calls count as 0: skipping a call can't raise the argument score.
        terms["arguments"] = sum(matches) / max(len(t_seq), len(matches)) if matches else 0.0
        notes["arguments"] = f"{len(matches)} call(s) matched by tool and step, mean key match {sum(matches) / len(matches):.2f}" if matches else "no call matched the teacher's by tool and step"

    schemas = tool_schemas(tools) if tools is not None else None
    calls = student.calls
    if not calls:
        terms["validity"] = 1.0
        notes["validity"] = "no calls"
    else:
        if schemas:
            ok = [call_is_valid(c.name or "", c.arguments, c.valid_json, schemas) for c in calls]
        else:  # no schemas to check against: well-formed JSON with a name
            ok = [bool(c.valid_json and c.name) for c in calls]
        terms["validity"] = sum(ok) / len(ok)
        notes["validity"] = f"{sum(ok)}/{len(ok)} calls valid"

    parts, why = [], []
    if teacher.narration or student.narration:
        n = _text_sim(student.narration, teacher.narration)
        parts.append(n)
        why.append(f"narration {n:.2f}")
    if teacher.answer is not None:
        a = _text_sim(student.answer, teacher.answer) if student.answer is not None else 0.0
        parts.append(a)
        why.append(f"answer {a:.2f}" if student.answer is not None else "no final answer")
    elif student.answer is not None:
        parts.append(0.0)
        why.append("answered where the teacher called a tool")
    terms["style"] = sum(parts) / len(parts) if parts else 1.0
    notes["style"] = ", ".join(why) or "nothing written on either side"

    steps_ratio = _ratio(len(student.steps) + (student.answer is not None), len(teacher.steps) + (teacher.answer is not None))
    chars_ratio = _ratio(student.chars(), teacher.chars())
    terms["length"] = (steps_ratio + chars_ratio) / 2
    notes["length"] = f"{len(student.steps)} vs {len(teacher.steps)} steps, {student.chars()} vs {teacher.chars()} chars"
    return Breakdown(terms=terms, notes=notes, weights=weights)


def combine(sim: float, p_teacher: Optional[float], discriminator_weight: float) -> float:
    """The reward RL uses: similarity, mixed with the discriminator's p(teacher) when there is one."""
    if p_teacher is None or discriminator_weight <= 0:
        return sim
    return (1 - discriminator_weight) * sim + discriminator_weight * p_teacher


# ----------------------------------------------------------------------------------------------
# Rollouts and scoring a student


def judged_rollouts(cfg, model_path: str, rows: list[dict[str, Any]]) -> list[Workflow]:
    """The student's workflows decoded as it is judged (reward.prose_temperature, prose_top_p):
    the rollouts the discriminator learns from and the ones `trainer ab-test` shows."""
    import torch

    r = cfg.reward
    if r.prose_temperature < 0 or not 0 < r.prose_top_p <= 1:
        raise ConfigError(f"reward.prose_temperature must be >= 0 and reward.prose_top_p in (0, 1]; got "
                          f"{r.prose_temperature} and {r.prose_top_p}")
    if r.prose_temperature > 0:
        torch.manual_seed(cfg.run.seed)  # the same draws on a rerun
    return rollouts(model_path, rows, r.max_new_tokens, r.max_turns, r.batch_size, temperature=r.prose_temperature,
                    top_p=r.prose_top_p, greedy_calls=True)


def rollouts(model_path: str, rows: list[dict[str, Any]], max_new_tokens: int = 256, max_turns: int = 16,
             batch_size: int = 16, policy=None, temperature: float = 0.0, top_p: float = 1.0,
             greedy_calls: bool = False) -> list[Workflow]:
    """The student's workflow on each row: trainer/evaluate.py's step-by-step replay rollouts
    (greedy, or sampled at `temperature` within `top_p`; with `greedy_calls` the calls stay greedy)."""
    from trainer.evaluate import ModelPolicy

    policy = policy or ModelPolicy(str(model_path), max_new_tokens, max_turns, temperature=temperature, top_p=top_p,
                                   greedy_calls=greedy_calls)
    out: list[Workflow] = []
    for start in range(0, len(rows), batch_size):
        out.extend(episode_workflow(ep) for ep in policy.run_batch(rows[start:start + batch_size]))
    return out


def score_workflows(rows: list[dict[str, Any]], student: list[Workflow], weights: Optional[dict[str, float]] = None,
                    discriminator=None, discriminator_weight: float = 0.0) -> dict[str, Any]:
    """Per-example breakdowns and their means; with a discriminator, p(teacher) and the combined reward."""
    teachers = [teacher_workflow(r) for r in rows]
    breakdowns = [similarity(s, t, r.get("tools"), weights) for s, t, r in zip(student, teachers, rows)]
    p_student = p_teacher_side = None
    if discriminator is not None:
        p_student = discriminator.p_teacher([workflow_text(r, s) for r, s in zip(rows, student)])
        p_teacher_side = discriminator.p_teacher([workflow_text(r, t) for r, t in zip(rows, teachers)])
    examples = []
    for i, (row, b) in enumerate(zip(rows, breakdowns)):
        ex = {
            "trace_id": row.get("trace_id"),
            "prompt": row.get("prompt"),
            "similarity": b.total,
            "terms": b.terms,
            "notes": b.notes,
            "teacher": teachers[i].sequence,
            "student": student[i].sequence,
            "student_workflow": student[i].to_json(),
        }
        if p_student is not None:
            ex["p_teacher"] = p_student[i]
            ex["p_teacher_of_teacher"] = p_teacher_side[i]
            ex["reward"] = combine(b.total, p_student[i], discriminator_weight)
        else:
            ex["reward"] = b.total
        examples.append(ex)
    n = max(len(examples), 1)
    summary = {
        "n": len(examples),
        "similarity": sum(e["similarity"] for e in examples) / n,
        "reward": sum(e["reward"] for e in examples) / n,
        "terms": {t: sum(e["terms"][t] for e in examples) / n for t in TERMS},
    }
    if p_student is not None:
        summary["p_teacher"] = sum(p_student) / n
        summary["discriminator_pair_accuracy"] = sum(pt > ps for pt, ps in zip(p_teacher_side, p_student)) / n
    return {"summary": summary, "weights": normalize_weights(weights), "examples": examples}


def mean_similarity(model_path: str, rows: list[dict[str, Any]], weights=None, **rollout_kwargs) -> float:
    """Mean workflow similarity of a model's rollouts on rows: the number RL is judged by."""
    return score_workflows(rows, rollouts(model_path, rows, **rollout_kwargs), weights)["summary"]["similarity"]


def _read_rows(path: Path, limit: int = 0) -> list[dict[str, Any]]:
    with path.open() as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return rows[:limit] if limit else rows


def markdown_report(report: dict[str, Any], title: str = "Behavioural reward") -> str:
    s = report["summary"]
    lines = [f"# {title} ({s['n']} examples)", "", f"Mean similarity: {s['similarity']:.3f}; mean reward: {s['reward']:.3f}"]
    if "p_teacher" in s:
        lines.append(f"Discriminator: mean p(teacher) of the student {s['p_teacher']:.3f}; "
                     f"teacher scored above student on {s['discriminator_pair_accuracy']:.0%} of prompts")
    lines += ["", "| term | weight | mean |", "| --- | ---: | ---: |"]
    for t in TERMS:
        lines.append(f"| {t} | {report['weights'][t]:g} | {s['terms'][t]:.3f} |")
    worst = sorted(report["examples"], key=lambda e: e["reward"])[:5]
    if worst:
        lines += ["", "## Lowest rewards", ""]
        for e in worst:
            low = min(TERMS, key=lambda t: e["terms"][t])
            lines.append(f"- {e['reward']:.3f} `{(e['prompt'] or '')[:80]}`: weakest term {low} ({e['notes'][low]})")
    return "\n".join(lines) + "\n"


def _looks_like_hub_id(name: str) -> bool:
    import re

    return re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None and not name.startswith((".", "/"))


def _default_paths(cfg: UnderstudyConfig) -> dict[str, Path]:
    out = Path(cfg.run.out)
    return {
        "model": Path(cfg.reward.model or Path(cfg.sft.output_dir or out / "sft") / "final"),
        "data": Path(cfg.reward.data_dir or cfg.sft.data_dir or out / "dataset"),
        "out": Path(cfg.reward.output_dir or out / "reward"),
    }


def run_reward(cfg: UnderstudyConfig, train_discriminator: bool = False, log: Callable[[str], None] = click.echo) -> dict[str, Any]:
    """Score the student on the held-out split; (re)train the discriminator first when asked."""
    from trainer.discriminator import Discriminator, discriminator_dir, train_discriminator_for

    r = cfg.reward
    paths = _default_paths(cfg)
    split_file = paths["data"] / f"{r.split}.jsonl"
    if not split_file.exists():
        raise ConfigError(f"no {r.split} split at {split_file}: run `trainer build-dataset` or set reward.data_dir")
    if paths["model"].exists() or not _looks_like_hub_id(str(paths["model"])):
        from trainer.sft import check_student

        check_student(paths["model"], "reward.model", "run `trainer sft` or set reward.model")
    paths["out"].mkdir(parents=True, exist_ok=True)
    disc_dir = discriminator_dir(cfg)
    if train_discriminator:
        train_discriminator_for(cfg, str(paths["model"]), paths["data"], disc_dir, log=log)
    disc = Discriminator.load(disc_dir) if (disc_dir / "calibration.json").exists() else None
    rows = _read_rows(split_file, r.max_examples)
    log(f"Rolling out {paths['model']} on {len(rows)} {r.split} examples (teacher observations replayed) …")
    student = rollouts(str(paths["model"]), rows, r.max_new_tokens, r.max_turns, r.batch_size)
    report = score_workflows(rows, student, r.weights, disc, r.discriminator_weight)
    report.update(model=str(paths["model"]), split=r.split, discriminator=str(disc_dir) if disc else None)
    (paths["out"] / "reward.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (paths["out"] / "reward.md").write_text(markdown_report(report))
    log(markdown_report(report))
    return report


@click.command("reward", context_settings=STAGE_CONTEXT)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="understudy.toml or YAML.")
@click.option("--model", "model_path", help="The student (reward.model); default {sft.output_dir}/final.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), help="Dataset directory (reward.data_dir).")
@click.option("--out", "output_dir", type=click.Path(file_okay=False), help="Where reward.json/reward.md go.")
@click.option("--train-discriminator", is_flag=True, help="(Re)train the discriminator on this student's rollouts first.")
@click.pass_context
def command(ctx, config_path, model_path, data_dir, output_dir, train_discriminator):
    """Score the student's workflows against the teacher's: per-term similarity, plus the discriminator.

    Terms: tool_choice, order, arguments, validity, style, length (weights: reward.weights).
    With a trained discriminator ({run.out}/discriminator) the combined reward mixes in its
    p(teacher) with weight reward.discriminator_weight. Any config value can be set as
    --SECTION.KEY VALUE or -o SECTION.KEY=VALUE.
    """
    cfg = resolve_cli_config(
        config_path, ctx.args,
        [("reward.model", model_path), ("reward.data_dir", data_dir), ("reward.output_dir", output_dir)],
    )
    try:
        run_reward(cfg, train_discriminator=train_discriminator)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
