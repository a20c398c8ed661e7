"""The Claude Code version matrix (issue 12): the same scripted sessions driven through real
CLI versions, each captured live by the hooks + daemon and imported from its own
transcripts; the two must give the same traces, with the same ids.

Versions (installed by test.sh into .tools/claude-code-<version>, the pinned one into
.tools/claude-code):

* 2.0.0   the oldest 2.0.x; no `promptId` in transcripts, no prompt_id / tool_use_id /
          last_assistant_message in hook payloads; subagents are `Task` calls, run in
          the foreground; knows no PostToolUseFailure or SubagentStart hook;
* 2.1.42  a 2.1.x before `promptId`: no prompt_id in hooks or transcripts, but tool_use_id;
          `Task` with run_in_background reports back by `<task-notification>`;
* pinned  (test.sh's claude_version) `promptId` everywhere, `Agent` tool.

2.1.332 (the newest on npm when checked) is no entry of its own: the same sessions give it the
same hook events and payload keys as 2.1.328 (it knows one more event, PreSkillShellCommand,
which understudy does not register), its transcripts only add `rowSource` and `sentAtMs` to user
rows (and `thread`, `echoWireToolInputs` to `api-request` rows, which are not read), and the
end-to-end suites pass on it as the pinned arm (UNDERSTUDY_CLAUDE_BIN).

A few sessions per version (sequence, failure, parallel calls, a subagent, a resumed
session compacted by `/compact` in between: a slash command, never a trace, and a fork of
that session into a new file), so the whole
matrix takes about two minutes. Marked e2e (CI runs it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.claude_harness import claude_env, fresh_user, installed_claude
from tests.daemon_harness import exported_traces, ingest_spool
from tests.scripted_api import Script, ScriptedAPI, text, tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CAPTURE_DAEMON = [sys.executable, "-m", "capture_daemon.cli"]
# version → (folder under .tools, agent tool name, background agents?)
MATRIX = {
    "2.0.0": ("claude-code-2.0.0", "Task", False),
    "2.1.42": ("claude-code-2.1.42", "Task", True),
    "pinned": ("claude-code", "Agent", True),
}
NOTES = "transformer 1: 11kV\ntransformer 2: 33kV\n"
ANSWER = ("Transformer 1 steps down to 11kV for the local feeders while transformer 2 runs at 33kV on the "
          "sub-transmission side, so their protection settings, maintenance windows and qualified crews differ; "
          "nothing else in the notes sets them apart, and both are listed as in service today.")


def _scripts(project: Path, agent_tool: str, background: bool) -> list[Script]:
    notes = str(project / "notes.txt")
    agent_input = {"description": "inspect notes", "prompt": "MATRIX SUBTASK inspect the notes file",
                   "subagent_type": "general-purpose"}
    if background:
        agent_input["run_in_background"] = True
    return [
        Script("matrix compare the transformers", [
            [text("First I'll list the files, then read the notes."),
             tool("Bash", {"command": "ls", "description": "List files"}, id="toolu_m_seq_1")],
            [tool("Read", {"file_path": notes}, id="toolu_m_seq_2")],
            [text(ANSWER)],
        ]),
        Script("matrix read the missing config", [
            [tool("Bash", {"command": "cat missing.cfg", "description": "Read config"}, id="toolu_m_fail_1")],
            [text("Let me read the notes instead."), tool("Read", {"file_path": notes}, id="toolu_m_fail_2")],
            [text("There is no missing.cfg; the voltages live in notes.txt.")],
        ]),
        Script("matrix read both at once", [
            [tool("Read", {"file_path": notes}, id="toolu_m_par_1"),
             tool("Bash", {"command": "wc -l notes.txt", "description": "Count lines"}, id="toolu_m_par_2")],
            [text("Both read.")],
        ]),
        Script("matrix delegate the inspection", [
            [text("I'll hand this to an agent."), tool(agent_tool, agent_input, id="toolu_m_agent_1")],
            [text("The agent is on it.")],
        ]),
        Script("MATRIX SUBTASK inspect the notes file", [
            [tool("Read", {"file_path": notes}, id="toolu_m_sub_1")],
            [text("The notes give 11kV and 33kV.")],
        ]),
        Script("<task-notification>", [[text("The agent reported 11kV and 33kV.")]]),
        Script("matrix first question", [
            [tool("Bash", {"command": "echo first", "description": "first"}, id="toolu_m_res_1")],
            [text("First answer.")],
        ]),
        Script("matrix follow-up after resuming", [
            [tool("Bash", {"command": "echo second", "description": "second"}, id="toolu_m_res_2")],
            [text("Second answer.")],
        ]),
        Script("matrix forked question", [[text("Forked answer.")]]),
    ]


PROMPTS = ["matrix compare the transformers", "matrix read the missing config", "matrix read both at once",
           "matrix delegate the inspection", "matrix first question", "matrix follow-up after resuming",
           "matrix forked question"]


def _register_hooks(home: Path, version: str) -> None:
    """As a user of that version would: `capture-daemon hooks install`, which asks the
    `claude` on PATH for its version (2.0.x runs no hook at all when the block names an event
    it does not know, so two are left out for it)."""
    binary = installed_claude(MATRIX[version][0])
    env = dict(os.environ, HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"),
               PATH=f"{binary.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run([*CAPTURE_DAEMON, "hooks", "install"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    registered = set(json.loads((home / ".claude" / "settings.json").read_text())["hooks"])
    old = version.startswith("2.0.")
    assert ("PostToolUseFailure" in registered) is not old and ("does not know" in proc.stdout) is old


@pytest.fixture(scope="module", params=list(MATRIX))
def version_run(request, tmp_path_factory):
    version = request.param
    binary = installed_claude(MATRIX[version][0])
    _, agent_tool, background = MATRIX[version]
    root = tmp_path_factory.mktemp(f"cc-{version}")
    home, uhome, project, env = fresh_user(root)
    (project / "notes.txt").write_text(NOTES)
    _register_hooks(home, version)
    tools = f"Bash Read Grep {agent_tool}"
    results = {}
    with ScriptedAPI(_scripts(project, agent_tool, background)) as api:
        def claude(prompt, *extra):
            proc = subprocess.run([str(binary), "-p", prompt, "--allowedTools", tools, "--output-format", "json", *extra],
                                  cwd=project, env=claude_env(home, uhome, api.base_url), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr[-2000:]
            return json.loads(proc.stdout)

        for prompt in PROMPTS[:4]:
            results[prompt] = claude(prompt)
        first = claude(PROMPTS[4])
        claude("/compact", "--resume", first["session_id"])  # a slash command, and compaction
        results[PROMPTS[5]] = claude(PROMPTS[5], "--resume", first["session_id"])
        results[PROMPTS[4]] = first
        # A fork copies the history into a new session file: its old prompts stay one trace each.
        results[PROMPTS[6]] = claude(PROMPTS[6], "--resume", first["session_id"], "--fork-session")

    assert list((uhome / "spool").glob("*.event")), f"Claude Code {version} ran no hook"
    status = ingest_spool(env, uhome)
    live = exported_traces(env, uhome)
    fresh = root / "imported"
    proc = subprocess.run([*CAPTURE_DAEMON, "import", str(home / ".claude" / "projects")],
                          env=dict(env, UNDERSTUDY_HOME=str(fresh)), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    again = subprocess.run([*CAPTURE_DAEMON, "import", str(home / ".claude" / "projects")],
                           env=env, capture_output=True, text=True, timeout=120)
    return {"version": version, "live": live, "imported": exported_traces(env, fresh), "status": status,
            "import_out": proc.stdout, "reimport_out": again.stdout, "reimport_rc": again.returncode,
            "results": results}


def _shape(trace: dict) -> list[tuple]:
    return [(c["tool_use_id"], c["name"], c["input"], c["success"], c["agent_id"] is None, c["parallel_group"])
            for c in trace["tool_calls"]]


def _runs(trace: dict) -> list[tuple]:
    """The subagent runs: which call started each, with what task."""
    return sorted((r["spawned_by"] or "", r["description"] or "", r["prompt"] or "", r["agent_type"] or "")
                  for r in trace["subagents"])


def test_live_capture_has_one_trace_per_prompt(version_run):
    live = {t["prompt"]: t for t in version_run["live"]}
    assert sorted(live) == sorted(PROMPTS), version_run["version"]
    assert version_run["status"]["spool"]["quarantined"] == 0
    seq = live["matrix compare the transformers"]
    assert [c["name"] for c in seq["tool_calls"]] == ["Bash", "Read"]
    assert seq["final_response"] == ANSWER and seq["complete"] is True
    failed = live["matrix read the missing config"]["tool_calls"][0]
    assert failed["success"] is False
    par = live["matrix read both at once"]["tool_calls"]
    assert [c["parallel_group"] for c in par] == [0, 0]
    resumed = live["matrix follow-up after resuming"]
    assert resumed["session_id"] == live["matrix first question"]["session_id"]
    assert [c["input"]["command"] for c in resumed["tool_calls"]] == ["echo second"]


def test_subagent_work_belongs_to_its_prompt(version_run):
    for source in ("live", "imported"):
        t = {t["prompt"]: t for t in version_run[source]}["matrix delegate the inspection"]
        names = [(c["name"], c["agent_id"] is None) for c in t["tool_calls"]]
        assert names == [(MATRIX[version_run["version"]][1], True), ("Read", False)], (source, names)
        assert t["final_response"] == "The agent is on it.", source
        assert t["reasoning_signals"]["tool_sequence"] == [MATRIX[version_run["version"]][1]]


def test_import_gives_the_same_traces_as_live_capture(version_run):
    live = {t["trace_id"]: t for t in version_run["live"]}
    imported = {t["trace_id"]: t for t in version_run["imported"]}
    assert sorted(t["prompt"] for t in imported.values()) == sorted(PROMPTS), version_run["import_out"]
    assert len(live) == len(PROMPTS)
    assert set(imported) == set(live), "trace ids differ between live capture and import"
    for trace_id, t in live.items():
        i = imported[trace_id]
        assert i["source"] == "import" and i["prompt"] == t["prompt"] and i["prompt_id"] == t["prompt_id"]
        assert _shape(i) == _shape(t), t["prompt"]
        assert [c["output"] for c in i["tool_calls"]] == [c["output"] for c in t["tool_calls"]], t["prompt"]
        assert i["final_response"] == t["final_response"], t["prompt"]
        assert i["complete"] == t["complete"], t["prompt"]
        assert _runs(i) == _runs(t), t["prompt"]


def test_importing_into_the_live_store_adds_nothing(version_run):
    assert version_run["reimport_rc"] == 0
    assert "imported 0 traces" in version_run["reimport_out"], version_run["reimport_out"]
    assert f"{len(PROMPTS)} already stored" in version_run["reimport_out"]


# A 1.0.x before SessionStart and SessionEnd existed (both in every block `hooks install` wrote
# before it learned 1.0.x's events): such a Claude Code runs no hook at all when its block names
# an event it does not know. Not in MATRIX: it resumes a session into a new file with new row
# ids and has no --fork-session, which the matrix's sessions rely on.
CLAUDE_1_0 = "1.0.60"


def test_claude_code_1_0_is_captured_live(tmp_path):
    binary = installed_claude(f"claude-code-{CLAUDE_1_0}")
    home, uhome, project, env = fresh_user(tmp_path)
    (project / "notes.txt").write_text(NOTES)
    env["PATH"] = f"{binary.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    installed = subprocess.run([*CAPTURE_DAEMON, "hooks", "install"], env=env, capture_output=True, text=True, timeout=60)
    assert installed.returncode == 0 and f"Claude Code {CLAUDE_1_0} does not know SessionStart" in installed.stdout
    prompts = PROMPTS[:3]
    with ScriptedAPI(_scripts(project, "Task", False)) as api:
        for prompt in prompts:
            proc = subprocess.run([str(binary), "-p", prompt, "--allowedTools", "Bash Read", "--output-format", "json"],
                                  cwd=project, env=claude_env(home, uhome, api.base_url), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr[-2000:]
    assert list((uhome / "spool").glob("*.event")), f"Claude Code {CLAUDE_1_0} ran no hook"
    status = ingest_spool(env, uhome)
    assert status["spool"]["quarantined"] == 0 and status["capture"]["hooks_claude_ignores"] is None
    live = {t["prompt"]: t for t in exported_traces(env, uhome)}
    assert sorted(live) == sorted(prompts)
    seq = live["matrix compare the transformers"]
    assert [c["name"] for c in seq["tool_calls"]] == ["Bash", "Read"]
    assert seq["final_response"] == ANSWER and seq["complete"] is True
    assert live["matrix read the missing config"]["tool_calls"][0]["success"] is False
    assert [c["parallel_group"] for c in live["matrix read both at once"]["tool_calls"]] == [0, 0]
    fresh = tmp_path / "imported"
    subprocess.run([*CAPTURE_DAEMON, "import", str(home / ".claude" / "projects")],
                   env=dict(env, UNDERSTUDY_HOME=str(fresh)), capture_output=True, text=True, timeout=120, check=True)
    imported = {t["trace_id"]: t for t in exported_traces(env, fresh)}
    assert set(imported) == {t["trace_id"] for t in live.values()}
    for t in live.values():
        assert _shape(imported[t["trace_id"]]) == _shape(t) and imported[t["trace_id"]]["final_response"] == t["final_response"]
