"""trainer/student_centred.py: the first-divergence finder, rollouts in the student's own history, the examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.student_world import student_world  # noqa: F401  (a fixture)
from trainer.config import ConfigError


def _rows(n=4):
    from trainer.dataset import DatasetConfig, trace_to_example
    from trainer.teacher_corpus import generate_corpus

    return [trace_to_example(t, DatasetConfig()) for t in generate_corpus(n, seed=2)]


def _assistant(row):
    return [m for m in row["messages"] if m["role"] == "assistant"]


def _as_text(msg, args_override=None, narration=None):
    """A teacher assistant message written the way the student writes a turn."""
    parts = [msg.get("content") if narration is None else narration]
    for tc in msg.get("tool_calls") or []:
        args = json.loads(tc["function"]["arguments"]) if isinstance(tc["function"]["arguments"], str) else tc["function"]["arguments"]
        if args_override:
            args = {**args, **args_override}
        parts.append(f'<tool_call>{json.dumps({"name": tc["function"]["name"], "arguments": args})}</tool_call>')
    return "\n".join(p for p in parts if p)


def test_divergence_is_the_rewards_notion_not_the_wording():
    from trainer.student_centred import turn_divergence

    row = _rows(1)[0]
    call, answer = _assistant(row)[0], _assistant(row)[-1]
    assert call.get("tool_calls") and not answer.get("tool_calls")
    tools = row["tools"]
    assert turn_divergence(_as_text(call), call, tools) is None
    assert turn_divergence(_as_text(call, narration="Other words, same call."), call, tools) is None
    name = call["tool_calls"][0]["function"]["name"]
    assert "arguments differ" in turn_divergence(_as_text(call, {"zzz": 1}), call, tools)
    other = '<tool_call>{"name": "NoSuchTool", "arguments": {}}</tool_call>'
    assert "where the teacher called" in turn_divergence(other, call, tools)
    assert "answered where the teacher called" in turn_divergence("All done.", call, tools)
    assert f"invalid {name} call" == turn_divergence(f'<tool_call>{{"name": "{name}", "arguments": </tool_call>', call, tools)
    assert "where the teacher answered" in turn_divergence(_as_text(call), answer, tools)
    assert turn_divergence(answer["content"], answer, tools) is None
    assert "answer similarity" in turn_divergence("no.", answer, tools, answer_similarity=0.5)
    assert turn_divergence("no.", answer, tools, answer_similarity=0.0) is None


class ScriptedPolicy:
    """Stands for ModelPolicy: answers each conversation from a script keyed by the row's prompt, and
    records the histories it was shown."""

    max_turns = 8

    def __init__(self, script):
        self.script, self.seen = script, []

    def generate(self, conversations):
        out = []
        for messages, _tools in conversations:
            self.seen.append(list(messages))
            user = next(m["content"] for m in messages if m["role"] == "user")
            turn = sum(m["role"] == "assistant" for m in messages)
            # (The user turn is the row's prompt, after the working directory it names.)
            out.append(next(turns for prompt, turns in self.script.items() if user.endswith(prompt))[turn])
        return out


def test_rollouts_keep_the_students_own_history_and_stop_at_the_first_divergence():
    from trainer.student_centred import build_examples, divergence_rollouts

    rows = [r for r in _rows(6) if len(_assistant(r)) >= 3][:2]
    assert len(rows) == 2
    good, bad = rows
    # good: every turn right (own narration); bad: first turn right, second turn with a wrong argument.
    script = {
        good["prompt"]: [_as_text(m, narration=f"my step {i}") if m.get("tool_calls") else m["content"] for i, m in enumerate(_assistant(good))],
        bad["prompt"]: [_as_text(_assistant(bad)[0], narration="my own words"), _as_text(_assistant(bad)[1], {"zzz": 1}), "unused"],
    }
    policy = ScriptedPolicy(script)
    found = divergence_rollouts(policy, rows, batch_size=2)
    assert found[0]["turn"] is None and found[0]["reason"] is None
    d = found[1]
    assert d["turn"] == 1 and "arguments differ" in d["reason"] and len(d["raw"]) == 2
    # The prompt is the student's own history: its narration and calls, then the teacher's recorded result.
    first_teacher = _assistant(bad)[0]
    own = [m for m in d["prompt"] if m["role"] == "assistant"]
    assert len(own) == 1 and own[0]["content"] == "my own words"
    assert [tc["function"]["name"] for tc in own[0]["tool_calls"]] == [tc["function"]["name"] for tc in first_teacher["tool_calls"]]
    i = bad["messages"].index(first_teacher)
    recorded = [m for m in bad["messages"][i + 1:] if m["role"] == "tool"][: len(first_teacher["tool_calls"])]
    assert d["prompt"][-len(recorded):] == recorded
    assert d["target"] is _assistant(bad)[1] or d["target"] == _assistant(bad)[1]
    # The good episode ran to the end on its own history too.
    assert any("my step 0" == m.get("content") for h in policy.seen for m in h)

    examples = build_examples(found, rows, teacher_share=0.5, seed=0)
    student = [e for e in examples if e["source"] == "student"]
    assert len(student) == 1 and len(examples) == 2
    assert student[0]["completion"] == [_assistant(bad)[1]] and student[0]["prompt"] == d["prompt"]
    teacher = [e for e in examples if e["source"] == "teacher"][0]
    row = next(r for r in rows if r["trace_id"] == teacher["trace_id"])
    assert teacher["completion"][0] == _assistant(row)[teacher["turn"]]
    assert teacher["prompt"] == row["messages"][: row["messages"].index(teacher["completion"][0])]
    assert len(build_examples(found, rows, teacher_share=0.0)) == 1
    assert len(build_examples(found, rows, teacher_share=0.75)) == 4
    with pytest.raises(ConfigError, match="rl.sc_teacher_share"):
        build_examples(found, rows, teacher_share=1.0)


def test_dataset_rows_render_with_the_loss_on_the_target_turn_only():
    """What SFTTrainer gets: the prompt rendered as the student will see it, the completion the teacher's turn."""
    from trainer.chat_template import GENERATION_PROMPT, render
    from trainer.student_centred import _as_dataset_row, teacher_examples

    row = _rows(1)[0]
    ex = _as_dataset_row(teacher_examples([row])[1])
    tools = json.loads(ex["tools"])
    prompt = render(ex["prompt"], tools, add_generation_prompt=True)
    whole = render(ex["prompt"] + ex["completion"], tools)
    assert prompt.endswith(GENERATION_PROMPT) and whole.startswith(prompt)
    assert json.loads(ex["completion"][0]["tool_calls"][0]["function"]["arguments"]) is not None


def test_bench_compare_table_puts_sft_and_each_algorithm_side_by_side():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_rl", Path(__file__).parent.parent / "benchmarks" / "bench_rl.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    run = lambda algorithm, seed, greedy, sampled: {  # noqa: E731
        "algorithm": algorithm, "seed": seed, "train_runtime_s": 10.0 + seed,
        "before": {"greedy": 0.6, "sampled": 0.5}, "after": {"greedy": greedy, "sampled": sampled}}
    table = bench.comparison_table([run("student_centred", 0, 0.62, 0.5), run("student_centred", 1, 0.64, None),
                                    run("grpo", 0, 0.58, 0.45)])
    lines = table.splitlines()
    assert lines[2] == "| after SFT | — | 0.600 | 0.500 ± 0.000 | — | — |"
    assert lines[3] == "| after student_centred | 0, 1 | 0.630 ± 0.014 | 0.500 ± 0.000 | +0.030 ± 0.014 | 10 ± 1 |"
    assert lines[4].startswith("| after grpo | 0 | 0.580 ± 0.000 | 0.450 ± 0.000 | -0.020 ± 0.000 |")
    assert set(bench.ALGORITHMS) == {"grpo", "student_centred", "teacher_sft"}


def test_trainer_run_goes_on_with_the_sft_student_when_rl_made_it_worse(student_world, tmp_path):
    """rl.select_split: an RL stage that wrecks the student (learning rate 1.0) is measured on the
    validation split and the SFT student goes on; rl/final stays for inspection."""
    import shutil

    from trainer.config import load_config
    from trainer.post_sft import run_after_eval

    world = student_world
    out = tmp_path / "run"
    shutil.copytree(world.data_dir, out / "dataset")
    overrides = [
        ("run.out", str(out)), ("rl.enabled", True), ("rl.algorithm", "student_centred"),
        ("reward.max_new_tokens", 64), ("reward.max_turns", 3), ("rl.max_steps", 3), ("rl.eval_examples", 0),
        ("rl.sc_batch_size", 4), ("rl.sc_learning_rate", 1.0), ("rl.save_steps", 3), ("rl.logging_steps", 1),
        ("rl.select_examples", 6),
    ]
    lines: list[str] = []
    student = run_after_eval(load_config(overrides=overrides), world.sft_model, out / "dataset", "sft-fp", out, lines.append)
    summary = json.loads((out / "rl" / "rl_summary.json").read_text())
    assert summary["selection"]["after"] < summary["selection"]["before"], summary["selection"]
    assert summary["kept"] == "start" and student == Path(world.sft_model)
    assert (out / "rl" / "final" / "config.json").exists()
    assert any("going on with the student RL started from" in line for line in lines)
    again: list[str] = []
    assert run_after_eval(load_config(overrides=overrides), world.sft_model, out / "dataset", "sft-fp", out,
                          again.append) == Path(world.sft_model)
    assert any("did not beat it on validation" in line for line in again)


def test_trainer_run_takes_the_student_centred_stage(tmp_path):
    """trainer/post_sft.py with rl.algorithm = "student_centred" (two DAgger rounds), on a 30-trace world
    SFT'd for 4 steps: the rl stage runs it, records it in stage.json, and is up to date the second time."""
    import shutil

    from tests.student_world import build_world
    from trainer.config import load_config
    from trainer.post_sft import run_after_eval

    world = build_world(tmp_path / "world", n_traces=30, sft_steps=4)
    out = tmp_path / "run"
    shutil.copytree(world.data_dir, out / "dataset")
    overrides = [
        ("run.out", str(out)), ("rl.enabled", True), ("rl.algorithm", "student_centred"),
        ("reward.max_new_tokens", 24), ("reward.max_turns", 2), ("rl.max_steps", 2), ("rl.eval_examples", 2),
        ("rl.eval_samples", 0), ("rl.sc_batch_size", 2), ("rl.save_steps", 2), ("rl.logging_steps", 1),
        ("rl.sc_rounds", 2),  # DAgger: one step a round, the second round rolls out the first one's student
    ]
    lines: list[str] = []
    student = run_after_eval(load_config(overrides=overrides), world.sft_model, out / "dataset", "sft-fp", out, lines.append)
    stage = json.loads((out / "rl" / "stage.json").read_text())
    assert stage["status"] == "done" and stage["algorithm"] == "student_centred" and stage["global_step"] == 2
    summary = json.loads((out / "rl" / "rl_summary.json").read_text())
    assert (out / "rl" / "final" / "config.json").exists()
    # The student that goes on is the RL one only if it beat the SFT one on the validation split.
    chosen = summary["selection"]
    assert chosen["split"] == "validation" and chosen["examples"] > 0
    assert student == (out / "rl" / "final" if chosen["after"] > chosen["before"] else Path(world.sft_model))
    assert summary["student"] == str(student) and stage["kept"] == summary["kept"]
    assert summary["algorithm"] == "student_centred" and "before" in summary and "after" in summary
    assert [r["round"] for r in summary["rounds"]] == [1, 2] and all(r["global_step"] == 1 for r in summary["rounds"])
    assert (out / "rl" / "round-2" / "divergences.jsonl").exists()
    # Round 2 trains on both rounds' divergences (aggregated), so it has at least round 1's examples.
    assert summary["rounds"][1]["examples"] >= summary["rounds"][0]["examples"]
    assert any("diverge from the teacher" in line for line in lines)
    # Nothing here reads a discriminator (no discriminator reward, mining or A/B test): none is trained,
    # which would roll the student out over the whole train split.
    assert not (out / "discriminator").exists() and not (out / "discriminator-rl").exists()
    assert not any(line.startswith("[discriminator]") for line in lines)
    again: list[str] = []
    run_after_eval(load_config(overrides=overrides), world.sft_model, out / "dataset", "sft-fp", out, again.append)
    assert any("[rl] up to date" in line for line in again)


def test_each_round_warms_its_learning_rate_up_from_zero(student_world, tmp_path):
    """rl.sc_warmup_steps: the fresh optimizer of a round starts its learning rate at 0 and climbs to
    rl.sc_learning_rate over that many steps, then decays; without it the first step is at the peak."""
    from tests.student_world import rows
    from trainer.config import load_config
    from trainer.student_centred import continue_sft, teacher_examples

    examples = teacher_examples(rows(student_world, "train")[:3])[:8]

    def learning_rates(warmup, out):
        cfg = load_config(overrides=[("rl.sc_learning_rate", 1e-3), ("rl.sc_warmup_steps", warmup), ("rl.sc_batch_size", 2),
                                     ("rl.logging_steps", 1), ("rl.save_steps", 100)])
        trained = continue_sft(cfg, Path(student_world.sft_model), examples, out, 4, lambda line: None)
        return [h["learning_rate"] for h in trained["history"] if "learning_rate" in h]

    warm, cold = learning_rates(2, tmp_path / "warm"), learning_rates(0, tmp_path / "cold")
    assert warm[0] < warm[1] == pytest.approx(1e-3 / 2) and max(warm) <= 1e-3 and warm[-1] < max(warm), warm
    assert cold[0] == pytest.approx(1e-3) and cold == sorted(cold, reverse=True), cold
