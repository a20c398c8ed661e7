"""Quality rules at their edges (definitions: capture_daemon/quality.py)."""

from __future__ import annotations

import pytest

from capture_daemon.quality import QualityRules, QualityWeights, analyze, duplicate_key, score_trace
from capture_daemon.schema import Quality, ReasoningSignals
from tests.trace_builders import LONG_ANSWER, bash, call, edit, read, trace

RULES = QualityRules()


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


GOOD_CALLS = [read("/app/config.py"), call("Grep", pattern="timeout"), edit("/app/config.py"), bash("pytest -q")]


def test_good_multi_step_trace_is_accepted_with_reasons():
    q = score_trace(trace(GOOD_CALLS, texts=[(0, "I'll read the config, then fix the timeout.")]), RULES)
    assert q.reasons == [
        "+ multi-step workflow (4 tool calls)",
        "+ clear reasoning (narrates its steps once)",
        "+ states a plan (\"I'll read the config, then fix the timeout.\")",
        "+ tool chaining (4 tools: Read, Grep, Edit, Bash)",
        "+ problem solving (changes, then verifies with a run)",
    ]
    assert q.score == 1.0  # 0.4 + 0.2 + 0.1 + 0.1 + 0.1 + 0.15, clamped
    assert q.accepted


@pytest.mark.parametrize("n,accepted,reason", [
    (49, False, "- answer under 50 words (49) (rejects)"),
    (50, True, None),
])
def test_answer_of_49_vs_50_words(n, accepted, reason):
    q = score_trace(trace(GOOD_CALLS, answer=words(n)), RULES)
    assert q.accepted is accepted
    assert (reason in q.reasons) if reason else not any("words" in r for r in q.reasons)


def test_min_answer_words_is_configurable():
    q = score_trace(trace(GOOD_CALLS, answer=words(20)), QualityRules(min_answer_words=20))
    assert q.accepted


def test_one_word_answer_is_rejected():
    q = score_trace(trace(GOOD_CALLS, answer="Done."), RULES)
    assert "- one-word answer (rejects)" in q.reasons
    assert not any("under 50" in r for r in q.reasons)
    assert not q.accepted


def test_no_answer_is_rejected():
    for answer in (None, "   "):
        q = score_trace(trace(GOOD_CALLS, answer=answer), RULES)
        assert "- no final answer (rejects)" in q.reasons and not q.accepted


def test_incomplete_trace_is_rejected():
    q = score_trace(trace(GOOD_CALLS, complete=False, incomplete_reason="idle_timeout"), RULES)
    assert "- incomplete trace (idle_timeout) (rejects)" in q.reasons
    assert not q.accepted


def test_no_tools_is_unclear_tool_usage():
    q = score_trace(trace([]), RULES)
    assert q.reasons == ["- unclear tool usage: no tool calls", "- score 0.10 below min_score 0.50"]
    assert q.score == pytest.approx(0.1) and not q.accepted


def test_most_calls_failed_is_unclear_tool_usage():
    calls = [bash("a", success=False), bash("b", success=False), read("/x")]
    q = score_trace(trace(calls), RULES)
    assert "- unclear tool usage: 2 of 3 tool calls failed" in q.reasons
    # exactly half failed: not "most"
    q = score_trace(trace([bash("a", success=False), read("/x")]), RULES)
    assert not any("unclear" in r for r in q.reasons)


def test_error_without_recovery_vs_with_recovery():
    same = [read("/a"), read("/b"), bash("make", success=False), bash("make")]
    q = score_trace(trace(same), RULES)
    assert "- error without recovery (1 failed call)" in q.reasons
    different = [read("/a"), read("/b"), bash("make", success=False), bash("python -m build")]
    q = score_trace(trace(different), RULES)
    assert "+ error recovery (a failed call, then a different approach that worked)" in q.reasons
    assert not any("without recovery" in r for r in q.reasons)


def test_database_and_retrieval_are_good_signs():
    q = score_trace(trace([bash("psql -c 'select count(*) from pg_tables'")]), RULES)
    assert "+ database query" in q.reasons
    assert q.score == pytest.approx(0.55) and q.accepted
    q = score_trace(trace([call("mcp__docs__semantic_search", query="x")]), RULES)
    assert "+ retrieval/RAG query (mcp__docs__semantic_search)" in q.reasons


def test_single_read_with_long_answer_is_below_min_score():
    q = score_trace(trace([read("/a")]), RULES)
    assert q.score == pytest.approx(0.4)
    assert q.reasons == ["- score 0.40 below min_score 0.50"]
    assert not q.accepted


def test_min_score_boundary():
    t = trace([read("/a"), bash("ls")])  # 0.4 + tool chaining 0.1 = 0.5
    assert score_trace(t, RULES).accepted
    assert not score_trace(t, QualityRules(min_score=0.51)).accepted


def test_hard_rejects_are_configurable():
    rules = QualityRules(hard_rejects=["incomplete"])
    q = score_trace(trace(GOOD_CALLS, answer=words(10)), rules)
    assert "- answer under 50 words (10)" in q.reasons  # no "(rejects)"
    assert q.accepted  # 1.2 - 0.2, clamped
    with pytest.raises(ValueError, match="unknown rule 'nope'"):
        QualityRules(hard_rejects=["nope"])


def test_weights_are_configurable():
    rules = QualityRules(weights=QualityWeights(multi_step=0.0, tool_chaining=0.0))
    assert score_trace(trace([read("/a"), read("/b"), bash("ls")]), rules).score == pytest.approx(0.4)


def test_iterative_is_problem_solving():
    q = score_trace(trace([edit("/a"), bash("pytest"), edit("/a")]), RULES)
    assert "+ problem solving (iterates: edit → run → edit, or retries)" in q.reasons


def test_score_is_clamped_to_unit_interval():
    t = trace([], answer="ok", complete=False)
    assert score_trace(t, RULES).score == 0.0


# ----------------------------------------------------------------- analyze


def test_analyze_returns_a_filled_copy():
    t = trace(GOOD_CALLS)
    t.reasoning_signals = ReasoningSignals(tool_sequence=["Read", "Grep", "Edit", "Bash"])
    out = analyze(t, RULES)
    assert out is not t and t.quality is None and t.reasoning_signals.workflow == ""
    assert out.reasoning_signals.workflow == "Read → Grep → Edit → Bash"
    assert out.quality.accepted


def test_analyze_keeps_tool_sequence_without_calls_and_extras_but_not_duplicate_of():
    t = trace([], source="manual")
    t.reasoning_signals = ReasoningSignals(tool_sequence=["Bash"], custom="kept")
    t.quality = Quality(duplicate_of="abc")
    out = analyze(t, RULES)
    assert out.reasoning_signals.tool_sequence == ["Bash"]
    assert out.reasoning_signals.workflow == "Bash"
    assert out.reasoning_signals.model_extra == {"custom": "kept"}
    assert out.quality.duplicate_of is None  # the store decides, on every put


def test_analyze_without_rules_reads_the_config_file(understudy_home):
    understudy_home.mkdir(parents=True)
    (understudy_home / "config.toml").write_text("[quality]\nmin_answer_words = 5\n")
    out = analyze(trace(GOOD_CALLS, answer=words(6)))
    assert out.quality.accepted
    assert not analyze(trace(GOOD_CALLS, answer=words(6)), RULES).quality.accepted


def test_analyze_accepts_a_config_object(understudy_home):
    from capture_daemon.config import load_config

    assert analyze(trace(GOOD_CALLS), load_config()).quality.accepted


# ----------------------------------------------------------------- duplicates


def test_duplicate_key_same_prompt_and_workflow():
    a = trace([read("/a"), bash("pytest")], prompt="Fix   the\nfailing TEST ")
    b = trace([read("/other"), bash("pytest -x")], prompt="fix the failing test")
    assert duplicate_key(a) == duplicate_key(b)
    c = trace([read("/a"), edit("/a")], prompt="fix the failing test")
    d = trace([read("/a"), bash("pytest")], prompt="fix the failing tests")
    assert len({duplicate_key(a), duplicate_key(c), duplicate_key(d)}) == 3
    assert len(duplicate_key(a)) == 32


def test_duplicate_key_ignores_subagent_calls_and_uses_tool_sequence_without_calls():
    a = trace([call("Agent", prompt="p"), read("/x", agent="sub")])
    b = trace([call("Agent", prompt="p")])
    assert duplicate_key(a) == duplicate_key(b)
    m = trace([], source="manual")
    m.reasoning_signals = ReasoningSignals(tool_sequence=["Agent"])
    assert duplicate_key(m) == duplicate_key(b)


def test_long_answer_fixture_is_long_enough():
    assert len(LONG_ANSWER.split()) >= 50


def test_analyze_without_rules_sees_config_changes(understudy_home):
    path = understudy_home / "config.toml"
    understudy_home.mkdir(parents=True)
    path.write_text("[quality]\nmin_answer_words = 5\n")
    assert analyze(trace(GOOD_CALLS, answer=words(6))).quality.accepted
    path.write_text("[quality]\nmin_answer_words = 500\n")
    assert not analyze(trace(GOOD_CALLS, answer=words(6))).quality.accepted
