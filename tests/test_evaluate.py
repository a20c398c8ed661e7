"""`trainer eval`: metrics, the teacher-forced step loop, baselines and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.dataset import DatasetConfig, trace_to_example
from trainer.evaluate import (
    METRICS,
    Episode,
    MajorityPolicy,
    ModelPolicy,
    aggregate,
    answer_facts,
    argument_match,
    call_is_valid,
    levenshtein,
    markdown_table,
    score_episode,
    sequence_similarity,
    teacher_answer,
    teacher_sequence,
    teacher_steps,
    tool_schemas,
)
from trainer.teacher_corpus import generate_corpus
from tests.student_world import student_world  # noqa: F401  (a fixture)


@pytest.fixture(scope="module")
def rows():
    cfg = DatasetConfig()
    return [trace_to_example(t, cfg) for t in generate_corpus(n=24, seed=3)]


def test_levenshtein_and_similarity():
    assert levenshtein([], []) == 0
    assert levenshtein(["Read", "Edit", "Bash"], ["Read", "Bash"]) == 1
    assert levenshtein(["a", "b"], ["b", "a"]) == 2
    assert sequence_similarity([], []) == 1.0
    assert sequence_similarity(["Read"], []) == 0.0
    assert sequence_similarity(["Read", "Edit", "Bash"], ["Read", "Edit", "Grep"]) == pytest.approx(2 / 3)


def test_argument_match_counts_the_teachers_keys():
    teacher = {"file_path": "a.py", "limit": 10}
    assert argument_match({"file_path": "a.py", "limit": 10, "extra": 1}, teacher) == 1.0
    assert argument_match({"file_path": "a.py"}, teacher) == 0.5
    assert argument_match({}, teacher) == 0.0
    assert argument_match({}, {}) == 1.0


def test_answer_facts_are_the_names_and_numbers_the_answer_took_from_tool_results():
    results = "40055\nsrc/metrics/queries.py:112:    refresh_token\nfor the given items"
    prompt = "Compare carts and orders in analytics.db; see src/metrics/rules.py"
    teacher = ("carts has 40,055 rows in analytics.db; refresh_token is in src/metrics/queries.py, "
               "line 112. Per src/metrics/rules.py the given items are fine.")
    # Numbers lose their thousands separators; names the prompt gave and plain words are not facts.
    assert answer_facts(teacher, results, prompt) == {"40055", "refresh_token", "src/metrics/queries.py", "112"}


def test_answer_fact_recall_pools_the_facts_the_students_answer_states(rows):
    row = next(r for r in rows if answer_facts(teacher_answer(r["messages"]),
                                               "\n".join(m["content"] for m in r["messages"] if m["role"] == "tool"),
                                               r["messages"][1]["content"]))
    wrong = Episode(calls_per_step=[], answer="I could not tell.", raw=["x"])
    right = Episode(calls_per_step=[], answer=teacher_answer(row["messages"]), raw=["x"])
    facts = score_episode(wrong, row)["answer_facts"]
    assert facts and all(f == 0.0 for f in facts)
    assert all(f == 1.0 for f in score_episode(right, row)["answer_facts"])
    pooled = aggregate([score_episode(right, row), score_episode(wrong, row)])["answer_fact_recall"]
    assert pooled == pytest.approx(0.5)
    # A system that only picks tools (the majority baseline) has no answer to score.
    assert aggregate([score_episode(Episode(calls_per_step=[], answer=None, raw=[]), row)])["answer_fact_recall"] is None


def test_valid_call_needs_json_known_tool_and_schema(rows):
    schemas = tool_schemas(rows[0]["tools"])
    assert {"Bash", "Read", "Edit", "Write", "Grep", "Glob"} <= set(schemas)
    assert call_is_valid("Read", {"file_path": "x.py"}, True, schemas)
    assert not call_is_valid("Read", {"file_path": "x.py"}, False, schemas), "unparseable JSON"
    assert not call_is_valid("Reed", {"file_path": "x.py"}, True, schemas), "tool not offered"
    assert not call_is_valid("Read", {}, True, schemas), "required key missing"
    assert not call_is_valid("Read", {"file_path": 3}, True, schemas), "wrong type"


def test_teacher_steps_keep_parallel_calls_in_one_step(rows):
    explore = next(r for r in rows if len(teacher_steps(r["messages"])[1][1].calls) == 2)
    context, steps = teacher_steps(explore["messages"])
    assert [m["role"] for m in context] == ["system", "user"]
    assert [len(s.calls) for s in steps] == [1, 2, 0]
    assert [m["role"] for m in steps[1].replay] == ["assistant", "tool", "tool"]
    assert teacher_sequence(explore["messages"]) == explore["tool_sequence"]
    assert teacher_answer(explore["messages"]) == steps[-1].content != ""


def test_majority_baseline(rows):
    policy = MajorityPolicy(rows)
    seqs = [tuple(r["tool_sequence"]) for r in rows]
    firsts = [s[0] for s in seqs]
    assert firsts.count(policy.first_tool) == max(firsts.count(f) for f in firsts)
    same_start = [s for s in seqs if s[0] == policy.first_tool]
    assert policy.sequence[0] == policy.first_tool
    assert same_start.count(tuple(policy.sequence)) == max(same_start.count(s) for s in same_start)
    ep = policy.run(rows[0])
    s = score_episode(ep, rows[0])
    assert "valid_call_rate" not in s and "answer_similarity" not in s, "no arguments, no answer to judge"


class ScriptedPolicy(ModelPolicy):
    """ModelPolicy's step loop with generation replaced: replays the teacher, or never stops."""

    def __init__(self, rows, mode="teacher", max_turns=16):
        self.by_prompt = {r["messages"][1]["content"]: r for r in rows}
        self.mode, self.max_turns, self.seen = mode, max_turns, []

    def generate(self, conversations):
        texts = []
        for messages, tools in conversations:
            self.seen.append([m["role"] for m in messages])
            row = self.by_prompt[messages[1]["content"]]
            t = sum(m["role"] == "assistant" for m in messages)
            step = teacher_steps(row["messages"])[1][t]
            if self.mode == "endless":
                texts.append('<tool_call>{"name": "Bash", "arguments": {"command": "ls"}}</tool_call>')
                continue
            calls = [
                f'<tool_call>{{"name": "{n}", "arguments": {json.dumps(a)}}}</tool_call>' for n, a in step.calls
            ]
            texts.append("\n".join([step.content] * bool(step.content) + calls))
        return texts


def test_step_loop_replays_the_teacher_and_scores_perfectly(rows):
    policy = ScriptedPolicy(rows)
    episodes = policy.run_batch(rows)
    scored = [score_episode(ep, r) for ep, r in zip(episodes, rows)]
    summary = aggregate(scored)
    assert summary == {m: pytest.approx(1.0) for m in METRICS}
    # Each step sees the teacher's turns and tool results so far (teacher forcing).
    assert ["system", "user", "assistant", "tool"] in policy.seen


def test_a_student_that_never_stops_is_bounded_and_scored(rows):
    policy = ScriptedPolicy(rows, mode="endless", max_turns=3)
    episodes = policy.run_batch(rows)
    for ep, row in zip(episodes, rows):
        assert ep.answer is None
        assert len(ep.calls_per_step) <= min(3, len(teacher_steps(row["messages"])[1]))
    summary = aggregate([score_episode(ep, r) for ep, r in zip(episodes, rows)])
    assert summary["answered_rate"] == 0.0
    assert summary["valid_call_rate"] == 1.0


def test_markdown_table_lists_every_metric():
    md = markdown_table({"student": {m: 0.5 for m in METRICS}, "majority": {m: None for m in METRICS}}, 3)
    assert "| metric | student | majority |" in md
    assert "| first_tool_accuracy | 0.500 | — |" in md
    assert all(m in md for m in METRICS)


def test_score_episode_with_malformed_and_unknown_calls(rows):
    row = rows[0]
    ep = Episode(
        calls_per_step=[[{"name": None, "arguments": {}, "valid_json": False}], [{"name": "Nope", "arguments": {}, "valid_json": True}]],
        answer=None,
        raw=["x", "y"],
    )
    s = score_episode(ep, row)
    assert s["valid_call_rate"] == 0.0 and s["first_tool_accuracy"] == 0.0 and s["answered_rate"] == 0.0


def test_eval_cli_without_a_dataset_says_what_to_run(tmp_path):
    from click.testing import CliRunner

    from trainer.cli import main

    result = CliRunner().invoke(main, ["eval", "--data", str(tmp_path / "nothing"), "--model", str(tmp_path)])
    assert result.exit_code == 1
    assert f"no test split at {tmp_path / 'nothing' / 'test.jsonl'}: run `trainer build-dataset`" in result.output
    assert "Traceback" not in result.output


def test_turns_cut_at_max_new_tokens_are_counted_and_reported(student_world, tmp_path):
    """A call cut at eval.max_new_tokens scores as invalid; the report must say the cap did it."""
    from trainer.config import load_config
    from trainer.evaluate import evaluate

    def run(max_new_tokens):
        cfg = load_config(overrides=[
            ("eval.max_new_tokens", max_new_tokens), ("eval.max_examples", 4), ("eval.baselines", []),
            ("eval.max_turns", 2),
        ])
        lines: list[str] = []
        report = evaluate(cfg, student_world.sft_model, student_world.data_dir, tmp_path / str(max_new_tokens),
                          log=lines.append, print_table=False)
        students = [e["student"] for e in report["examples"]]
        return sum(s["cut_turns"] for s in students), sum(s["turns"] for s in students), lines

    cut, turns, lines = run(3)  # every turn the student writes is longer than three tokens
    assert turns >= 4 and cut == turns
    assert any(f"{cut} of the student's {turns} turns ran into eval.max_new_tokens = 3" in line for line in lines)
    cut, turns, lines = run(256)
    assert cut < turns
    assert any("ran into eval.max_new_tokens" in line for line in lines) == (cut > 0)


def test_the_shared_prefix_changes_no_step_of_the_students_workflows(student_world):
    """trainer eval prefills each project's system turn and tools once (trainer/shared_prefix.py):
    every turn the student writes must be what plain left-padded batches gave, word for word."""
    rows = [json.loads(line) for line in (student_world.data_dir / "test.jsonl").read_text().splitlines()[:8]]
    shared = ModelPolicy(str(student_world.sft_model), max_new_tokens=96, max_turns=4)
    plain = ModelPolicy(str(student_world.sft_model), max_new_tokens=96, max_turns=4)
    plain.generator.min_prefix = 10**9  # nothing cached: all padding in front, as before

    ours, theirs = shared.run_batch(rows), plain.run_batch(rows)
    projects = {r["messages"][0]["content"] for r in rows}
    assert shared.generator.prefills == len(projects) and plain.generator.prefills == 0
    assert [e.raw for e in ours] == [e.raw for e in theirs]
    assert sum(len(e.raw) for e in ours) > len(rows), "several turns per workflow were compared"


def test_a_sampled_twin_shares_the_loaded_student_and_leaves_the_greedy_one_greedy(student_world):
    import torch

    greedy = ModelPolicy(str(student_world.sft_model), max_new_tokens=24, max_turns=1)
    sampled = greedy.sampling(1.0)
    assert sampled.model is greedy.model and sampled.generator is greedy.generator and greedy.temperature == 0.0
    rows = [json.loads(line) for line in (student_world.data_dir / "test.jsonl").read_text().splitlines()[:4]]
    conversations = [(r["messages"][:2], r["tools"]) for r in rows]
    first = greedy.generate(conversations)
    torch.manual_seed(0)
    draws = [sampled.generate(conversations) for _ in range(3)]
    assert greedy.generate(conversations) == first
    assert any(d != first for d in draws), "three draws at temperature 1 all equal to greedy: not sampled"


def test_the_untrained_base_can_be_scored_on_the_first_examples_only(student_world, tmp_path):
    """eval.base_max_examples: the base sees the first N held-out examples, the student all, and the tables say so."""
    from trainer.config import load_config
    from trainer.evaluate import evaluate

    cfg = load_config(overrides=[
        ("eval.max_examples", 5), ("eval.base_max_examples", 2), ("eval.baselines", ["majority", "base"]),
        ("eval.base_model", str(student_world.base_model)), ("eval.max_new_tokens", 8), ("eval.max_turns", 1),
    ])
    lines: list[str] = []
    report = evaluate(cfg, student_world.sft_model, student_world.data_dir, tmp_path, log=lines.append,
                      print_table=False)
    assert report["n_examples_per_system"] == {"student": 5, "majority": 5, "base": 2}
    assert ["base" in e for e in report["examples"]] == [True, True, False, False, False]
    assert all("student" in e and "majority" in e for e in report["examples"])
    assert any(line.startswith("  base: 2 examples done (") for line in lines)
    header = (tmp_path / "eval.md").read_text().splitlines()[2]
    assert header == "| metric | student | majority | base (first 2) |"


def test_evaluation_reports_its_progress_batch_by_batch_with_an_eta(student_world, tmp_path):
    """A real base's evaluation runs for many minutes: each model batch but the last prints a line."""
    from trainer.config import load_config
    from trainer.evaluate import evaluate

    cfg = load_config(overrides=[
        ("eval.max_examples", 5), ("eval.batch_size", 2), ("eval.baselines", ["majority"]),
        ("eval.max_new_tokens", 8), ("eval.max_turns", 1),
    ])
    lines: list[str] = []
    evaluate(cfg, student_world.sft_model, student_world.data_dir, tmp_path, log=lines.append, print_table=False)
    progress = [line for line in lines if line.startswith("  student: ")]
    assert len(progress) == 3, progress
    assert progress[0].startswith("  student: 2/5 examples · ") and " · ETA " in progress[0]
    assert progress[1].startswith("  student: 4/5 examples · ") and " · ETA " in progress[1]
    assert progress[2].startswith("  student: 5 examples done (")
    assert not any(line.startswith("  majority: ") and "ETA" in line for line in lines)


def test_the_untrained_baseline_is_the_base_the_student_was_trained_from(student_world, tmp_path):
    """With eval.base_model and sft.base_model unset, `trainer eval --model RUN/sft/final` scores the
    base RUN trained from (its understudy_config.json), not the default hub model, which a user
    evaluating an offline run may not have (offline, asking the hub for it waits ~50 s, then fails)."""
    from trainer.config import DEFAULT_BASE_MODEL, load_config
    from trainer.evaluate import evaluate, untrained_base

    cfg = load_config(overrides=[("eval.max_examples", 2), ("eval.base_max_examples", 1), ("eval.max_new_tokens", 4),
                                 ("eval.max_turns", 1), ("eval.baselines", ["base"])])
    assert cfg.sft.base_model == DEFAULT_BASE_MODEL
    recorded = json.loads((student_world.sft_dir / "understudy_config.json").read_text())["config"]["sft"]["base_model"]
    assert Path(recorded).resolve() == Path(student_world.base_model).resolve()
    base, setting, _ = untrained_base(cfg, Path(student_world.sft_model))
    assert base == recorded and "understudy_config.json" in setting
    lines: list[str] = []
    report = evaluate(cfg, student_world.sft_model, student_world.data_dir, tmp_path, log=lines.append, print_table=False)
    assert report["n_examples_per_system"] == {"student": 2, "base": 1}
    assert any(line.startswith(f"  untrained baseline: {recorded} (the base the student was trained from") for line in lines)
    # A base the user names wins over the record: eval.base_model, or sft.base_model set by them.
    named = load_config(overrides=[("sft.base_model", "some/other-base")])
    assert untrained_base(named, Path(student_world.sft_model))[:2] == ("some/other-base", "sft.base_model")
    named = load_config(overrides=[("eval.base_model", "my/base")])
    assert untrained_base(named, Path(student_world.sft_model))[:2] == ("my/base", "eval.base_model")
    # A student with no run record beside it: sft.base_model, as before.
    assert untrained_base(load_config(None), tmp_path / "loose-model")[0] == DEFAULT_BASE_MODEL


def test_eval_precision_bf16_generates_with_bf16_weights_for_student_and_base(student_world, tmp_path):
    """eval.precision = "bf16": the student and the untrained base generate with bf16 weights (half
    the bytes a CPU reads at each token), the log says so, and the workflows still score; "fp32"
    (the default) leaves them in float32."""
    import torch

    from trainer.config import load_config
    from trainer.evaluate import _untrained_baseline, evaluate

    cfg = load_config(overrides=[
        ("eval.precision", "bf16"), ("eval.max_examples", 4), ("eval.baselines", ["base"]),
        ("eval.base_model", str(student_world.base_model)), ("eval.max_new_tokens", 24), ("eval.max_turns", 2),
    ])
    lines: list[str] = []
    report = evaluate(cfg, student_world.sft_model, student_world.data_dir, tmp_path, log=lines.append,
                      print_table=False)
    assert any(line.startswith("Evaluating ") and line.endswith(" in bf16 …") for line in lines)
    assert report["n_examples_per_system"] == {"student": 4, "base": 4}
    assert all(e["student"]["turns"] >= 1 for e in report["examples"])
    assert _untrained_baseline(cfg, student_world.sft_model, lines.append).model.dtype == torch.bfloat16

    bf16 = ModelPolicy(str(student_world.sft_model), max_new_tokens=24, max_turns=1, precision="bf16")
    fp32 = ModelPolicy(str(student_world.sft_model), max_new_tokens=24, max_turns=1)
    assert bf16.model.dtype == torch.bfloat16 and fp32.model.dtype == torch.float32
    rows = [json.loads(line) for line in (student_world.data_dir / "test.jsonl").read_text().splitlines()[:2]]
    assert all(isinstance(text, str) for text in bf16.generate([(r["messages"][:2], r["tools"]) for r in rows]))
    with pytest.raises(Exception, match="eval.precision"):
        load_config(overrides=[("eval.precision", "fp8")])
