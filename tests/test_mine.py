"""`trainer mine`: rank prompts by how clearly the student differs; weights and an over-sampled dataset."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tests.student_world import rows, student_world  # noqa: F401  (a fixture)
from trainer.mine import assign_weights, family_boost, rank, write_oversampled_dataset


def _scored(sims, p_teacher=None):
    from trainer.reward import TERMS

    examples = []
    for i, s in enumerate(sims):
        terms = {t: 1.0 for t in TERMS}
        terms["order"] = s
        ex = {"similarity": s, "terms": terms, "notes": {t: f"note {t} {i}" for t in TERMS}, "teacher": ["Read"], "student": ["Bash"]}
        if p_teacher is not None:
            ex["p_teacher"] = p_teacher[i]
        examples.append(ex)
    return {"examples": examples}


def test_rank_mixes_reward_gap_and_discriminator_confidence():
    rows_ = [{"trace_id": f"t{i}", "prompt": f"p{i}"} for i in range(4)]
    ranked = rank(rows_, _scored([0.9, 0.5, 0.9, 0.2], p_teacher=[0.1, 0.9, 0.95, 0.5]), 0.5, 0.5)
    # t0: gap .1, disc .9 → .5 ; t1: .5/.1 → .3 ; t2: .1/.05 → .075 ; t3: .8/.5 → .65
    assert [r["trace_id"] for r in ranked] == ["t3", "t0", "t1", "t2"]
    assert ranked[0]["score"] == 0.65 and ranked[0]["weakest_term"] == "order" and ranked[0]["why"] == "note order 3"
    # Without a discriminator the gap alone decides.
    assert [r["trace_id"] for r in rank(rows_, _scored([0.9, 0.5, 0.9, 0.2]))] == ["t3", "t1", "t0", "t2"]
    weights = assign_weights(ranked, 0.5, 3)
    assert weights == {"t3": 3, "t0": 3}
    assert assign_weights(ranked, 0.01, 2) == {"t3": 2}  # a positive fraction mines at least one
    assert assign_weights(ranked, 0.0, 2) == {}


def test_oversampled_dataset_repeats_mined_training_rows_only(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"trace_id": f"t{i}"}) + "\n" for i in range(3)))
    (data / "validation.jsonl").write_text(json.dumps({"trace_id": "v"}) + "\n")
    (data / "test.jsonl").write_text(json.dumps({"trace_id": "x"}) + "\n")
    out = write_oversampled_dataset(data, tmp_path / "mined", {"t1": 3, "v": 5})
    train = [json.loads(line)["trace_id"] for line in (out / "train.jsonl").read_text().splitlines()]
    assert train == ["t0", "t1", "t1", "t1", "t2"]
    assert (out / "validation.jsonl").read_text() == (data / "validation.jsonl").read_text()
    assert (out / "test.jsonl").read_text() == (data / "test.jsonl").read_text()


def test_family_boost_matches_teacher_tool_sequences():
    from trainer.dataset import DatasetConfig, trace_to_example
    from trainer.evaluate import teacher_sequence
    from trainer.teacher_corpus import generate_corpus

    rows_ = [trace_to_example(t, DatasetConfig()) for t in generate_corpus(12, seed=4)]
    family = teacher_sequence(rows_[0]["messages"])
    boosted = family_boost(rows_, [family], 2)
    assert str(rows_[0]["trace_id"]) in boosted
    assert all(teacher_sequence(r["messages"]) == family for r in rows_ if str(r["trace_id"]) in boosted)


def test_mine_command_writes_ranking_weights_dataset_and_status(student_world, tmp_path):
    from trainer.cli import main
    from trainer.rl import build_prompts, load_weights

    out = tmp_path / "mine"
    args = ["mine", "--model", str(student_world.sft_model), "--data", str(student_world.data_dir), "--out", str(out),
            "--mine.max_examples", "16", "--mine.top_fraction", "0.25", "--mine.oversample", "3",
            "--reward.max_new_tokens", "96", "--reward.max_turns", "6",
            "--reward.discriminator_dir", str(tmp_path / "no-discriminator")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    mined = [json.loads(line) for line in (out / "mined.jsonl").read_text().splitlines()]
    assert len(mined) == 16 and [m["score"] for m in mined] == sorted((m["score"] for m in mined), reverse=True)
    weights = json.loads((out / "weights.json").read_text())
    assert set(weights) == {m["trace_id"] for m in mined[:4]} and set(weights.values()) == {3}
    train = (student_world.data_dir / "train.jsonl").read_text().splitlines()
    assert len((out / "dataset" / "train.jsonl").read_text().splitlines()) == len(train) + 4 * 2
    # The next RL round over-samples them.
    train_rows = rows(student_world, "train")
    prompts = build_prompts(train_rows, turns="first", weights=load_weights(out / "weights.json"))
    assert len(prompts) == len(train_rows) + 4 * 2
    # Status-style output: what was mined and why.
    status = CliRunner().invoke(main, ["mine", "--out", str(out), "--status"])
    assert status.exit_code == 0, status.output
    assert "# Mined prompts (4 of 16 over-sampled ×3)" in status.output
    assert mined[0]["why"] in status.output and "weakest" in status.output
    print(status.output)
    missing = CliRunner().invoke(main, ["mine", "--out", str(tmp_path / "nothing"), "--status"])
    assert missing.exit_code != 0 and "nothing mined yet" in missing.output
