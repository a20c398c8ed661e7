"""The quick-start guide's capture API, run exactly as written, in fresh processes.

Each test points UNDERSTUDY_HOME at a temp dir (tests/conftest.py) and runs the code in a
subprocess from a directory outside the checkout, as a user's script would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from capture_daemon.schema import ToolCall, Trace, make_trace_id
from capture_daemon.store import TraceStore

REPO = Path(__file__).resolve().parent.parent

# Verbatim from the quick-start guide (issue 3, "The capture API from the project's quick-start guide").
QUICKSTART = r'''from claude_capture_hook import quick_capture, ClaudeCapturer
quick_capture(prompt="How many equipment tables are in the database?",
              claude_response="There are 357 equipment tables...",
              tool_calls=[("Bash", {"command": "psql -c '\\dt'"}, "357 tables")])
print(ClaudeCapturer().get_trace_count())

from claude_trace_schema import TraceStorage
for trace in TraceStorage().load_traces()[-10:]:
    print(" → ".join(trace.reasoning_signals.tool_sequence))
'''

LONG_RESPONSE = (
    "There are 357 equipment tables in the public schema. I counted them with a query on "
    "pg_tables after the first attempt on information_schema was refused for lack of permission. "
    "They all follow the equipment_ naming scheme, and the largest of them holds the raw sensor "
    "readings, one row per sensor per minute, which is why it dominates the schema's size."
)


def stored() -> list[Trace]:
    with TraceStore.open() as store:
        return list(store.iter_traces())


def run(args, cwd, stdin=None):
    env = dict(os.environ)  # carries the temp UNDERSTUDY_HOME and HOME from conftest
    env["PYTHONIOENCODING"] = "utf-8"
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, input=stdin, capture_output=True,
                          text=True, encoding="utf-8", timeout=120)


def test_quickstart_snippet_runs_as_written(tmp_path, understudy_home):
    script = tmp_path / "quickstart.py"
    script.write_text(QUICKSTART, encoding="utf-8")
    proc = run([str(script)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "1\nBash\n"

    [trace] = stored()
    assert trace.source == "manual" and trace.complete
    assert trace.prompt == "How many equipment tables are in the database?"
    assert trace.tool_calls[0].input == {"command": "psql -c '\\dt'"}
    assert trace.tool_calls[0].output == "357 tables"
    assert trace.reasoning_signals.used_database is True
    assert trace.quality.reasons == ["+ database query", "- answer under 50 words (5) (rejects)"]

    # Running it again captures the same interaction: stored once.
    proc = run([str(script)], cwd=tmp_path)
    assert proc.stdout == "1\nBash\n"


def test_load_traces_sees_hook_traces_too_oldest_first(tmp_path, understudy_home):
    from datetime import datetime, timezone

    from claude_capture_hook import quick_capture
    from claude_trace_schema import TraceStorage

    hook = Trace(trace_id=make_trace_id("s", "p"), session_id="s", prompt_id="p", prompt="from the hooks",
                 final_response="ok", complete=True, started_at=datetime(2020, 1, 1, tzinfo=timezone.utc),
                 tool_calls=[ToolCall(tool_use_id="t1", name="Read", input={"file_path": "/a"})])
    with TraceStore.open() as store:
        store.put(hook)
    quick_capture("manual one", LONG_RESPONSE, [("Grep", "equipment"), ("Read", "/db/schema.sql", "...")])
    traces = TraceStorage().load_traces()
    assert [t.prompt for t in traces] == ["from the hooks", "manual one"]
    assert traces[-1].reasoning_signals.tool_sequence == ["Grep", "Read"]
    assert traces[-1].tool_calls[0].input == {"pattern": "equipment"}
    assert TraceStorage().count() == 2


GUIDED_INPUT = f"""How many equipment tables are in the database?

> I'll start by listing the tables, then count the equipment ones.
Bash: psql -c '\\dt'
357 tables

Bash: psql -tc "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'equipment%'"
ERROR: permission denied for schema information_schema

> That didn't work, let me query pg_tables instead.
Bash: psql -tc "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'equipment%'"
357


{LONG_RESPONSE}
.
"""


def test_guided_capture_from_stdin(tmp_path, understudy_home):
    proc = run(["-m", "claude_capture_hook"], cwd=tmp_path, stdin=GUIDED_INPUT)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Captured." in out
    assert "workflow   Bash → Bash → Bash" in out
    assert "database   yes   subagents no   error recovery yes" in out
    assert "plan       I'll start by listing the tables, then count the equipment ones." in out
    assert "corrects   after call 2: That didn't work, let me query pg_tables instead." in out
    assert "quality    accepted" in out
    assert "1 trace stored, 1 accepted." in out

    [trace] = stored()
    assert [c.success for c in trace.tool_calls] == [True, False, True]
    assert trace.tool_calls[1].error == "permission denied for schema information_schema"
    assert [(t.position, t.text) for t in trace.assistant_text] == [
        (0, "I'll start by listing the tables, then count the equipment ones."),
        (2, "That didn't work, let me query pg_tables instead."),
    ]
    assert trace.final_response == LONG_RESPONSE
    assert [c.parallel_group for c in trace.tool_calls] == [0, 1, 2]
    assert trace.reasoning_signals.pattern == "linear"


def test_guided_capture_signals_from_the_response_alone(tmp_path, understudy_home):
    response = ("First I ran psql to list the tables, then I counted them with "
                "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'equipment%'. There are 357.")
    stdin = f"How many equipment tables are there?\n\n\nFirst I'll list the tables with psql, then count them.\n{response}\n"
    proc = run(["-m", "claude_capture_hook"], cwd=tmp_path, stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    [trace] = stored()
    s = trace.reasoning_signals
    assert trace.tool_calls == [] and s.tool_sequence == []
    assert s.used_database is True
    assert s.explicit_plan == "First I'll list the tables with psql, then count them."
    assert "- unclear tool usage: no tool calls" in trace.quality.reasons


@pytest.mark.parametrize("stdin,message", [
    ("", "nothing captured: no prompt given"),
    ("a prompt\n\nnot a tool line\n\n\nanswer\n", "expected `Tool: input`"),
])
def test_guided_capture_bad_input(tmp_path, understudy_home, stdin, message):
    proc = run(["-m", "claude_capture_hook"], cwd=tmp_path, stdin=stdin)
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (understudy_home / "traces.db").exists()


def test_capturer_step_by_step_and_secrets_redacted(understudy_home):
    from claude_capture_hook import ClaudeCapturer

    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    c = ClaudeCapturer()
    c.start("Why does the deploy fail?")
    c.log_text("I'll read the deploy config, then fix the token.")
    c.log_tool_call("Read", "deploy.env", f"GITHUB_TOKEN={token}")
    c.log_tool_call("Edit", {"file_path": "deploy.env", "old_string": "a", "new_string": "b"})
    c.log_tool_call("Bash", "./deploy.sh --dry-run", "ok")
    trace = c.finish(LONG_RESPONSE)
    assert trace.reasoning_signals.workflow == "Read → Edit → Bash"
    assert trace.reasoning_signals.files_changed == ["deploy.env"]
    assert trace.quality.accepted
    assert token not in (understudy_home / "traces.db").read_bytes().decode("latin-1")
    assert c.get_trace_count() == 1 and c.get_trace_count(accepted=True) == 1
    with pytest.raises(RuntimeError):
        c.finish("again")


def test_demo_shows_a_capture_and_stores_nothing(understudy_home):
    proc = run(["demo_workflow_capture.py"], cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for heading in ("1. The capture", "2. Reasoning signals and quality verdict", "3. For contrast",
                    "4. What the model learns"):
        assert heading in out
    assert "quality    accepted" in out and "+ error recovery" in out and "- one-word answer (rejects)" in out
    assert "--- assistant" in out or "trainer is not importable" in out
    assert not (understudy_home / "traces.db").exists()
