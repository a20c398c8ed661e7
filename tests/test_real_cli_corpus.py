"""benchmarks/real_cli_corpus.py end to end: six teacher sessions (every task kind, sessions of
one to three prompts) played through the real Claude Code CLI, captured by the real hooks and
daemon, and checked against the teacher: same tools in the same order with the teacher's
arguments, real tool results, one CLI session per teacher session, nothing lost."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest

from benchmarks.real_cli_corpus import Postgres, check_trace, plan_sessions, run_corpus
from tests.claude_harness import claude_bin
from trainer.teacher_corpus import KINDS

pytestmark = pytest.mark.e2e

SESSIONS, SEED = 6, 0
POSTGRES = Postgres.available()  # the plan and the run must agree on whether psql tasks run


def _unnumbered(output: str) -> list[str]:
    return [line.split("\t", 1)[1] for line in output.split("\n")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    claude_bin()
    root = tmp_path_factory.mktemp("realcorpus")
    stats = run_corpus(SESSIONS, out=root / "traces.jsonl", seed=SEED, workers=3, workdir=root / "work",
                       progress=lambda _: None, postgres=POSTGRES, unique_prompts=True)
    traces = [json.loads(line) for line in (root / "traces.jsonl").read_text().splitlines()]
    plans, _ = plan_sessions(SESSIONS, SEED, postgres=POSTGRES, unique_prompts=True)
    return stats, traces, plans, root / "work" / "dev"


def test_plan_covers_every_kind_and_multi_prompt_sessions():
    plans, _ = plan_sessions(SESSIONS, SEED, postgres=POSTGRES, unique_prompts=True)
    prompts = [t.prompt for p in plans for t in p.prompts]
    assert len(set(prompts)) == len(prompts)  # the checks below find a trace's teacher task by its prompt
    assert {t.kind for p in plans for t in p.prompts} == set(KINDS)
    assert max(len(p.prompts) for p in plans) >= 2


def test_every_session_ran_and_every_prompt_became_an_accepted_trace(corpus):
    stats, traces, plans, _ = corpus
    assert stats["sessions_ok"] == len(plans) == SESSIONS, stats["sessions_failed"]
    assert len(traces) == stats["prompts_planned"] == sum(len(p.prompts) for p in plans)
    assert stats["accepted"] == len(traces)
    assert {t["kind"] for t in traces} == set(KINDS)
    for trace in traces:
        assert trace["complete"] and trace["source"] == "hook"
        assert trace["quality"]["accepted"], trace["quality"]


def test_tools_and_arguments_are_the_teachers(corpus):
    _, traces, plans, projects = corpus
    teacher = {t.prompt: (p, t) for p in plans for t in p.prompts}
    for trace in traces:
        plan, task = teacher[trace["prompt"]]
        assert trace["cwd"] == str(projects / plan.project)
        assert check_trace(trace, task) == [], (task.kind, check_trace(trace, task))
        assert [c["name"] for c in trace["tool_calls"]] == [c.name for c in task.tool_calls]
        assert [c["parallel_group"] for c in trace["tool_calls"]] == [c.parallel_group for c in task.tool_calls]
        assert trace["assistant_text"][0]["text"] == task.assistant_text[0].text
        # The real CLI offers its own tools, full schemas and all.
        assert {"Bash", "Read", "Edit", "Write", "Grep", "Glob"} <= {t["name"] for t in trace["tools_offered"]}


def test_results_come_from_the_real_tools(corpus):
    _, traces, plans, _ = corpus
    teacher = {t.prompt: t for p in plans for t in p.prompts}
    seen = set()
    for trace in traces:
        task, calls = teacher[trace["prompt"]], trace["tool_calls"]
        want = task.tool_calls
        seen.add(task.kind)
        for got, exp in zip(calls, want):
            if got["name"] == "Read":  # the file the sandbox holds is the teacher's (investigate: padded to the grep line)
                lines = _unnumbered(got["output"])
                assert re.match(r"1\t", got["output"])  # real Read numbering: "1\t", not "     1\t"
                if task.kind != "investigate":
                    assert lines[:len(_unnumbered(exp.output))] == _unnumbered(exp.output)
                else:
                    assert set(_unnumbered(exp.output)[2:]) <= set(lines)
            elif got["name"] == "Bash" and exp.success:
                if task.kind in ("compare", "db_question"):
                    assert got["output"] == exp.output  # sqlite3's real COUNT(*)
                elif task.kind == "fix_bug":
                    assert re.search(r"\b%s passed in" % exp.output.split()[-4], got["output"]), got["output"]
                else:
                    assert got["output"] == exp.output
            elif got["name"] == "Bash":
                assert got["success"] is False and exp.error.splitlines()[-1].split(" from ")[0] in got["error"]
            elif got["name"] == "Grep":
                for hit in exp.output.split("\n"):
                    assert ":".join(hit.split(":", 2)[:2]) in got["output"]
            elif got["name"] == "Glob":
                assert set(got["output"].split("\n")) >= set(exp.output.split("\n"))
            elif got["name"] in ("Edit", "Write"):
                assert got["success"] and ("updated" in got["output"] or "created" in got["output"])
        if task.kind == "investigate":
            assert trace["reasoning_signals"]["error_recovery"] is True
    assert seen == set(KINDS)


def test_prompts_of_a_session_share_the_cli_session_and_nothing_is_lost(corpus):
    stats, traces, plans, _ = corpus
    by_session = defaultdict(list)
    for trace in traces:
        by_session[trace["teacher_session"]].append(trace)
    assert sorted(by_session) == [p.index for p in plans]
    ids = set()
    for plan in plans:
        group = by_session[plan.index]
        assert len(group) == len(plan.prompts)
        assert len({t["session_id"] for t in group}) == 1  # --resume: the same session
        ids.add(group[0]["session_id"])
        assert sorted(t["prompt"] for t in group) == sorted(t.prompt for t in plan.prompts)
    assert len(ids) == len(plans)
    assert stats["quarantined"] == 0
    assert all(not t["capture_losses"] for t in traces)
    assert stats["traces_with_problems"] == {}


def _longest_teacher_turn(example: dict, tok) -> int:
    """The most tokens one of the example's assistant turns takes to generate, in `tok`'s tokens."""
    from trainer.chat_template import render

    msgs, longest = example["messages"], 0
    for i, m in enumerate(msgs):
        if m["role"] == "assistant":
            prompt = len(tok(render(msgs[:i], example["tools"], add_generation_prompt=True), add_special_tokens=False)["input_ids"])
            whole = len(tok(render(msgs[: i + 1], example["tools"]), add_special_tokens=False)["input_ids"])
            longest = max(longest, whole - prompt)
    return longest


def test_the_smollm2_preset_holds_real_captures_whole(corpus, tmp_path):
    """`trainer run --preset smollm2` on traces captured through the real CLI, in SmolLM2's tokens:
    no example is longer than sft.max_length (it would be dropped), no teacher turn is longer than
    eval.max_new_tokens (a call cut there scores as invalid), and the working directory stands right
    before the prompt, where the student copies it from into absolute paths."""
    pytest.importorskip("trl")
    from trainer.bases import SMOLLM2_135M, resolve_base
    from trainer.config import load_config
    from trainer.dataset import build_dataset, load_traces
    from trainer.pipeline import PRESETS
    from trainer.sft import load_tokenizer

    _, traces, _, projects = corpus
    cfg = load_config(preset=PRESETS["smollm2"], overrides=[("dataset.output_dir", str(tmp_path / "ds"))])
    assert cfg.run.traces == "store" and cfg.sft.base_model == SMOLLM2_135M and cfg.sft.method == "lora"
    assert cfg.dataset.working_directory_turn == "user"
    exported = tmp_path / "traces.jsonl"
    exported.write_text("".join(json.dumps(t) + "\n" for t in traces))
    tok = load_tokenizer(resolve_base(SMOLLM2_135M, tmp_path))[0]
    report = build_dataset(load_traces(exported), cfg.dataset, tok)
    assert sum(report.counts.values()) == len(traces)
    lengths = report.stats["token_lengths"]
    assert max(lengths[split]["max"] for split in report.counts if report.counts[split]) < cfg.sft.max_length
    longest_turn = 0
    for split in report.counts:
        for line in (tmp_path / "ds" / f"{split}.jsonl").read_text().splitlines():
            ex = json.loads(line)
            msgs = ex["messages"]
            assert msgs[1]["role"] == "user" and msgs[1]["content"].startswith(f"Working directory: {projects}/")
            longest_turn = max(longest_turn, _longest_teacher_turn(ex, tok))
    assert 0 < longest_turn <= cfg.eval.max_new_tokens


def test_the_tiny_preset_holds_real_captures_whole(corpus, tmp_path):
    """`trainer run --preset tiny` on traces captured through the real CLI, in the tokens of the BPE
    it trains on them: no example longer than sft.max_length, no teacher turn longer than
    eval.max_new_tokens, and every example shows only the tools the teacher calls, each as its
    name and required parameters."""
    pytest.importorskip("transformers")
    from trainer.config import load_config
    from trainer.dataset import build_dataset, load_traces
    from trainer.pipeline import PRESETS, _training_texts
    from trainer.tokenizer_tools import train_tiny_tokenizer

    _, traces, _, projects = corpus
    cfg = load_config(preset=PRESETS["tiny"], overrides=[("dataset.output_dir", str(tmp_path / "ds"))])
    exported = tmp_path / "traces.jsonl"
    exported.write_text("".join(json.dumps(t) + "\n" for t in traces))
    # Six sessions teach the BPE fewer merges than a real store: their tokens are as long or longer.
    tok = train_tiny_tokenizer(_training_texts(exported, cfg), cfg.run.demo_vocab)
    report = build_dataset(load_traces(exported), cfg.dataset, tok)
    assert sum(report.counts.values()) == len(traces)
    lengths = report.stats["token_lengths"]
    assert max(lengths[split]["max"] for split in report.counts if report.counts[split]) < cfg.sft.max_length
    called = {c["name"] for t in traces for c in t["tool_calls"]}
    required = {t["name"]: set(t["input_schema"].get("required", [])) for t in traces[0]["tools_offered"]}
    longest_turn = 0
    for split in report.counts:
        for line in (tmp_path / "ds" / f"{split}.jsonl").read_text().splitlines():
            ex = json.loads(line)
            tools = {t["function"]["name"]: t["function"] for t in json.loads(ex["tools"])}
            assert tools and set(tools) <= called
            for name, shown in tools.items():
                assert set(shown["parameters"]) == required[name] and shown["description"] == "…", name
            msgs = ex["messages"]
            assert msgs[1]["content"].startswith(f"Working directory: {projects}/")
            longest_turn = max(longest_turn, _longest_teacher_turn(ex, tok))
    assert 0 < longest_turn <= cfg.eval.max_new_tokens
