"""Unit cases for each reasoning signal at its edges (definitions: capture_daemon/signals.py)."""

from __future__ import annotations

import pytest

from capture_daemon.schema import TextStep
from capture_daemon.signals import SignalRules, classify_bash, compute_signals, find_self_corrections
from tests.trace_builders import bash, call, edit, read, trace


def sig(*args, rules=None, **kw):
    return compute_signals(trace(*args, **kw), rules)


# ----------------------------------------------------------------- sequence, steps


def test_tool_sequence_and_workflow_are_main_agent_only():
    s = sig([read("/a.py"), call("Agent", prompt="look", subagent_type="Explore"),
             call("Grep", pattern="x", agent="sub1"), bash("pytest -q")])
    assert s.tool_sequence == ["Read", "Agent", "Bash"]
    assert s.workflow == "Read → Agent → Bash"


def test_reasoning_steps_counts_calls_plus_gaps_with_narration():
    calls = [read("/a.py"), read("/b.py"), bash("pytest")]
    # narration before call 1 (two text blocks in one gap: counted once), between 2 and 3,
    # and the final answer after the last call (not narration).
    answer = "The tests pass now. " * 10
    s = sig(calls, texts=[(0, "I'll read the files."), (0, "Starting with a.py."), (2, "Now the tests."),
                          (3, answer)], answer=answer)
    assert s.reasoning_steps == 3 + 2


def test_reasoning_steps_ignores_subagent_narration_and_maps_positions_to_main_gaps():
    calls = [call("Agent", prompt="p"), call("Grep", pattern="x", agent="sub"), read("/a.py")]
    t = trace(calls, texts=[(2, "The agent is done; reading a.py.")])
    t.assistant_text.append(TextStep(text="sub narration", position=1, agent_id="sub"))
    s = compute_signals(t)
    # position 2 counts the subagent's Grep: it is main gap 1 (between Agent and Read).
    assert s.reasoning_steps == 2 + 1
    assert s.multi_step_reasoning is True  # 2 distinct tools with narration between


def test_final_answer_split_into_blocks_is_not_narration():
    answer = "Part one of the answer.\n\nPart two of the answer."
    s = sig([read("/a.py")], texts=[(1, "Part one of the answer."), (1, "Part two of the answer.")], answer=answer)
    assert s.reasoning_steps == 1


# ----------------------------------------------------------------- exploration


@pytest.mark.parametrize("n_reads,depth", [(0, "minimal"), (1, "minimal"), (2, "moderate"), (4, "moderate"),
                                           (5, "thorough"), (8, "thorough")])
def test_exploration_depth_thresholds(n_reads, depth):
    calls = [read(f"/f{i}.py") for i in range(n_reads)] + [edit("/f0.py"), read("/after.py")]
    assert sig(calls).exploration_depth == depth


def test_exploration_counts_searches_and_read_only_bash_but_not_runs():
    calls = [call("Grep", pattern="x"), call("Glob", pattern="*.py"), bash("git log --oneline | head"),
             bash("pytest -q"), call("WebSearch", query="q"), edit("/a.py")]
    assert sig(calls).exploration_depth == "moderate"  # 4 reads; pytest is neither
    calls.insert(0, bash("ls -la && cat README.md"))
    assert sig(calls).exploration_depth == "thorough"


def test_exploration_stops_at_a_mutating_bash():
    calls = [read("/a"), read("/b"), bash("rm -rf build"), read("/c"), read("/d"), read("/e")]
    assert sig(calls).exploration_depth == "moderate"


def test_exploration_without_a_change_counts_until_the_answer():
    assert sig([read(f"/{i}") for i in range(5)]).exploration_depth == "thorough"


def test_exploration_thresholds_are_configurable():
    rules = SignalRules(exploration_moderate=1, exploration_thorough=3)
    assert sig([read("/a")], rules=rules).exploration_depth == "moderate"
    assert sig([read("/a"), read("/b"), read("/c")], rules=rules).exploration_depth == "thorough"


def test_no_main_calls_means_no_depth_and_no_pattern():
    s = sig([])
    assert s.exploration_depth is None and s.pattern is None and s.patterns == []
    assert s.reasoning_steps == 0 and s.workflow == ""


def test_explore_subagent_counts_as_exploration():
    calls = [call("Agent", prompt="find it", subagent_type="Explore"), read("/a"), edit("/a")]
    assert sig(calls).exploration_depth == "moderate"


# ----------------------------------------------------------------- patterns


def test_exploratory_needs_three_reads_before_acting():
    assert "exploratory" not in sig([read("/a"), read("/b"), edit("/a")]).patterns
    s = sig([read("/a"), call("Grep", pattern="x"), read("/b"), edit("/a")])
    assert s.patterns == ["exploratory"] and s.pattern == "exploratory"


def test_parallel_needs_two_main_calls_in_one_group():
    s = sig([read("/a", group=0), bash("pytest", group=1)])
    assert "parallel" not in s.patterns and s.pattern == "linear"
    s = sig([read("/a", group=0), read("/b", group=0), bash("pytest", group=1)])
    assert s.pattern == "parallel"


def test_parallel_ignores_subagent_calls_sharing_a_group_number():
    s = sig([read("/a", group=0), read("/b", group=0, agent="sub")])
    assert "parallel" not in s.patterns


def test_iterative_edit_run_edit():
    s = sig([edit("/a.py"), bash("pytest -q"), edit("/a.py")])
    assert s.pattern == "iterative"
    # a read-only Bash between edits is not a run
    assert "iterative" not in sig([edit("/a.py"), bash("cat a.py"), edit("/b.py")]).patterns
    # edit then run without a second edit
    assert "iterative" not in sig([edit("/a.py"), bash("pytest -q")]).patterns


def test_iterative_retry_of_a_failed_call():
    s = sig([bash("npm test", success=False), bash("npm test")])
    assert s.pattern == "iterative"
    assert s.error_recovery is False


def test_linear_otherwise():
    s = sig([read("/a"), edit("/a"), bash("pytest")])
    assert s.patterns == ["linear"] and s.pattern == "linear"


def test_pattern_precedence_iterative_parallel_exploratory():
    calls = [read("/a", group=0), read("/b", group=0), read("/c", group=0),
             edit("/a"), bash("pytest"), edit("/a")]
    s = sig(calls)
    assert s.patterns == ["iterative", "parallel", "exploratory"]
    assert s.pattern == "iterative"
    assert sig(calls[:3] + [edit("/a")]).pattern == "parallel"


# ----------------------------------------------------------------- multi-step


def test_multi_step_reasoning_edges():
    assert sig([read("/a"), read("/b"), read("/c")]).multi_step_reasoning is True
    assert sig([read("/a"), bash("ls")]).multi_step_reasoning is False
    # 2 distinct tools, narration between them
    assert sig([read("/a"), bash("pytest")], texts=[(1, "Now run it.")]).multi_step_reasoning is True
    # same tool twice with narration between: not enough
    assert sig([read("/a"), read("/b")], texts=[(1, "And b.")]).multi_step_reasoning is False
    # narration only before the first call is not "between"
    assert sig([read("/a"), bash("pytest")], texts=[(0, "Let me look.")]).multi_step_reasoning is False


# ----------------------------------------------------------------- database


@pytest.mark.parametrize("command", [
    "psql -c '\\dt'",
    "PGPASSWORD=x psql -h localhost -U app -c 'select 1'",
    "sqlite3 app.db .tables",
    "mysql -u root -e 'show databases'",
    "mongosh --eval 'db.users.find()'",
    "redis-cli GET key",
    "duckdb data.duckdb",
    "docker exec -it db psql -U postgres",
    "echo 'SELECT id, name FROM users WHERE id = 1' | some-client",
    "cat <<EOF | client\nINSERT INTO users (id) VALUES (1);\nEOF",
    "run-query 'CREATE TABLE t (id int)'",
    "python -c 'import sqlite3; print(sqlite3.connect(\"a.db\").execute(\"select 1\").fetchall())'",
    "python3 - <<'EOF'\nimport psycopg2\nEOF",
    "tool 'select count(*) from equipment'",
])
def test_database_detected_in_bash(command):
    assert classify_bash(command).database, command
    assert sig([bash(command)]).used_database


@pytest.mark.parametrize("command", [
    "echo 'Make a selection from the menu'",
    "echo 'select an option from the menu'",
    "grep -rn psql docs/",
    "pip install psycopg2-binary",
    "cat db.py",
    "ls *.sqlite3",
    "git log --grep 'update settings'",
])
def test_database_not_detected(command):
    assert not sig([bash(command)]).used_database, command


@pytest.mark.parametrize("name,db", [
    ("mcp__postgres__query", True),
    ("mcp__supabase__execute_sql", True),
    ("mcp__sqlite__read_query", True),
    ("mcp__bigquery__run", True),
    ("mcp__snowflake__run", True),
    ("mcp__my-db__run", True),
    ("mcp__feedback__send", False),
    ("mcp__github__get_issue", False),
])
def test_database_mcp_tools(name, db):
    assert sig([call(name, q="x")]).used_database is db


def test_database_mcp_tool_by_sql_input():
    assert sig([call("mcp__warehouse__run", statement="SELECT a FROM b")]).used_database
    assert not sig([call("mcp__warehouse__run", statement="selection from the menu")]).used_database


def test_database_used_by_a_subagent_counts():
    assert sig([call("Agent", prompt="p"), bash("psql -c 'select 1'", agent="sub")]).used_database


# ----------------------------------------------------------------- bash classes


@pytest.mark.parametrize("command,read_only,mutating", [
    ("cat a.py | head -20", True, False),
    ("git status && git diff", True, False),
    ("git log -p -- src", True, False),
    ("find . -name '*.py' | xargs grep foo", True, False),
    ("ls -la 2>/dev/null", True, False),
    ("cd src && rg TODO", True, False),
    ("sed -n 1,20p a.py", True, False),
    ("pytest -q", False, False),
    ("python script.py", False, False),
    ("echo hi", False, False),
    ("echo hi > out.txt", False, True),
    ("sed -i 's/a/b/' f", False, True),
    ("git commit -m x", False, True),
    ("git branch -D old", False, True),
    ("pip install requests", False, True),
    ("uv pip install requests", False, True),
    ("python -m pip install x", False, True),
    ("npm install", False, True),
    ("mkdir -p build && cp a b", False, True),
    ("find . -name '*.pyc' -delete", False, True),
    ("cat > f.py <<'EOF'\nif a > b:\n    pass\nEOF", False, True),
])
def test_bash_classes(command, read_only, mutating):
    info = classify_bash(command)
    assert (info.read_only, info.mutating) == (read_only, mutating)


def test_heredoc_body_is_not_a_redirect():
    assert classify_bash("cat > f.py <<'EOF'\nif a > b:\n    pass\nEOF").redirect_targets == ["f.py"]


# ----------------------------------------------------------------- subagents, files


def test_used_subagents():
    assert sig([call("Agent", prompt="p", subagent_type="general-purpose")]).used_subagents
    assert sig([call("Task", prompt="p")]).used_subagents
    assert not sig([read("/a")]).used_subagents


def test_files_read_and_changed_deduplicated_in_order_successful_only():
    calls = [read("/b.py"), read("/a.py"), read("/b.py"), read("/missing.py", success=False),
             edit("/a.py"), call("Write", file_path="/c.py", content="x"), edit("/a.py"),
             edit("/nope.py", success=False), call("MultiEdit", file_path="/d.py", edits=[]),
             call("NotebookEdit", notebook_path="/n.ipynb", new_source="x"),
             bash("python gen.py > out.txt 2>&1"), read("/z.py", agent="sub")]
    s = sig(calls)
    assert s.files_read == ["/b.py", "/a.py", "/z.py"]
    assert s.files_changed == ["/a.py", "/c.py", "/d.py", "/n.ipynb", "out.txt"]


# ----------------------------------------------------------------- plans


@pytest.mark.parametrize("text,plan", [
    ("I'll start by reading the config file, then run the tests.",
     "I'll start by reading the config file, then run the tests."),
    ("Let me start by checking the schema and then query the table.",
     "Let me start by checking the schema and then query the table."),
    ("I see. First, I'll check the logs. Then I'll fix the parser. Finally, I'll run the tests. Let's go.",
     "First, I'll check the logs. Then I'll fix the parser. Finally, I'll run the tests."),
    ("My plan: reproduce the bug, patch the parser, add a test.",
     "My plan: reproduce the bug, patch the parser, add a test."),
    ("Here's my plan:\n1. Read the config\n2. Fix the bug\n3. Run the tests\n\nStarting now.",
     "Here's my plan:\n1. Read the config\n2. Fix the bug\n3. Run the tests"),
    ("To fix this:\n1) Update the schema\n2) Migrate the data",
     "To fix this:\n1) Update the schema\n2) Migrate the data"),
    ("I'll do the following:\n- read the failing test\n- fix the code",
     "I'll do the following:\n- read the failing test\n- fix the code"),
    ("Steps: 1. read the file 2. fix it", "Steps: 1. read the file 2. fix it"),
    ("I'll read the config, next I'll update the defaults.",
     "I'll read the config, next I'll update the defaults."),
    ("**My plan:** read it, then fix it.", "My plan: read it, then fix it."),
])
def test_plan_phrasings(text, plan):
    assert sig([read("/a")], texts=[(0, text)]).explicit_plan == plan


@pytest.mark.parametrize("text", [
    "Let me read the file.",
    "I'll run the tests now.",
    "Let me look at the next file.",
    "If the test fails then I'll fix it.",
    "The function first validates the input, then returns it.",
    "First, I need to understand the structure.",
    "Found it: the timeout is 30 seconds.",
    "The plan file is missing.",
])
def test_non_plans(text):
    assert sig([read("/a")], texts=[(0, text)]).explicit_plan is None


def test_plan_between_calls_and_first_one_wins():
    s = sig([read("/a"), read("/b")], texts=[(1, "Now I'll fix a.py, then run the tests."),
                                             (2, "Next I'll update b and then the docs.")])
    assert s.explicit_plan == "Now I'll fix a.py, then run the tests."


def test_plan_in_the_final_answer_does_not_count():
    answer = "First, I'll check the logs, then fix the bug. " * 6
    assert sig([read("/a")], texts=[(1, answer)], answer=answer).explicit_plan is None


def test_plan_from_todowrite_when_narration_has_none():
    todos = [{"content": "Read the config", "status": "pending", "activeForm": "Reading"},
             {"content": "Fix the bug", "status": "pending", "activeForm": "Fixing"}]
    s = sig([call("TodoWrite", todos=todos), read("/a")])
    assert s.explicit_plan == "1. Read the config\n2. Fix the bug"
    assert sig([call("TodoWrite", todos=todos[:1])]).explicit_plan is None


# ----------------------------------------------------------------- self-corrections


def test_self_corrections_with_positions():
    calls = [read("/a"), bash("pytest", success=False), bash("python -m pytest")]
    s = sig(calls, texts=[(0, "Let me read a."), (1, "Actually, let me run the tests first."),
                          (2, "That didn't work, let me try python -m pytest.")])
    assert [(c.position, c.text) for c in s.self_corrections] == [
        (1, "Actually, let me run the tests first."),
        (2, "That didn't work, let me try python -m pytest."),
    ]


@pytest.mark.parametrize("text", [
    "Wait, the config is loaded twice.",
    "On second thought, the cache is the problem.",
    "I made a mistake in the regex.",
    "Hmm, wait — that's the old file.",
    "Oops, wrong directory.",
    "Let me try a different approach.",
    "Let me use Grep instead.",
    "I misread the error.",
    "That's not right.",
])
def test_self_correction_phrasings(text):
    assert find_self_corrections(text) == [text]


@pytest.mark.parametrize("text", [
    "This actually works now.",
    "Wait for the build to finish before running.",
    "The test failed with a KeyError.",
    "Let me read the file.",
])
def test_not_self_corrections(text):
    assert find_self_corrections(text) == []


def test_self_correction_in_final_answer_is_not_counted():
    answer = "Actually, the answer is 42. " * 10
    assert sig([read("/a")], texts=[(1, answer)], answer=answer).self_corrections == []


# ----------------------------------------------------------------- error recovery


def test_failure_followed_by_the_same_command_is_no_recovery():
    s = sig([bash("cat /etc/app.conf", success=False), bash("cat /etc/app.conf")])
    assert s.error_recovery is False


def test_failure_followed_by_a_different_command_is_recovery():
    s = sig([bash("cat /etc/app.conf", success=False), bash("find /etc -name 'app*.conf'")])
    assert s.error_recovery is True
    assert "iterative" not in s.patterns


def test_failure_followed_by_a_different_tool_is_recovery():
    assert sig([read("/missing.py", success=False), call("Glob", pattern="**/*.py")]).error_recovery


def test_failure_followed_by_a_different_failure_is_no_recovery():
    assert not sig([read("/missing.py", success=False), call("Glob", pattern="x", success=False)]).error_recovery


def test_subagent_failures_do_not_count():
    assert not sig([call("Agent", prompt="p"), bash("x", success=False, agent="s"), read("/a")]).error_recovery


# ----------------------------------------------------------------- manual, purity


def test_manual_trace_without_calls_reads_the_answer():
    answer = "First I'll list the tables with psql, then count them. SELECT count(*) FROM pg_tables."
    s = compute_signals(trace([], answer=answer, source="manual"))
    assert s.explicit_plan is not None and s.used_database
    # the same answer from a hook trace: an answer is not narration
    s = compute_signals(trace([], answer=answer, source="hook"))
    assert s.explicit_plan is None and not s.used_database


def test_deterministic_and_pure():
    t = trace([read("/a"), bash("pytest", success=False), bash("python -m pytest")],
              texts=[(0, "I'll read a, then test.")])
    before = t.model_dump()
    assert compute_signals(t) == compute_signals(t)
    assert t.model_dump() == before


def test_large_trace_stays_fast():
    # difflib is quadratic: long inputs must be compared by their ends only.
    import time

    content = "x = 1\n" * 20000
    calls = []
    for i in range(60):
        calls += [call("Write", file_path=f"/f{i}.py", content=content + str(i), success=i % 3 != 0),
                  bash(f"pytest tests/test_{i}.py " + "-v " * 200, success=False)]
    start = time.perf_counter()
    s = sig(calls)
    assert time.perf_counter() - start < 2.0
    assert "iterative" in s.patterns


@pytest.mark.parametrize("first,second,retry", [
    ("pytest tests/", "pytest tests/ -x", True),
    ("npm test", "npm test", True),
    ("psql -tc \"SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'equipment%'\"",
     "psql -tc \"SELECT count(*) FROM pg_tables WHERE tablename LIKE 'equipment%'\"", False),
    ("cat /etc/app.conf", "find /etc -name 'app*.conf'", False),
])
def test_retry_or_different_approach(first, second, retry):
    s = sig([bash(first, success=False), bash(second)])
    assert ("iterative" in s.patterns) is retry
    assert s.error_recovery is not retry


def test_what_the_user_asked_for_mid_turn_is_no_self_correction_or_recovery():
    """A message the user sent mid-turn ("use the staging db instead") changes the course; the
    narration answering it and the new approach are the user's correction, not the model's."""
    from capture_daemon.schema import MidTurnMessage

    calls = [bash("psql prod -c 'select 1'", success=False), call("Grep", pattern="staging"), read("/notes")]
    texts = [(1, "Actually, let me use the staging db instead, as you asked."), (2, "Wait, the notes say more.")]
    told = [MidTurnMessage(text="use the staging db instead", position=1)]
    steered = sig(calls, texts=texts, mid_turn_messages=told)
    assert [c.text for c in steered.self_corrections] == ["Wait, the notes say more."]
    assert steered.error_recovery is False
    # The same trace without the message: the model's own correction and recovery.
    alone = sig(calls, texts=texts)
    assert len(alone.self_corrections) == 2 and alone.error_recovery is True
    # A recovery the model made before the user spoke is still its own.
    early = sig(calls, mid_turn_messages=[MidTurnMessage(text="thanks", position=2)])
    assert early.error_recovery is True
