"""Student-centred data (`rl.algorithm = "student_centred"`): SFT on the student's own rollouts, up to
where it first leaves the teacher's workflow, with the teacher's step as the target.

The idea is SCoRe's (arXiv 2509.14257) and, further back, DAgger's: SFT only ever shows the student
the teacher's own history, but a served student reads its *own* history (its narration, its way of
writing calls), and its mistakes happen in states the teacher never visited. So:

1. Roll the student out greedily on the train split, in the replay environment of
   trainer/evaluate.py (batched; each of its tool calls is answered with the observation the
   teacher recorded at that step), but keeping the student's own turns in its history (evaluation
   appends the teacher's turn instead).
2. Find each episode's first divergence (`turn_divergence`, the reward's notion of what matters):
   another tool or another set/order of tools, a call whose arguments differ from the teacher's,
   an invalid call, an answer where the teacher called a tool or a call where the teacher answered,
   or a final answer whose text is far from the teacher's (`rl.sc_answer_similarity`). Narration
   wording alone is not a divergence. The episode stops there (what follows would be replayed
   observations of calls the student did not make).
3. One example per divergence: prompt = the student's own history up to that step (system prompt,
   tools, prompt, its earlier turns with the recorded observations), completion = the teacher's
   turn at that step. Mixed with teacher examples (teacher prefix → teacher turn, as SFT saw them)
   so that they make up `rl.sc_teacher_share` of the data.
4. Continue SFT from the student with TRL's SFTTrainer on these prompt/completion pairs: the loss is
   on the target turn only (completion-only loss), the rest is the same trainer `trainer sft` uses.
   `rl.sc_rounds` > 1 repeats 1-4 from the new student (DAgger's aggregation: the earlier rounds'
   divergences are kept).

`rl.sc_samples` adds that many sampled rollouts (at `rl.temperature`) per train row to the greedy one:
more, different mistakes per prompt. Each round's rollouts and examples are written to
`{rl.output_dir}/round-N/` (divergences.jsonl: where and why each episode diverged).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Callable, Optional

from trainer.config import ConfigError, UnderstudyConfig


# ----------------------------------------------------------------------------------------------
# Where a turn leaves the teacher's workflow


def turn_divergence(student_text: str, teacher_message: dict[str, Any], tools: Any = None,
                    answer_similarity: float = 0.5) -> Optional[str]:
    """Why the student's turn diverges from the teacher's turn at the same point, or None when it
    does what the teacher did (same tools in the same order, the same arguments, valid calls; or an
    answer close enough to the teacher's answer). Narration wording does not count."""
    from trainer.chat_template import parse_assistant_output
    from trainer.evaluate import call_is_valid, call_name, tool_schemas
    from trainer.reward import _args, _text_sim

    parsed = parse_assistant_output(student_text)
    narration, calls = parsed.narration, parsed.tool_calls
    t_calls = [(tc["function"]["name"], _args(tc["function"].get("arguments"))) for tc in teacher_message.get("tool_calls") or []]
    if not t_calls:
        if calls:
            return f"called {[call_name(c) for c in calls]} where the teacher answered"
        sim = _text_sim(narration, (teacher_message.get("content") or "").strip())
        return f"answer similarity {sim:.2f} < {answer_similarity:g}" if sim < answer_similarity else None
    if not calls:
        return f"answered where the teacher called {[n for n, _ in t_calls]}"
    names = [call_name(c) for c in calls]  # a broken call still names its tool (as the metrics read it)
    if names != [n for n, _ in t_calls]:
        return f"called {names} where the teacher called {[n for n, _ in t_calls]}"
    schemas = tool_schemas(tools) if tools is not None else {}
    for c, (name, args) in zip(calls, t_calls):
        if not c.valid_json or (schemas and not call_is_valid(c.name or "", c.arguments, c.valid_json, schemas)):
            return f"invalid {name} call"
        if not isinstance(c.arguments, dict) or c.arguments != args:
            differ = sorted(k for k in set(args) | set(c.arguments or {}) if args.get(k) != (c.arguments or {}).get(k))
            return f"{name} arguments differ: {differ}"
    return None


def student_message(text: str, teacher_message: dict[str, Any]) -> dict[str, Any]:
    """The student's turn as the assistant message its history carries (as `trainer serve` would get
    it back from a client): its own narration and calls, the teacher's call ids so that the replayed
    tool results still answer them."""
    from trainer.chat_template import dump_arguments
    from trainer.reward import parse_turn

    narration, calls = parse_turn(text)
    msg: dict[str, Any] = {"role": "assistant", "content": narration}
    if calls:
        ids = [tc.get("id") for tc in teacher_message.get("tool_calls") or []]
        msg["tool_calls"] = [
            {"id": ids[i] if i < len(ids) else f"call_{i}", "type": "function",
             "function": {"name": c.name or "?", "arguments": dump_arguments(c.arguments)}}
            for i, c in enumerate(calls)
        ]
    return msg


# ----------------------------------------------------------------------------------------------
# Rollouts in the student's own history, to the first divergence


def divergence_rollouts(policy, rows: list[dict[str, Any]], batch_size: int = 16,
                        answer_similarity: float = 0.5) -> list[dict[str, Any]]:
    """For each row: the student's episode in its own history, up to its first divergence.

    `policy` is a trainer.evaluate.ModelPolicy (greedy, or sampled with a temperature). Returns one
    record per row: trace_id, turn (the step index of the divergence, or None), reason, prompt (the
    student's history before that step, a list of messages), target (the teacher's message there),
    tools, and the student's raw turns.
    """
    from trainer.evaluate import teacher_steps

    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        plans = [teacher_steps(r["messages"]) for r in chunk]
        histories = [list(context) for context, _ in plans]
        records = [{"trace_id": r.get("trace_id"), "turn": None, "reason": None, "raw": []} for r in chunk]
        active = [i for i, (_, steps) in enumerate(plans) if steps]
        t = 0
        while active and t < policy.max_turns:
            texts = policy.generate([(histories[i], chunk[i].get("tools")) for i in active])
            still = []
            for i, text in zip(active, texts):
                step = plans[i][1][t]
                teacher_msg = step.replay[0]
                records[i]["raw"].append(text)
                reason = turn_divergence(text, teacher_msg, chunk[i].get("tools"), answer_similarity)
                if reason is not None:
                    records[i].update(turn=t, reason=reason, prompt=list(histories[i]), target=teacher_msg,
                                      tools=chunk[i].get("tools"))
                    continue
                if not teacher_msg.get("tool_calls"):
                    continue  # answered as the teacher did: the episode is over, no divergence
                histories[i].append(student_message(text, teacher_msg))
                histories[i].extend(step.replay[1:])  # the observations the teacher recorded
                if t + 1 < len(plans[i][1]):
                    still.append(i)
            active = still
            t += 1
        out.extend(records)
    return out


def teacher_examples(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every teacher turn as a prompt/completion pair: the teacher's prefix → the teacher's turn."""
    from trainer.evaluate import teacher_steps

    out = []
    for r in rows:
        context, steps = teacher_steps(r["messages"])
        history = list(context)
        for t, step in enumerate(steps):
            out.append({"prompt": list(history), "completion": [step.replay[0]], "tools": r.get("tools"),
                        "trace_id": r.get("trace_id"), "turn": t, "source": "teacher"})
            history.extend(step.replay)
    return out


def write_divergences(path: Path, found: list[dict[str, Any]]) -> None:
    """One line per rollout: where (`turn`, None when it never diverged) and why it left the teacher,
    with the student's raw turn there, for reading a round's failures afterwards."""
    path.write_text("".join(json.dumps({k: d.get(k) for k in ("trace_id", "turn", "reason", "raw")}) + "\n"
                            for d in found))


def build_examples(divergences: list[dict[str, Any]], rows: list[dict[str, Any]], teacher_share: float,
                   seed: int = 0) -> list[dict[str, Any]]:
    """Student-centred examples (one per divergence) plus teacher examples drawn at random so that
    they are `teacher_share` of the whole (all of them when there are too few), shuffled."""
    if not 0 <= teacher_share < 1:
        raise ConfigError(f"rl.sc_teacher_share must be in [0, 1), got {teacher_share}")
    student = [
        {"prompt": d["prompt"], "completion": [d["target"]], "tools": d.get("tools"), "trace_id": d.get("trace_id"),
         "turn": d["turn"], "source": "student"}
        for d in divergences if d.get("turn") is not None
    ]
    rng = random.Random(seed)
    pool = teacher_examples(rows)
    want = round(len(student) * teacher_share / (1 - teacher_share)) if student else 0
    mixed = student + (rng.sample(pool, want) if want < len(pool) else pool)
    rng.shuffle(mixed)
    return mixed


def _as_dataset_row(ex: dict[str, Any]) -> dict[str, Any]:
    """What SFTTrainer reads: conversational prompt/completion, tools as JSON (one column type for all rows)."""
    def clean(m: dict[str, Any]) -> dict[str, Any]:
        m = {k: v for k, v in m.items() if v is not None}
        if m.get("tool_calls"):
            m["tool_calls"] = [{"id": tc.get("id") or "", "type": "function",
                                "function": {"name": tc["function"]["name"],
                                             "arguments": tc["function"]["arguments"] if isinstance(tc["function"]["arguments"], str)
                                             else json.dumps(tc["function"]["arguments"])}} for tc in m["tool_calls"]]
        return m

    tools = ex.get("tools")
    return {"prompt": [clean(m) for m in ex["prompt"]], "completion": [clean(m) for m in ex["completion"]],
            "tools": tools if isinstance(tools, str) else json.dumps(tools or [])}


# ----------------------------------------------------------------------------------------------
# Training


def continue_sft(cfg: UnderstudyConfig, model_path: Path, examples: list[dict[str, Any]], out: Path,
                 max_steps: int, log: Callable[[str], None], resume_from: Optional[Path] = None) -> dict[str, Any]:
    """SFT from `model_path` on prompt/completion examples, loss on the completion (the target turn) only."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from trainer.chat_template import apply_chat_template
    from trainer.progress import ProgressLine, SaveConfigBesideCheckpoint

    rl = cfg.rl
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    apply_chat_template(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    cuda = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(out / "checkpoints"),
        max_steps=max_steps,
        learning_rate=rl.sc_learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=rl.sc_warmup_steps,
        per_device_train_batch_size=rl.sc_batch_size,
        gradient_accumulation_steps=1,
        max_length=cfg.sft.max_length,
        pad_to_multiple_of=cfg.sft.pad_to_multiple_of or None,  # recurring shapes: trainer/allocator.py
        completion_only_loss=True,
        assistant_only_loss=False,
        packing=False,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        save_strategy="steps",
        save_steps=rl.save_steps,
        save_total_limit=rl.save_total_limit,
        logging_steps=rl.logging_steps,
        logging_first_step=True,
        seed=rl.seed,
        data_seed=rl.seed,
        report_to=[] if rl.report_to == "none" else [rl.report_to],
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(
        model=model, args=args, processing_class=tokenizer,
        train_dataset=Dataset.from_list([_as_dataset_row(e) for e in examples]),
        callbacks=[SaveConfigBesideCheckpoint(cfg), ProgressLine(log, "loss", ["learning_rate", "epoch"])],
    )
    trainer.remove_callback(PrinterCallback)
    t0 = time.monotonic()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    runtime = time.monotonic() - t0
    final = out / "final"
    trainer.model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    history = list(trainer.state.log_history)
    losses = [h["loss"] for h in history if "loss" in h]
    return {"final": final, "global_step": trainer.state.global_step, "train_runtime_s": round(runtime, 2),
            "train_loss": result.training_loss, "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None, "history": history}


def train_student_centred(cfg: UnderstudyConfig, model_path: Path, train_rows: list[dict[str, Any]], out: Path,
                          log: Callable[[str], None], resume: bool = False) -> dict[str, Any]:
    """Rounds of (roll out → divergences → examples → continue SFT); returns what rl_summary.json records."""
    import torch

    from trainer.evaluate import ModelPolicy
    from trainer.sft import latest_checkpoint

    rl, r = cfg.rl, cfg.reward
    rounds = []
    student = Path(model_path)
    aggregated: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    total_steps = 0
    t_all = time.monotonic()
    for k in range(rl.sc_rounds):
        rdir = out / f"round-{k + 1}" if rl.sc_rounds > 1 else out
        rdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        found = []
        greedy = ModelPolicy(str(student), r.max_new_tokens, r.max_turns)
        found += divergence_rollouts(greedy, train_rows, r.batch_size, rl.sc_answer_similarity)
        if rl.sc_samples:
            sampled = greedy.sampling(rl.temperature)
            torch.manual_seed(rl.seed + k)
            repeated = [row for row in train_rows for _ in range(rl.sc_samples)]
            found += divergence_rollouts(sampled, repeated, r.batch_size, rl.sc_answer_similarity)
        del greedy
        rollout_s = time.monotonic() - t0
        diverged = [d for d in found if d["turn"] is not None]
        write_divergences(rdir / "divergences.jsonl", found)
        aggregated += diverged
        examples = build_examples(aggregated, train_rows, rl.sc_teacher_share, seed=rl.seed + k)
        (rdir / "sc_examples.jsonl").write_text("".join(json.dumps(e, default=str) + "\n" for e in examples))
        reasons: dict[str, int] = {}
        for d in diverged:
            key = d["reason"].split(":")[0].split(" where")[0].split(" <")[0]
            reasons[key] = reasons.get(key, 0) + 1
        log(f"[rl] student-centred round {k + 1}/{rl.sc_rounds}: {len(diverged)} of {len(found)} rollouts diverge "
            f"from the teacher ({rollout_s:.0f}s); {len(examples)} examples "
            f"({sum(e['source'] == 'student' for e in examples)} at the student's divergences, the rest the teacher's)")
        if not examples:
            log("[rl] the student follows the teacher on every train rollout: nothing to train on")
            rounds.append({"round": k + 1, "rollouts": len(found), "diverged": 0, "examples": 0})
            break
        steps = max(1, rl.max_steps // rl.sc_rounds)
        resume_from = latest_checkpoint(rdir / "checkpoints") if resume else None
        if resume_from:
            log(f"[rl] resuming from {resume_from}")
        trained = continue_sft(cfg, student, examples, rdir, steps, log, resume_from)
        history += trained.pop("history")
        total_steps += trained["global_step"]
        student = trained["final"]
        rounds.append({"round": k + 1, "rollouts": len(found), "diverged": len(diverged), "divergence_reasons": reasons,
                       "examples": len(examples), "rollout_s": round(rollout_s, 1), **{k2: v for k2, v in trained.items() if k2 != "final"}})
    final = out / "final"
    if student != final and student != Path(model_path):
        import shutil

        if final.exists():
            shutil.rmtree(final)
        shutil.copytree(student, final)
    elif student == Path(model_path):
        import shutil

        shutil.copytree(student, final, dirs_exist_ok=True)
    return {"final": str(final), "global_step": total_steps, "rounds": rounds, "log_history": history,
            "train_runtime_s": round(time.monotonic() - t_all, 2)}
