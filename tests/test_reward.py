"""The behavioural reward: per-term workflow similarity, and the learned discriminator."""

from __future__ import annotations

import json

import pytest

from tests.student_world import rows, student_world  # noqa: F401  (a fixture)
from trainer.config import ConfigError
from trainer.reward import (
    DEFAULT_WEIGHTS,
    TERMS,
    Call,
    Step,
    Workflow,
    combine,
    similarity,
    teacher_turns,
    teacher_workflow,
    turn_workflow,
    workflow_text,
    workflow_transcript,
)

TOOLS = json.dumps([
    {"type": "function", "function": {"name": "Read", "description": "", "parameters": {
        "type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}}},
    {"type": "function", "function": {"name": "Bash", "description": "", "parameters": {
        "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}},
    {"type": "function", "function": {"name": "Edit", "description": "", "parameters": {
        "type": "object", "properties": {"file_path": {"type": "string"}, "old_string": {"type": "string"},
                                         "new_string": {"type": "string"}}, "required": ["file_path"]}}},
])

TEACHER = Workflow(
    steps=[
        Step("I'll read the file first.", [Call("Read", {"file_path": "src/a.py"})]),
        Step("Now the fix.", [Call("Edit", {"file_path": "src/a.py", "old_string": "x", "new_string": "y"})]),
        Step("Run the tests.", [Call("Bash", {"command": "pytest -q"})]),
    ],
    answer="Fixed the bug in src/a.py; the tests pass.",
)


def test_identical_workflow_scores_one_on_every_term():
    b = similarity(TEACHER, TEACHER, TOOLS)
    assert b.terms == {t: 1.0 for t in TERMS}
    assert b.total == pytest.approx(1.0)
    assert b.notes["tool_choice"] == "same tools" and b.notes["order"] == "same order"
    assert "similarity 1.000" in b.explain()


def test_each_term_explains_what_differs():
    student = Workflow(
        steps=[
            Step("Let me run it.", [Call("Bash", {"command": "pytest -q"})]),
            Step("", [Call("Read", {"file_path": "src/b.py"}), Call("Grep", {"pattern": "x"}, valid_json=True)]),
            Step("", [Call(None, {}, valid_json=False)]),
        ],
        answer=None,
    )
    b = similarity(student, TEACHER, TOOLS)
    assert 0 < b.terms["tool_choice"] < 1 and "missing ['Edit']" in b.notes["tool_choice"] and "Grep" in b.notes["tool_choice"]
    assert b.terms["order"] < 0.5 and "['Bash', 'Read', 'Grep', '?']" in b.notes["order"]
    # Read matched in step 2 but not step 1; Bash is in step 1 for the student, step 3 for the teacher: no match.
    assert b.terms["arguments"] == 0.0 and "no call matched" in b.notes["arguments"]
    # Grep is not an offered tool and the last call is malformed: 2 of 4 valid.
    assert b.terms["validity"] == pytest.approx(0.5) and b.notes["validity"] == "2/4 calls valid"
    assert "no final answer" in b.notes["style"]
    assert b.terms["length"] < 1
    assert 0 < b.total < 0.6


def test_argument_term_counts_each_teacher_key():
    student = Workflow(steps=[Step("I'll read the file first.", [Call("Read", {"file_path": "src/OTHER.py"})]),
                              Step("Now the fix.", [Call("Edit", {"file_path": "src/a.py", "old_string": "x", "new_string": "z"})]),
                              Step("Run the tests.", [Call("Bash", {"command": "pytest -q"})])],
                       answer=TEACHER.answer)
    b = similarity(student, TEACHER, TOOLS)
    assert b.terms["arguments"] == pytest.approx((0 + 2 / 3 + 1) / 3)
    assert b.terms["tool_choice"] == b.terms["order"] == b.terms["validity"] == b.terms["style"] == 1.0


def test_weights_are_configurable_and_checked():
    student = Workflow(steps=TEACHER.steps[::-1], answer=TEACHER.answer)
    default = similarity(student, TEACHER, TOOLS)
    order_only = similarity(student, TEACHER, TOOLS, {t: 0.0 for t in TERMS} | {"order": 1.0})
    assert order_only.total == pytest.approx(default.terms["order"])
    assert default.weights == DEFAULT_WEIGHTS
    with pytest.raises(ConfigError, match="unknown term 'ordre'"):
        similarity(student, TEACHER, TOOLS, {"ordre": 1})
    with pytest.raises(ConfigError, match="all 0"):
        similarity(student, TEACHER, TOOLS, {t: 0 for t in TERMS})


def test_turn_level_and_combined_reward():
    # One generated turn is parsed with the chat template's parser.
    wf = turn_workflow('Reading it.\n<tool_call>{"name": "Read", "arguments": {"file_path": "src/a.py"}}</tool_call>')
    teacher_turn = Workflow(steps=[TEACHER.steps[0]])
    b = similarity(wf, teacher_turn, TOOLS)
    assert b.terms["tool_choice"] == b.terms["arguments"] == b.terms["validity"] == 1.0
    answer = turn_workflow("All done.")
    assert answer.answer == "All done." and not answer.steps
    assert similarity(answer, teacher_turn, TOOLS).terms["style"] == 0.0  # answered where the teacher called a tool
    assert combine(0.8, None, 0.3) == 0.8
    assert combine(0.8, 0.2, 0.25) == pytest.approx(0.75 * 0.8 + 0.25 * 0.2)


def test_teacher_rows_round_trip_and_render_identically():
    from trainer.dataset import DatasetConfig, trace_to_example
    from trainer.teacher_corpus import generate_corpus

    row = trace_to_example(generate_corpus(6, seed=1)[4], DatasetConfig())
    wf = teacher_workflow(row)
    assert wf.sequence == row["tool_sequence"]
    assert similarity(wf, wf, row["tools"]).total == pytest.approx(1.0)
    assert Workflow.from_json(json.loads(json.dumps(wf.to_json()))) == wf
    turns = teacher_turns(row)
    assert len(turns) == len(wf.steps) + 1 and turns[-1][1].answer == wf.answer
    text = workflow_text(row, wf)
    assert row["prompt"] in text and "<tool_call>" in text and text.endswith("<|eot_id|>")
    assert "# Tools" not in text  # system prompt and tool list are the same for both sides: left out
    transcript = workflow_transcript(row, wf)
    assert transcript.count("→ ") == len(wf.sequence) and wf.answer in transcript


def test_a_mid_turn_message_reaches_both_sides_of_a_judged_pair():
    """Teacher and student were both replayed the message the user sent mid-turn; a judge shown
    the workflows without it sees the teacher change course for no reason."""
    from capture_daemon.schema import MidTurnMessage, ToolCall, Trace
    from trainer.dataset import DatasetConfig, trace_to_example

    trace = Trace(trace_id="t", session_id="s", prompt_id="p", prompt="check the feeders", final_response="B is 33kV.",
                  tool_calls=[ToolCall(tool_use_id="c1", name="Bash", input={"command": "ls"}, output="notes.txt"),
                              ToolCall(tool_use_id="c2", name="Read", input={"file_path": "notes.txt"}, output="B: 33kV",
                                       parallel_group=1)],
                  mid_turn_messages=[MidTurnMessage(text="only feeder B please", position=1)])
    row = trace_to_example(trace, DatasetConfig())
    wf = teacher_workflow(row)
    assert wf.sequence == ["Bash", "Read"] and wf.answer == "B is 33kV."
    transcript = workflow_transcript(row, wf)
    assert transcript.index("notes.txt") < transcript.index("only feeder B please") < transcript.index("→ Read")
    assert "only feeder B please" in workflow_text(row, wf)


# ----------------------------------------------------------------------------------------------
# The discriminator on the scripted-teacher world


def test_discriminator_beats_chance_on_untrained_student_and_drops_as_student_improves(student_world, tmp_path):
    """Three students of rising quality, each judged by a discriminator retrained for it on the same budget.

    untrained: the random base; sft: the world's SFT student; teacher-level: a student that learned the
    teacher perfectly, i.e. the scripted teacher itself with independently chosen phrasings (the same
    calls and answers, other words among the teacher's own alternatives).
    """
    from tests.student_world import twin_rows
    from trainer.discriminator import Discriminator, pair_accuracy, train_discriminator
    from trainer.reward import rollouts

    train = rows(student_world, "train")[:32]
    held_out = rows(student_world, "test") + rows(student_world, "validation")
    teacher_train = [workflow_text(r, teacher_workflow(r)) for r in train]
    teacher_held = [workflow_text(r, teacher_workflow(r)) for r in held_out]

    def model_student(model):
        # Room for whole answers: a student cut off mid-answer is trivially spotted.
        return lambda rs: rollouts(str(model), rs, max_new_tokens=160, max_turns=6)

    def twin_student(split):
        twins = {r["trace_id"]: teacher_workflow(r) for s in split for r in twin_rows(student_world, s)}
        return lambda rs: [twins[r["trace_id"]] for r in rs]

    students = {
        "untrained": model_student(student_world.base_model),
        "sft": model_student(student_world.sft_model),
        "teacher-level": twin_student(["train", "test", "validation"]),
    }
    accuracies, margins = {}, {}
    for name, student in students.items():
        student_train, student_held = student(train), student(held_out)
        # The same judge budget for every student, started from the untrained base.
        disc = train_discriminator(
            teacher_train, [workflow_text(r, s) for r, s in zip(train, student_train)],
            str(student_world.base_model), tmp_path / name, max_steps=30, learning_rate=1e-3, log=print,
        )
        assert (tmp_path / name / "calibration.json").exists() and disc.info["pairs"] == len(train)
        loaded = Discriminator.load(tmp_path / name)
        student_texts = [workflow_text(r, s) for r, s in zip(held_out, student_held)]
        accuracies[name] = pair_accuracy(loaded, teacher_held, student_texts)
        # How sure it is, not only whether it is right: mean p(teacher) of the teacher minus the student's.
        p_t, p_s = loaded.p_teacher(teacher_held), loaded.p_teacher(student_texts)
        margins[name] = sum(a - b for a, b in zip(p_t, p_s)) / len(p_t)
    print(f"\ndiscriminator on {len(held_out)} held-out prompts, pair accuracy / mean confidence margin: "
          + ", ".join(f"{n} {accuracies[n]:.3f} / {margins[n]:.3f}" for n in students))
    assert accuracies["untrained"] >= 0.9  # far better than chance (0.5) on an untrained student
    # As the student improves, the retrained judge does no better and is less sure (the tiny SFT
    # student may still be told apart every time: its accuracy can saturate at 1.0) ...
    assert accuracies["sft"] <= accuracies["untrained"] and margins["sft"] < margins["untrained"]
    # ... and a student at the teacher's level brings it down to chance.
    assert accuracies["teacher-level"] < accuracies["sft"] and accuracies["teacher-level"] <= 0.75
    assert margins["teacher-level"] < margins["sft"]


def test_reward_command_prints_per_term_breakdown(student_world, tmp_path):
    from click.testing import CliRunner

    from trainer.cli import main

    out = tmp_path / "reward"
    result = CliRunner().invoke(main, [
        "reward", "--model", str(student_world.sft_model), "--data", str(student_world.data_dir), "--out", str(out),
        "--reward.max_examples", "6", "--reward.max_new_tokens", "96", "--reward.max_turns", "6",
        "--reward.discriminator_dir", str(tmp_path / "none"),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "reward.json").read_text())
    assert report["summary"]["n"] == 6 and set(report["summary"]["terms"]) == set(TERMS)
    for term in TERMS:
        assert f"| {term} |" in result.output
    assert all(set(e["notes"]) == set(TERMS) for e in report["examples"])
