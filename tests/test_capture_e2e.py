"""End to end: the real Claude Code CLI, understudy's hooks as install.sh registers them,
a scripted Messages API, and the capture daemon as a user runs it.

The sessions run while the daemon is DOWN (events must wait in the spool), then
`capture-daemon start` ingests them, and the assertions read `capture-daemon export`,
field by field. Sessions: several tools in sequence, a failing tool followed by another
approach, parallel calls, a background subagent, a resumed session, a CLI killed
mid-session, and a secret in a tool output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.claude_harness import claude_bin, claude_env, fresh_user, run_claude, write_settings_with_hooks
from tests.daemon_harness import ingest_spool
from tests.daemon_harness import wait_for as _wait_for
from tests.scripted_api import Script, ScriptedAPI, text, thinking, tool

pytestmark = pytest.mark.e2e

CAPTURE_DAEMON = [sys.executable, "-m", "capture_daemon.cli"]
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
OPENAI_KEY = "sk-proj-" + "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp9Oo8Nn7Mm6"
# What a password manager prints: no name, no prefix, no shape; only the command says "secret".
STORED_PASSWORD = "Qm7-horse-Battery-staple"
# What a Rails master key file holds: 32 hex characters; only the file's name says "secret".
MASTER_KEY = "9f2c4e1b7a3d5f60c8e2b4a6d1f3e5c7"
LONG_ANSWER = ("Transformer 1 steps down to 11kV for the local distribution feeders, while transformer 2 "
               "runs at 33kV on the sub-transmission side. They differ in voltage class, in the feeders they "
               "serve and in the protection settings each needs, so their maintenance windows and the crews "
               "qualified to work on them differ too. Nothing else in the notes sets them apart.")
DB_ANSWER = ("The equipment table holds 3 rows: two transformers and one breaker. I counted them with a "
             "COUNT(*) query against grid.db, which is the only database in the project, and the schema "
             "has no other table that records equipment, so that count is the whole inventory as of today, including spares.")
FIX_ANSWER = ("app.py now prints 'hello world'. The first edit fixed the misspelt greeting, running it showed "
              "the wording still differed from what you asked for, so I edited it a second time and ran it "
              "again to confirm the output. No other file needed changing for this fix to be complete.")


def _scripts(project: Path) -> list[Script]:
    notes = str(project / "notes.txt")
    return [
        Script("compare transformer 1 and transformer 2", [
            [text("First I'll list the files, then read the notes, and finally search for every mention."),
             tool("Bash", {"command": "ls", "description": "List files"}, id="toolu_seq_1")],
            [tool("Read", {"file_path": notes}, id="toolu_seq_2")],
            [tool("Grep", {"pattern": "transformer", "path": str(project)}, id="toolu_seq_3")],
            [text(LONG_ANSWER)],
        ]),
        Script("what does the missing config say", [
            [tool("Bash", {"command": "cat missing.cfg", "description": "Read config"}, id="toolu_fail_1")],
            [thinking("The file is not there; search instead."),
             text("Actually, let me search for the setting instead."),
             tool("Grep", {"pattern": "voltage", "path": str(project)}, id="toolu_fail_2")],
            [tool("Read", {"file_path": notes}, id="toolu_fail_3")],
            [text("There is no missing.cfg; the voltages live in notes.txt instead.")],
        ]),
        Script("read both files at once", [
            [text("I'll read both at the same time."),
             tool("Read", {"file_path": notes}, id="toolu_par_1"),
             tool("Bash", {"command": "wc -l notes.txt", "description": "Count lines"}, id="toolu_par_2")],
            [text("Both read: notes.txt has the two voltages.")],
        ]),
        Script("delegate the inspection", [
            [text("I'll hand this to an agent."),
             tool("Agent", {"description": "inspect notes", "prompt": "SUBTASK inspect the notes file",
                            "subagent_type": "general-purpose"}, id="toolu_agent_1")],
            [text("The agent is working on it.")],
        ]),
        Script("SUBTASK inspect the notes file", [
            [tool("Read", {"file_path": notes}, id="toolu_sub_1")],
            [text("The notes give 11kV and 33kV.")],
        ]),
        Script("<task-notification>", [[text("The agent found 11kV and 33kV. Done.")]]),
        Script("first question of the day", [
            [tool("Bash", {"command": "echo first", "description": "first"}, id="toolu_res_1")],
            [text("First answer.")],
        ]),
        Script("follow-up after resuming", [
            [tool("Bash", {"command": "echo second", "description": "second"}, id="toolu_res_2")],
            [text("Second answer.")],
        ]),
        Script("show me the deploy settings", [
            [tool("Bash", {"command": "cat deploy.env", "description": "Show settings"}, id="toolu_sec_1")],
            [tool("Bash", {"command": "./bin/pass show deploy/db", "description": "Read the db password"}, id="toolu_sec_2")],
            [tool("Read", {"file_path": str(project / "config" / "master.key")}, id="toolu_sec_3")],
            [text("The deploy settings hold a GitHub token and an OpenAI key; rotate them.")],
        ]),
        Script("how many equipment rows are in grid.db", [
            [text("I'll query the database directly."),
             tool("Bash", {"command": "python3 -c \"import sqlite3; print(sqlite3.connect('grid.db')"
                                      ".execute('SELECT count(*) FROM equipment').fetchone()[0])\"",
                           "description": "Count equipment rows"}, id="toolu_db_1")],
            [text(DB_ANSWER)],
        ]),
        Script("fix the greeting in app.py", [
            [tool("Read", {"file_path": str(project / "app.py")}, id="toolu_fix_1")],
            [tool("Edit", {"file_path": str(project / "app.py"), "old_string": "helo", "new_string": "hello"}, id="toolu_fix_2")],
            [tool("Bash", {"command": "python3 app.py", "description": "Run it"}, id="toolu_fix_3")],
            [text("Close, but you wanted 'hello world'. Let me fix that."),
             tool("Edit", {"file_path": str(project / "app.py"), "old_string": "hello", "new_string": "hello world"}, id="toolu_fix_4")],
            [tool("Bash", {"command": "python3 app.py", "description": "Run it again"}, id="toolu_fix_5")],
            [text(FIX_ANSWER)],
        ]),
        Script("print a huge listing", [
            [tool("Bash", {"command": "seq 1 60000", "description": "Huge output"}, id="toolu_big_1")],
            [text("That listing is 60000 lines long.")],
        ]),
        Script("this run gets killed", [
            [tool("Bash", {"command": "echo before-kill", "description": "x"}, id="toolu_kill_1")],
            [text("never sent")],
        ], delays={1: 60.0}),
    ]


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    claude_bin()
    root = tmp_path_factory.mktemp("e2e")
    home, uhome, project = root / "home", root / "understudy", root / "project"
    home.mkdir()
    project.mkdir()
    (project / "notes.txt").write_text("transformer 1: 11kV\ntransformer 2: 33kV\n")
    (project / "app.py").write_text("print('helo')\n")
    import sqlite3
    with sqlite3.connect(project / "grid.db") as db:
        db.execute("CREATE TABLE equipment (name TEXT)")
        db.executemany("INSERT INTO equipment VALUES (?)", [("transformer 1",), ("transformer 2",), ("breaker",)])
    (project / "deploy.env").write_text(f"GITHUB_TOKEN={GITHUB_TOKEN}\nOPENAI_API_KEY={OPENAI_KEY}\nREGION=eu-west-1\n")
    (project / "bin").mkdir()
    (project / "bin" / "pass").write_text(f"#!/bin/sh\necho '{STORED_PASSWORD}'\n")  # a stand-in for pass(1)
    (project / "bin" / "pass").chmod(0o755)
    (project / "config").mkdir()
    (project / "config" / "master.key").write_text(MASTER_KEY + "\n")
    uhome.mkdir(mode=0o700)
    (uhome / "config.toml").write_text("[capture]\nidle_timeout_seconds = 3\n")
    write_settings_with_hooks(home)
    env = dict(os.environ, UNDERSTUDY_HOME=str(uhome), HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    results = {}
    with ScriptedAPI(_scripts(project)) as api:
        def claude(prompt, *extra, tools="Bash Read Grep Agent"):
            proc = run_claude(prompt, home=home, understudy_home=uhome, cwd=project, base_url=api.base_url,
                              allowed_tools=tools, extra_args=extra)
            assert proc.returncode == 0, proc.stderr[-2000:]
            return json.loads(proc.stdout)

        for prompt in ("compare transformer 1 and transformer 2", "what does the missing config say",
                       "read both files at once", "delegate the inspection", "show me the deploy settings",
                       "how many equipment rows are in grid.db", "print a huge listing"):
            results[prompt] = claude(prompt)
        results["fix the greeting in app.py"] = claude("fix the greeting in app.py", tools="Bash Read Edit")
        first = claude("first question of the day")
        results["resumed"] = claude("follow-up after resuming", "--resume", first["session_id"])
        results["first question of the day"] = first

        # A CLI killed mid-session: no Stop, no SessionEnd ever comes.
        argv = [str(claude_bin()), "-p", "this run gets killed", "--allowedTools", "Bash", "--output-format", "json"]
        victim = subprocess.Popen(argv, cwd=project, env=claude_env(home, uhome, api.base_url),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        _wait_for(lambda: list((uhome / "spool").glob("*PostToolUse.event")) and any(
            b"before-kill" in p.read_bytes() and b"PostToolUse" in p.name.encode() for p in (uhome / "spool").glob("*.event")),
            60, "the killed session's first tool call")
        # And its transcript has the call's result: the import tests below rebuild this trace from
        # it. Claude Code writes the transcript on its own schedule, after the hook; killed first
        # (seen on a loaded machine), the session left no transcript at all, only the live trace.
        _wait_for(lambda: any(b'"tool_use_id":"toolu_kill_1"' in p.read_bytes()
                              for p in (home / ".claude" / "projects").rglob("*.jsonl")),
                  60, "the killed session's transcript to hold its first tool result")
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()

    pending = list((uhome / "spool").glob("*.event"))
    assert pending, "with the daemon down, events must wait in the spool"
    # Everything but the killed session commits at once; that one after the idle timeout.
    status = ingest_spool(env, uhome)
    export = subprocess.run([*CAPTURE_DAEMON, "export", "--format", "jsonl"], env=env, capture_output=True,
                            timeout=60, check=True).stdout
    traces = [json.loads(line) for line in export.splitlines()]
    return {"traces": {t["prompt"]: t for t in traces}, "all": traces, "raw": export, "results": results,
            "status": status, "project": project, "uhome": uhome, "home": home, "env": env}


def test_one_trace_per_prompt_and_no_notification_trace(captured):
    prompts = [t["prompt"] for t in captured["all"]]
    assert sorted(prompts) == sorted([
        "compare transformer 1 and transformer 2", "what does the missing config say", "read both files at once",
        "delegate the inspection", "show me the deploy settings", "first question of the day",
        "follow-up after resuming", "this run gets killed", "how many equipment rows are in grid.db",
        "fix the greeting in app.py", "print a huge listing"])
    assert not any("<task-notification>" in p for p in prompts)
    assert len({t["trace_id"] for t in captured["all"]}) == len(prompts)
    assert captured["status"]["traces"]["total"] == len(prompts)
    assert captured["status"]["spool"] == {"pending_events": 0, "quarantined": 0, "quarantine": []}


def test_sequence_of_tools(captured):
    t = captured["traces"]["compare transformer 1 and transformer 2"]
    assert t["complete"] is True and t["source"] == "hook"
    assert [c["name"] for c in t["tool_calls"]] == ["Bash", "Read", "Grep"]
    assert [c["tool_use_id"] for c in t["tool_calls"]] == ["toolu_seq_1", "toolu_seq_2", "toolu_seq_3"]
    assert [c["parallel_group"] for c in t["tool_calls"]] == [0, 1, 2]
    bash, read, grep = t["tool_calls"]
    assert bash["input"] == {"command": "ls", "description": "List files"}
    assert "notes.txt" in bash["output"] and bash["success"] is True and bash["error"] is None
    assert read["input"] == {"file_path": str(captured["project"] / "notes.txt")}
    assert "transformer 2: 33kV" in read["output"]
    assert grep["input"]["pattern"] == "transformer" and "notes.txt" in grep["output"]
    assert all(c["agent_id"] is None and isinstance(c["duration_ms"], int) and c["started_at"] for c in t["tool_calls"])
    assert t["final_response"] == LONG_ANSWER
    assert t["assistant_text"] == [{"text": "First I'll list the files, then read the notes, and finally search for every mention.",
                                    "position": 0, "agent_id": None}]
    assert t["model"] == "claude-opus-5-5"
    assert t["usage"]["input_tokens"] == 40 and t["usage"]["output_tokens"] == 80
    assert {"Bash", "Read", "Grep"} <= {tool["name"] for tool in t["tools_offered"]}
    assert all("input_schema" in tool for tool in t["tools_offered"])
    assert t["reasoning_signals"]["tool_sequence"] == ["Bash", "Read", "Grep"]
    assert t["cwd"] == str(captured["project"])
    assert t["started_at"] <= t["ended_at"]
    assert t["session_id"] == captured["results"]["compare transformer 1 and transformer 2"]["session_id"]


def test_failure_then_different_approach(captured):
    t = captured["traces"]["what does the missing config say"]
    assert [c["name"] for c in t["tool_calls"]] == ["Bash", "Grep", "Read"]
    failed = t["tool_calls"][0]
    assert failed["success"] is False and failed["is_interrupt"] is False
    assert "Exit code 1" in failed["error"]
    assert all(c["success"] for c in t["tool_calls"][1:])
    assert t["thinking"] == [{"text": "The file is not there; search instead.", "position": 1, "agent_id": None}]
    assert {"text": "Actually, let me search for the setting instead.", "position": 1, "agent_id": None} in t["assistant_text"]
    assert t["complete"] is True


def test_parallel_calls_share_a_group(captured):
    t = captured["traces"]["read both files at once"]
    assert [(c["tool_use_id"], c["parallel_group"]) for c in t["tool_calls"]] == [("toolu_par_1", 0), ("toolu_par_2", 0)]
    assert t["tool_calls"][1]["output"].strip().startswith("2")
    assert t["final_response"] == "Both read: notes.txt has the two voltages."


def test_background_subagent_belongs_to_its_parent(captured):
    t = captured["traces"]["delegate the inspection"]
    assert t["complete"] is True
    names = [(c["name"], c["agent_id"] is None) for c in t["tool_calls"]]
    assert names == [("Agent", True), ("Read", False)]
    sub_call = t["tool_calls"][1]
    assert sub_call["agent_type"] == "general-purpose" and sub_call["tool_use_id"] == "toolu_sub_1"
    assert "33kV" in sub_call["output"]
    [run] = t["subagents"]
    assert run["agent_id"] == sub_call["agent_id"] and run["complete"] is True
    assert run["spawned_by"] == "toolu_agent_1" and run["prompt"] == "SUBTASK inspect the notes file"
    assert run["final_response"] == "The notes give 11kV and 33kV."
    # The prompt's own answer is the final answer; the reply to the agent's <task-notification>
    # is a later step of the trace, never the answer (issue 12, D3).
    assert t["final_response"] == "The agent is working on it."
    assert {"text": "The agent found 11kV and 33kV. Done.", "position": 2, "agent_id": None} in t["assistant_text"]
    assert {"text": "The notes give 11kV and 33kV.", "position": 2, "agent_id": run["agent_id"]} in t["assistant_text"]
    assert t["reasoning_signals"]["tool_sequence"] == ["Agent"]


def test_resumed_session_gets_new_traces_in_the_same_session(captured):
    first = captured["traces"]["first question of the day"]
    second = captured["traces"]["follow-up after resuming"]
    assert first["session_id"] == second["session_id"]
    assert first["prompt_id"] != second["prompt_id"]
    assert [c["input"]["command"] for c in second["tool_calls"]] == ["echo second"]
    assert second["final_response"] == "Second answer." and second["complete"] is True


def test_killed_cli_gives_an_incomplete_trace(captured):
    t = captured["traces"]["this run gets killed"]
    assert t["complete"] is False and t["incomplete_reason"] == "idle_timeout"
    assert [c["input"]["command"] for c in t["tool_calls"]] == ["echo before-kill"]
    assert t["tool_calls"][0]["output"].strip() == "before-kill"


def test_secrets_never_reach_the_store_or_export(captured):
    assert GITHUB_TOKEN not in captured["raw"].decode() and OPENAI_KEY not in captured["raw"].decode()
    t = captured["traces"]["show me the deploy settings"]
    output = t["tool_calls"][0]["output"]
    assert "REDACTED" in output and "REGION=eu-west-1" in output
    # `pass show` printed a bare password: the command is what makes its output a secret.
    assert t["tool_calls"][1]["output"].strip() == "[REDACTED:command-output]"
    assert STORED_PASSWORD not in captured["raw"].decode()
    # Read of config/master.key: the file's name is what makes its content a secret.
    assert t["tool_calls"][2]["name"] == "Read" and t["tool_calls"][2]["output"].strip() == "[REDACTED:command-output]"
    assert MASTER_KEY not in captured["raw"].decode()
    db = (captured["uhome"] / "traces.db").read_bytes()
    for path in captured["uhome"].glob("traces.db*"):
        data = path.read_bytes()
        assert GITHUB_TOKEN.encode() not in data and OPENAI_KEY.encode() not in data, path
        assert STORED_PASSWORD.encode() not in data and MASTER_KEY.encode() not in data, path
    assert db


def test_hooks_did_not_change_claude_code_behaviour(captured):
    assert captured["results"]["compare transformer 1 and transformer 2"]["result"] == LONG_ANSWER
    assert captured["results"]["resumed"]["result"] == "Second answer."


def _import(env: dict, uhome: Path, source: Path) -> str:
    proc = subprocess.run([*CAPTURE_DAEMON, "import", str(source)], env=dict(env, UNDERSTUDY_HOME=str(uhome)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_import_of_the_same_transcripts_gives_the_same_traces(captured, tmp_path):
    projects = captured["home"] / ".claude" / "projects"
    fresh = tmp_path / "fresh-store"
    _import(captured["env"], fresh, projects)
    export = subprocess.run([*CAPTURE_DAEMON, "export"], env=dict(captured["env"], UNDERSTUDY_HOME=str(fresh)),
                            capture_output=True, timeout=60, check=True).stdout
    imported = {t["trace_id"]: t for t in map(json.loads, export.splitlines())}
    live = {t["trace_id"]: t for t in captured["all"]}
    assert set(imported) == set(live)
    for trace_id, t in live.items():
        i = imported[trace_id]
        assert i["source"] == "import"
        assert i["prompt"] == t["prompt"]
        assert [(c["tool_use_id"], c["name"], c["input"], c["success"], c["agent_id"], c["parallel_group"])
                for c in i["tool_calls"]] == \
               [(c["tool_use_id"], c["name"], c["input"], c["success"], c["agent_id"], c["parallel_group"])
                for c in t["tool_calls"]], t["prompt"]
        assert i["assistant_text"] == t["assistant_text"], t["prompt"]
        if t["complete"]:  # a killed CLI may not have written its last tool result to the transcript
            assert [c["output"] for c in i["tool_calls"]] == [c["output"] for c in t["tool_calls"]], t["prompt"]
            assert i["final_response"] == t["final_response"], t["prompt"]
            assert i["reasoning_signals"] == t["reasoning_signals"], t["prompt"]
            assert i["quality"]["accepted"] == t["quality"]["accepted"], t["prompt"]
    assert not imported[live_id(captured, "this run gets killed")]["complete"]


def live_id(captured, prompt: str) -> str:
    return captured["traces"][prompt]["trace_id"]


def test_import_into_the_live_store_adds_nothing(captured):
    out = _import(captured["env"], captured["uhome"], captured["home"] / ".claude" / "projects")
    assert "imported 0 traces" in out and f"{len(captured['all'])} already stored" in out


def test_import_of_corrupt_transcripts_imports_what_it_can(captured, tmp_path):
    source = tmp_path / "projects" / "-corrupt"
    source.mkdir(parents=True)
    good = next((captured["home"] / ".claude" / "projects").rglob("*.jsonl"))
    lines = good.read_bytes().splitlines(keepends=True)
    broken = lines[:3] + [b"{this is not json\n", b"\x00\xff\xfe binary\n"] + lines[3:] + [b'{"type":"user","partial']
    (source / good.name).write_bytes(b"".join(broken))
    (source / "empty.jsonl").write_bytes(b"")
    (source / "garbage.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n" * 100)
    fresh = tmp_path / "store"
    out = _import(captured["env"], fresh, source.parent)
    assert "imported 1 traces from 3 session files" in out or "imported 2 traces from 3 session files" in out, out
    assert "corrupt lines skipped" in out and not out.startswith("imported 0")


# --- reasoning signals and quality on the real CLI's traces (issue 3) --------------------------

def test_signals_of_a_planned_exploration(captured):
    t = captured["traces"]["compare transformer 1 and transformer 2"]
    s = t["reasoning_signals"]
    assert s["workflow"] == "Bash → Read → Grep"
    assert s["pattern"] == "exploratory" and s["exploration_depth"] in ("moderate", "thorough")
    assert s["explicit_plan"] and s["explicit_plan"].startswith("First I'll list the files")
    assert s["files_read"] == [str(captured["project"] / "notes.txt")]
    assert s["files_changed"] == [] and s["used_database"] is False and s["multi_step_reasoning"] is True
    assert t["quality"]["accepted"] is True, t["quality"]["reasons"]


def test_signals_of_error_recovery(captured):
    s = captured["traces"]["what does the missing config say"]["reasoning_signals"]
    assert s["error_recovery"] is True
    assert [(c["text"], c["position"]) for c in s["self_corrections"]] == [("Actually, let me search for the setting instead.", 1)]


def test_signals_of_parallel_database_subagent_and_iterative_work(captured):
    traces = captured["traces"]
    assert traces["read both files at once"]["reasoning_signals"]["pattern"] == "parallel"
    db = traces["how many equipment rows are in grid.db"]
    assert db["reasoning_signals"]["used_database"] is True and db["quality"]["accepted"] is True, db["quality"]
    assert traces["delegate the inspection"]["reasoning_signals"]["used_subagents"] is True
    fix = traces["fix the greeting in app.py"]
    assert [c["name"] for c in fix["tool_calls"]] == ["Read", "Edit", "Bash", "Edit", "Bash"]
    assert all(c["success"] for c in fix["tool_calls"]) and fix["tool_calls"][-1]["output"].strip() == "hello world"
    assert fix["reasoning_signals"]["pattern"] == "iterative"
    assert fix["reasoning_signals"]["files_changed"] == [str(captured["project"] / "app.py")]
    assert fix["quality"]["accepted"] is True, fix["quality"]["reasons"]


def test_quality_rejects_short_and_incomplete_traces(captured):
    traces = captured["traces"]
    short = traces["follow-up after resuming"]["quality"]
    assert short["accepted"] is False and any("under 50 words" in r for r in short["reasons"])
    killed = traces["this run gets killed"]["quality"]
    assert killed["accepted"] is False and any("incomplete" in r for r in killed["reasons"])
    assert captured["status"]["traces"]["accepted"] == sum(t["quality"]["accepted"] for t in captured["all"])


def test_huge_output_keeps_the_preview_the_model_saw_and_records_the_full_size(captured):
    [call] = captured["traces"]["print a huge listing"]["tool_calls"]
    assert call["output"].startswith("<persisted-output>") and "Preview" in call["output"]
    assert call["output_original_chars"] == len("\n".join(str(i) for i in range(1, 60001))) + 1


def test_excluded_projects_are_never_captured_across_a_cd(tmp_path):
    """exclude_projects through the real CLI: a session that `cd`s into an excluded folder, and
    one that started in an excluded project and `cd`s out (`--add-dir`), leave nothing in the
    store or an import of their transcripts; a prompt elsewhere is captured as usual."""
    claude_bin()
    home, uhome, work, secret, other = (tmp_path / n for n in ("home", "understudy", "work", "secretproj", "other"))
    for folder in (home, work / "private", secret, other):
        folder.mkdir(parents=True)
    (work / "private" / "plan.txt").write_text("PRIVATE-PLAN merger with initech\n")
    (secret / "s.txt").write_text("SECRETPROJ content\n")
    (other / "o.txt").write_text("OTHER-DIR content read from the excluded session\n")
    uhome.mkdir(mode=0o700)
    (uhome / "config.toml").write_text(
        f'[capture]\nidle_timeout_seconds = 3\nexclude_projects = ["{work / "private"}", "{secret}"]\n')
    write_settings_with_hooks(home)
    env = dict(os.environ, UNDERSTUDY_HOME=str(uhome), HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    scripts = [
        Script("look at the private plan", [
            [tool("Bash", {"command": f"cd {work / 'private'} && cat plan.txt", "description": "cd"}, id="toolu_x1")],
            [tool("Bash", {"command": "cat plan.txt", "description": "again"}, id="toolu_x2")],
            [text("The plan mentions a merger.")]]),
        Script("read the secret project", [
            [tool("Bash", {"command": "cat s.txt", "description": "read"}, id="toolu_y1")],
            [tool("Bash", {"command": f"cd {other} && cat o.txt", "description": "cd out"}, id="toolu_y2")],
            [tool("Bash", {"command": "cat o.txt", "description": "again"}, id="toolu_y3")],
            [text("SECRETPROJ answer text.")]]),
        Script("list the work folder", [
            [tool("Bash", {"command": "ls", "description": "list"}, id="toolu_z1")],
            [text("It holds the private folder.")]]),
    ]
    with ScriptedAPI(scripts) as api:
        for prompt, cwd, extra in (("look at the private plan", work, ()),
                                   ("read the secret project", secret, ("--add-dir", str(other))),
                                   ("list the work folder", work, ())):
            proc = run_claude(prompt, home=home, understudy_home=uhome, cwd=cwd, base_url=api.base_url,
                              allowed_tools="Bash", extra_args=extra)
            assert proc.returncode == 0, proc.stderr[-2000:]
    ingest_spool(env, uhome)
    export = subprocess.run([*CAPTURE_DAEMON, "export"], env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert [json.loads(line)["prompt"] for line in export.splitlines()] == ["list the work folder"]
    for leaked in ("PRIVATE-PLAN", "SECRETPROJ", "OTHER-DIR"):
        assert leaked not in export
    # An import of the same transcripts, into a fresh store, decides the same.
    fresh = dict(env, UNDERSTUDY_HOME=str(tmp_path / "imported"))
    (tmp_path / "imported").mkdir(mode=0o700)
    (tmp_path / "imported" / "config.toml").write_text((uhome / "config.toml").read_text())
    imported = subprocess.run([*CAPTURE_DAEMON, "import", str(home / ".claude" / "projects")], env=fresh,
                              capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    assert "prompts of excluded projects left out" in imported.stdout
    export = subprocess.run([*CAPTURE_DAEMON, "export"], env=fresh, capture_output=True, text=True, timeout=60, check=True).stdout
    assert [json.loads(line)["prompt"] for line in export.splitlines()] == ["list the work folder"]
    assert "PRIVATE-PLAN" not in export and "SECRETPROJ" not in export and "OTHER-DIR" not in export


def _world(tmp_path: Path) -> tuple[Path, Path, Path, dict]:
    """(home, understudy home, project, env) of a fresh user: folders made, a 3 s idle timeout."""
    claude_bin()
    return fresh_user(tmp_path)


def test_a_fork_that_starts_with_a_slash_command_adds_no_trace_live_or_imported(tmp_path):
    """`--resume X --fork-session` whose first line is `/compact`: Claude Code copies the history
    into the fork's file under the command's promptId. Live capture, an import, and an import
    after the original file is deleted (Claude Code's cleanup) each hold one trace per prompt."""
    home, uhome, project, env = _world(tmp_path)
    write_settings_with_hooks(home)
    scripts = [Script("fork alpha", [[tool("Bash", {"command": "echo a", "description": "a"}, id="toolu_fa")],
                                     [text("Alpha answer.")]]),
               Script("fork beta", [[tool("Bash", {"command": "echo b", "description": "b"}, id="toolu_fb")],
                                    [text("Beta answer.")]]),
               Script("fork gamma", [[text("Gamma answer.")]])]
    with ScriptedAPI(scripts) as api:
        def claude(prompt, *extra):
            proc = run_claude(prompt, home=home, understudy_home=uhome, cwd=project, base_url=api.base_url,
                              allowed_tools="Bash", extra_args=extra)
            assert proc.returncode == 0, proc.stderr[-2000:]
            return json.loads(proc.stdout)

        original = claude("fork alpha")["session_id"]
        claude("fork beta", "--resume", original)
        fork = claude("/compact", "--resume", original, "--fork-session")["session_id"]
        claude("fork gamma", "--resume", fork)
    assert fork != original
    ingest_spool(env, uhome)

    def prompts(store: Path) -> list[str]:
        out = subprocess.run([*CAPTURE_DAEMON, "export"], env=dict(env, UNDERSTUDY_HOME=str(store)),
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return sorted(json.loads(line)["prompt"] for line in out.splitlines())

    expected = ["fork alpha", "fork beta", "fork gamma"]
    assert prompts(uhome) == expected
    projects = home / ".claude" / "projects"
    _import(env, tmp_path / "imported", projects)
    assert prompts(tmp_path / "imported") == expected
    [original_file] = projects.rglob(f"{original}.jsonl")
    original_file.unlink()
    for store in (uhome, tmp_path / "imported"):
        assert "imported 0 traces" in _import(env, store, projects)
        assert prompts(store) == expected


def test_a_prompt_another_hook_blocks_is_no_trace(tmp_path):
    """A user's own UserPromptSubmit hook that blocks a prompt (JSON `decision: block`, or exit 2),
    say because it holds something that must not leave the machine: Claude Code never runs it,
    and no trace (complete or not) keeps its text; the next prompt is captured as usual."""
    home, uhome, project, env = _world(tmp_path)
    gate = tmp_path / "gate.sh"
    gate.write_text("#!/bin/sh\nin=$(cat)\n"
                    "case \"$in\" in *JSONBLOCK*) echo '{\"decision\": \"block\", \"reason\": \"policy\"}';; "
                    "*EXITBLOCK*) echo 'blocked by policy' >&2; exit 2;; esac\nexit 0\n")
    gate.chmod(0o755)
    settings = write_settings_with_hooks(home)
    data = json.loads(settings.read_text())
    data["hooks"]["UserPromptSubmit"].append({"hooks": [{"type": "command", "command": str(gate)}]})
    settings.write_text(json.dumps(data))
    scripts = [Script("list the files", [[tool("Bash", {"command": "ls", "description": "list"}, id="toolu_ok")],
                                         [text("Nothing much is here.")]])]
    with ScriptedAPI(scripts) as api:
        for prompt in ("JSONBLOCK codename zebra", "EXITBLOCK codename zebra", "list the files"):
            run_claude(prompt, home=home, understudy_home=uhome, cwd=project, base_url=api.base_url,
                       allowed_tools="Bash")
    ingest_spool(env, uhome)
    export = subprocess.run([*CAPTURE_DAEMON, "export"], env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert [json.loads(line)["prompt"] for line in export.splitlines()] == ["list the files"]
    assert "zebra" not in export
    assert not list((uhome / "spool").rglob("*.event"))  # consumed, nothing quarantined


def test_live_trace_keeps_the_input_the_model_sent(tmp_path):
    """The hooks see a call's input as executed: a user's own PreToolUse hook rewrote the
    command (`updatedInput`) and the CLI made relative paths absolute. The trace is of what the
    model did, so live capture keeps the input the model sent, and agrees with an import."""
    home, uhome, project, env = _world(tmp_path)
    (project / "notes.txt").write_text("transformer 1: 11kV\n")
    rewrite = tmp_path / "rewrite.sh"
    rewrite.write_text("#!/bin/sh\nif grep -q REWRITE_ME; then echo '{\"hookSpecificOutput\": {\"hookEventName\": "
                       "\"PreToolUse\", \"permissionDecision\": \"allow\", \"updatedInput\": {\"command\": "
                       "\"echo REWRITTEN-BY-HOOK\", \"description\": \"rewritten\"}}}'; fi\nexit 0\n")
    rewrite.chmod(0o755)
    settings = home / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [
        {"type": "command", "command": str(rewrite)}]}]}}))
    write_settings_with_hooks(home)
    sent = [{"command": "echo REWRITE_ME", "description": "x"}, {"file_path": "notes.txt"},
            {"file_path": "./new.txt", "content": "n\n"}]
    script = Script("run what the hook rewrites", [
        [tool("Bash", sent[0], id="toolu_in_1")], [tool("Read", sent[1], id="toolu_in_2")],
        [tool("Write", sent[2], id="toolu_in_3")], [text("Ran, read and wrote.")]])
    with ScriptedAPI([script]) as api:
        proc = run_claude("run what the hook rewrites", home=home, understudy_home=uhome, cwd=project,
                          base_url=api.base_url, allowed_tools="Bash Read Write")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (project / "new.txt").exists()
    ingest_spool(env, uhome)
    fresh = dict(env, UNDERSTUDY_HOME=str(tmp_path / "imported"))
    subprocess.run([*CAPTURE_DAEMON, "import", str(home / ".claude" / "projects")], env=fresh, capture_output=True,
                   timeout=120, check=True)
    traces = {}
    for name, source in (("live", env), ("import", fresh)):
        export = subprocess.run([*CAPTURE_DAEMON, "export", "--format", "jsonl"], env=source, capture_output=True,
                                timeout=60, check=True).stdout
        [traces[name]] = [json.loads(line) for line in export.splitlines()]
    live, imported = traces["live"], traces["import"]
    assert live["source"] == "hook" and imported["source"] == "import"
    assert [c["input"] for c in live["tool_calls"]] == sent == [c["input"] for c in imported["tool_calls"]]
    assert "REWRITTEN-BY-HOOK" in live["tool_calls"][0]["output"]  # the result is of what ran
    assert live["reasoning_signals"]["files_read"] == imported["reasoning_signals"]["files_read"] == ["notes.txt"]
