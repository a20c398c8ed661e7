"""`trainer ab-test`: report math (Wilson), blind pairs with a control arm, the discriminator and LLM judges."""

from __future__ import annotations

import json

import pytest

from tests.scripted_api import Script, ScriptedAPI, text
from tests.student_world import rows, student_world  # noqa: F401  (a fixture)
from trainer.abtest import (
    LLM_PROMPT,
    build_pairs,
    build_report,
    confusion,
    judge_with_llm,
    markdown_report,
    wilson_interval,
)


# ----------------------------------------------------------------------------------------------
# Report math


@pytest.mark.parametrize(
    "wrong, n, expected",
    [
        (5, 10, (0.2366, 0.7634)),
        (0, 10, (0.0, 0.2775)),
        (10, 10, (0.7225, 1.0)),
        (45, 100, (0.3561, 0.5476)),
        (1, 1, (0.2065, 1.0)),
    ],
)
def test_wilson_interval_matches_the_formula(wrong, n, expected):
    lo, hi = wilson_interval(wrong, n, 0.95)
    assert lo == pytest.approx(expected[0], abs=1e-4)
    assert hi == pytest.approx(expected[1], abs=1e-4)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo90, hi90 = wilson_interval(20, 50, 0.90)
    lo99, hi99 = wilson_interval(20, 50, 0.99)
    assert lo99 < lo90 < 0.4 < hi90 < hi99  # wider at higher confidence, around the estimate
    with pytest.raises(ValueError):
        wilson_interval(1, 2, 1.5)


def test_confusion_counts_ties_as_half_wrong():
    c = confusion([1, 1, 0, 0.5])
    assert c["n"] == 4 and c["wrong"] == 1.5 and c["rate"] == pytest.approx(0.375)
    assert c["ci"] == list(wilson_interval(1.5, 4))
    assert confusion([])["rate"] is None


def _key(arm, side, trace, teacher=("Read",), student=("Bash",)):
    return {"arm": arm, "teacher_side": side, "trace_id": trace, "prompt": f"prompt {trace}",
            "teacher": list(teacher), "student": list(student)}


def test_report_per_judge_control_goal_and_spotted():
    key = {
        "a": _key("student", "left", "t1"),
        "b": _key("student", "right", "t2"),
        "c": _key("student", "left", "t3"),
        "d": _key("student", "right", "t4"),
        "x": _key("control", "left", "t1"),
        "y": _key("control", "right", "t2"),
    }
    pairs = [{"id": k} for k in key]
    auto = [
        # The discriminator spots the student on a, b, c and is fooled on d; 50/50 on the control.
        {"pair_id": "a", "judge": "discriminator", "choice": "left", "p_left": 0.9, "p_right": 0.1},
        {"pair_id": "b", "judge": "discriminator", "choice": "right", "p_left": 0.4, "p_right": 0.6},
        {"pair_id": "c", "judge": "discriminator", "choice": "left", "p_left": 0.7, "p_right": 0.2},
        {"pair_id": "d", "judge": "discriminator", "choice": "left", "p_left": 0.6, "p_right": 0.5},
        {"pair_id": "x", "judge": "discriminator", "choice": "left", "p_left": 0.6, "p_right": 0.5},
        {"pair_id": "y", "judge": "discriminator", "choice": "left", "p_left": 0.6, "p_right": 0.5},
        # The LLM judge is position-biased on a (a tie) and wrong on b.
        {"pair_id": "a", "judge": "llm", "choice": None},
        {"pair_id": "b", "judge": "llm", "choice": "left"},
    ]
    human = [
        {"pair_id": "a", "choice": "right", "judge": "ada"},
        {"pair_id": "a", "choice": "left", "judge": "ada"},  # changed her mind: the latest verdict counts
        {"pair_id": "b", "choice": "left", "judge": "ada"},
        {"pair_id": "c", "choice": "right", "judge": "bob"},
        {"pair_id": "x", "choice": "right", "judge": "bob"},
    ]
    report = build_report(pairs, key, auto, human, goal=0.45)
    d = report["judges"]["discriminator"]
    assert d["confusion"]["n"] == 4 and d["confusion"]["rate"] == pytest.approx(0.25)
    assert d["control"]["rate"] == pytest.approx(0.5)
    assert not d["goal_met"]
    llm = report["judges"]["llm"]
    assert llm["confusion"]["rate"] == pytest.approx(0.75)  # 0.5 (tie) + 1 wrong over 2
    assert llm["goal_met"] and not llm["goal_met_significantly"]  # 2 pairs: the interval is wide
    humans = report["judges"]["human (all)"]
    assert humans["confusion"]["n"] == 3 and humans["confusion"]["rate"] == pytest.approx(2 / 3)
    assert report["judges"]["human:ada"]["confusion"]["n"] == 2
    assert report["headline_judge"] == "human (all)" and report["goal_met"] is True
    assert report["pairs"] == {"student": 4, "control": 2}
    # a: spotted by the discriminator and ada (the LLM tied): the most easily spotted prompt.
    assert report["spotted"][0]["trace_id"] == "t1"
    assert all(s["spotted_rate"] > 0.5 for s in report["spotted"])
    md = markdown_report(report)
    assert "| discriminator | 4 | 25.0% |" in md and "Goal MET for human (all)" in md


# ----------------------------------------------------------------------------------------------
# Pairs


def _rows(n=12, seed=5):
    from trainer.dataset import DatasetConfig, trace_to_example
    from trainer.teacher_corpus import generate_corpus

    return [trace_to_example(t, DatasetConfig()) for t in generate_corpus(n, seed=seed)]


def test_pairs_are_blind_randomized_and_have_a_same_family_control():
    from trainer.evaluate import teacher_sequence
    from trainer.reward import Workflow, teacher_workflow

    rows_ = _rows(24)
    student = [Workflow(steps=teacher_workflow(r).steps[::-1], answer="ok") for r in rows_[:10]]
    pairs, key = build_pairs(rows_[:10], student, seed=0, control_pool=rows_)
    assert sum(k["arm"] == "student" for k in key.values()) == 10
    assert sum(k["arm"] == "control" for k in key.values()) == 10
    assert {json.dumps(sorted(p)) for p in pairs} == {json.dumps(["id", "left", "right"])}
    sides = [k["teacher_side"] for k in key.values() if k["arm"] == "student"]
    assert 0 < sides.count("left") < len(sides)  # order randomized
    by_trace = {str(r["trace_id"]): r for r in rows_}
    for p in pairs:
        k = key[p["id"]]
        truth = p[k["teacher_side"]]
        assert truth["prompt"] == k["prompt"]
        if k["arm"] == "student":
            # Same prompt on both sides, the same renderer for both.
            other = p["right" if k["teacher_side"] == "left" else "left"]
            assert other["prompt"] == truth["prompt"]
        else:
            assert k["partner"] != k["trace_id"]
            if k["same_family"]:
                assert teacher_sequence(by_trace[k["partner"]]["messages"]) == teacher_sequence(by_trace[k["trace_id"]]["messages"])
    assert sum(k.get("same_family", False) for k in key.values()) >= 8
    again, _ = build_pairs(rows_[:10], student, seed=0, control_pool=rows_)
    assert again == pairs  # deterministic for a seed


# ----------------------------------------------------------------------------------------------
# The LLM judge, against the scripted Messages API


def _llm_pairs():
    from trainer.reward import Workflow, teacher_workflow

    rows_ = _rows(6, seed=9)
    student = [Workflow(steps=teacher_workflow(r).steps[:1], answer="I looked at it.") for r in rows_[:3]]
    pairs, key = build_pairs(rows_[:3], student, seed=2, control_pool=rows_)
    return [p for p in pairs if key[p["id"]]["arm"] == "student"], key


def test_llm_judge_asks_both_orders_and_cancels_position_bias():
    pairs, key = _llm_pairs()
    # A content-aware judge: it recognises the teacher's transcript in whichever slot it is shown.
    scripts = []
    for p in pairs:
        truth = p[key[p["id"]]["teacher_side"]]["transcript"]
        scripts.append(Script(match=f"Transcript A\nTask: {p['left']['prompt']}\n{truth}", turns=[[text("A")]]))
        scripts.append(Script(match=f"Transcript B\nTask: {p['left']['prompt']}\n{truth}", turns=[[text("B")]]))
    with ScriptedAPI(scripts) as api:
        verdicts = judge_with_llm(pairs, api.base_url, "judge-model", "test-key")
        assert len(api.requests) == 2 * len(pairs)
        for p, (first, second) in zip(pairs, zip(api.requests[::2], api.requests[1::2])):
            a, b = first["messages"][0]["content"], second["messages"][0]["content"]
            # The same two transcripts, in both orders.
            assert a.index(p["left"]["transcript"]) < a.index(p["right"]["transcript"])
            assert b.index(p["right"]["transcript"]) < b.index(p["left"]["transcript"])
            assert a.startswith(LLM_PROMPT.split("{")[0])
    assert [v["choice"] for v in verdicts] == [key[p["id"]]["teacher_side"] for p in pairs]
    assert build_report(pairs, key, verdicts, [])["judges"]["llm"]["confusion"]["rate"] == 0.0

    # A judge that always answers "A" follows position, not content: each pair is a tie.
    with ScriptedAPI([Script(match="Which transcript", turns=[[text("A")]])]) as api:
        biased = judge_with_llm(pairs, api.base_url, "judge-model", "test-key")
    assert all(v["choice"] is None for v in biased)
    assert build_report(pairs, key, biased, [])["judges"]["llm"]["confusion"]["rate"] == 0.5


def test_llm_judge_unreachable_is_a_clear_error():
    from trainer.config import ConfigError

    pairs, _ = _llm_pairs()
    with pytest.raises(ConfigError, match="unreachable"):
        judge_with_llm(pairs[:1], "http://127.0.0.1:9", "m", "k")


# ----------------------------------------------------------------------------------------------
# End to end on the scripted-teacher world: `trainer ab-test` with the discriminator judge


def test_ab_test_command_reports_confusion_with_control_arm(student_world, tmp_path):
    from click.testing import CliRunner

    from trainer.cli import main
    from trainer.discriminator import train_discriminator
    from trainer.reward import rollouts, teacher_workflow, workflow_text

    train = rows(student_world, "train")[:24]
    student = rollouts(str(student_world.sft_model), train, max_new_tokens=96, max_turns=6)
    disc_dir = tmp_path / "discriminator"
    train_discriminator([workflow_text(r, teacher_workflow(r)) for r in train],
                        [workflow_text(r, s) for r, s in zip(train, student)],
                        str(student_world.sft_model), disc_dir, max_steps=20, learning_rate=1e-3, log=lambda s: None)
    out = tmp_path / "abtest"
    result = CliRunner().invoke(main, [
        "ab-test", "--model", str(student_world.sft_model), "--data", str(student_world.data_dir), "--out", str(out),
        "--abtest.max_pairs", "10", "--reward.discriminator_dir", str(disc_dir),
        "--reward.max_new_tokens", "96", "--reward.max_turns", "6",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    print(result.output)
    d = report["judges"]["discriminator"]
    assert report["pairs"] == {"student": 10, "control": 10}
    assert d["confusion"]["n"] == 10 and d["control"]["n"] == 10
    lo, hi = d["confusion"]["ci"]
    assert lo <= d["confusion"]["rate"] <= hi
    assert "Wilson" in result.output and "control arm" in result.output
    assert "goal met" in result.output
    # The judging page's data never carries the answer.
    assert "teacher_side" not in (out / "pairs.json").read_text()
    # --report recomputes from the recorded verdicts (here: one person's).
    pairs = json.loads((out / "pairs.json").read_text())
    (out / "verdicts.jsonl").write_text("".join(json.dumps({"pair_id": p["id"], "choice": "left", "judge": "ada"}) + "\n" for p in pairs))
    result = CliRunner().invoke(main, ["ab-test", "--out", str(out), "--report"])
    assert result.exit_code == 0, result.output
    assert "human (all)" in result.output
