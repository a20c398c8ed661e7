"""What the user's own hooks show the model is part of the trace, live and imported alike.

A user's hooks (besides understudy's) can put text in front of the model, and its next steps
react to it: a Stop hook that blocks the stop (JSON `decision: block` with a reason, or exit 2
with the reason on stderr) sends the model on with "Stop hook feedback:\\n<reason>"; a
UserPromptSubmit hook's `additionalContext` comes with the prompt; a PostToolUse hook's
`additionalContext` (or its `decision: block` reason) comes after the tool's result. The real
CLI runs with such hooks registered beside understudy's; the daemon captures while it runs, and
an import of the transcripts into a fresh store must give the same traces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from capture_daemon import hooks_config
from capture_daemon.transcript import parse_transcript
from tests.claude_harness import claude_bin, claude_env, installed_claude, run_claude, write_settings_with_hooks
from tests.daemon_harness import traces_by_prompt, wait_for
from tests.scripted_api import Script, ScriptedAPI, text, tool

pytestmark = pytest.mark.e2e

CAPTURE_DAEMON = [sys.executable, "-m", "capture_daemon.cli"]
GITHUB_TOKEN = "ghp_" + "Z9x8C7v6B5n4M3a2S1d0F9g8H7j6K5l4P3o2"
CONTEXT = f"the deploy branch is release-7; push with {GITHUB_TOKEN}"
FEEDBACK = "the tests were not run: run pytest before you stop"

# Blocks the session's first stop, then lets it stop: with a JSON decision, or (STOP_STYLE=exit2)
# with exit code 2 and the reason on stderr.
STOP_HOOK = f"""#!/bin/sh
payload=$(cat)
marker="$MARKERS/$(printf '%s' "$payload" | sed 's/.*"session_id": *"\\([^"]*\\)".*/\\1/')"
[ -e "$marker" ] && exit 0
touch "$marker"
if [ "$STOP_STYLE" = exit2 ]; then echo "{FEEDBACK}" >&2; exit 2; fi
echo '{{"decision": "block", "reason": "{FEEDBACK}"}}'
"""
PROMPT_HOOK = f"""#!/bin/sh
cat > /dev/null
echo '{{"hookSpecificOutput": {{"hookEventName": "UserPromptSubmit", "additionalContext": "{CONTEXT}"}}}}'
"""
# Plain text on stdout (exit 0): UserPromptSubmit's goes to the model too.
PLAIN_PROMPT_HOOK = """#!/bin/sh
cat > /dev/null
echo "on-call today: the grid team"
"""
# Its context holds a blank line (printf: sh's echo would turn the JSON's \n escapes into newlines).
POST_HOOK = """#!/bin/sh
cat > /dev/null
printf '%s\\n' '{"hookSpecificOutput": {"hookEventName": "PostToolUse", "additionalContext": "the lint job also runs on push\\n\\nand on every tag"}}'
"""


def _script(prompt: str, suffix: str) -> Script:
    return Script(prompt, [
        [text("I'll check the branch."), tool("Bash", {"command": "echo main", "description": "Branch"}, id=f"toolu_hc_{suffix}1")],
        [text("The branch is fine.")],  # the stop the Stop hook blocks
        [text("Running the tests as the hook asks."), tool("Bash", {"command": "echo 3 passed", "description": "Tests"},
                                                           id=f"toolu_hc_{suffix}2")],
        [text("Tests pass; the branch is ready.")],
    ])


def _register_user_hooks(home: Path, hooks: Path) -> None:
    settings = write_settings_with_hooks(home)
    data = json.loads(settings.read_text())
    for event, body, matcher in (("Stop", STOP_HOOK, None), ("UserPromptSubmit", PROMPT_HOOK, None),
                                 ("UserPromptSubmit", PLAIN_PROMPT_HOOK, None), ("PostToolUse", POST_HOOK, "Bash")):
        script = hooks / f"{event}-{len(list(hooks.iterdir()))}.sh"
        script.write_text(body)
        script.chmod(0o755)
        entry = {"hooks": [{"type": "command", "command": str(script)}], **({"matcher": matcher} if matcher else {})}
        data["hooks"].setdefault(event, []).append(entry)
    settings.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    claude_bin()
    root = tmp_path_factory.mktemp("hookctx")
    home, uhome, project, hooks, markers = (root / n for n in ("home", "understudy", "project", "hooks", "markers"))
    for folder in (home, project, hooks, markers):
        folder.mkdir()
    uhome.mkdir(mode=0o700)
    _register_user_hooks(home, hooks)
    env = dict(os.environ, UNDERSTUDY_HOME=str(uhome), HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    subprocess.run([*CAPTURE_DAEMON, "start"], env=env, capture_output=True, text=True, timeout=60, check=True)
    try:
        with ScriptedAPI([_script("check the release branch", "j"), _script("check the branch with exit 2", "e")]) as api:
            for prompt, style in (("check the release branch", "json"), ("check the branch with exit 2", "exit2")):
                proc = run_claude(prompt, home=home, understudy_home=uhome, cwd=project, base_url=api.base_url,
                                  allowed_tools="Bash", env={"MARKERS": str(markers), "STOP_STYLE": style})
                assert json.loads(proc.stdout)["result"] == "Tests pass; the branch is ready.", proc.stderr[-2000:]
        wait_for(lambda: not list((uhome / "spool").glob("*.event")), 60, "the spool to drain")
    finally:
        subprocess.run([*CAPTURE_DAEMON, "stop"], env=env, capture_output=True, text=True, timeout=60, check=True)
    fresh = dict(env, UNDERSTUDY_HOME=str(root / "imported"))
    subprocess.run([*CAPTURE_DAEMON, "import", str(home / ".claude" / "projects")], env=fresh, capture_output=True,
                   text=True, timeout=120, check=True)
    raw = b"".join(p.read_bytes() for p in (uhome, root / "imported") for p in p.rglob("*") if p.is_file())
    return {"live": traces_by_prompt(env), "imported": traces_by_prompt(fresh), "env": env, "raw": raw,
            "transcripts": list((home / ".claude" / "projects").rglob("*.jsonl")), "requests": api.requests}


@pytest.mark.parametrize("prompt", ["check the release branch", "check the branch with exit 2"])
def test_the_stop_hooks_feedback_is_kept_where_the_model_read_it(captured, prompt):
    trace = captured["live"][prompt]
    assert [c["name"] for c in trace["tool_calls"]] == ["Bash", "Bash"]
    feedback = [m for m in trace["mid_turn_messages"] if m["kind"] == "hook_feedback"]
    # After the text it stopped with (at the same place), before the step that reacts to it.
    [told] = feedback
    assert {k: v for k, v in told.items() if k != "text"} == {"position": 1, "kind": "hook_feedback", "hook": "Stop",
                                                              "after_text": 1, "agent_id": None}
    # As the model read it: with exit 2, Claude Code names the hook's command before its stderr.
    assert told["text"] == FEEDBACK if "exit 2" not in prompt else told["text"].endswith(f"/hooks/Stop-0.sh]: {FEEDBACK}\n")
    assert [(s["text"], s["position"]) for s in trace["assistant_text"]] == [
        ("I'll check the branch.", 0), ("The branch is fine.", 1), ("Running the tests as the hook asks.", 1)]
    assert trace["final_response"] == "Tests pass; the branch is ready." and trace["complete"]


def test_hook_context_comes_with_the_prompt_and_the_results(captured):
    trace = captured["live"]["check the release branch"]
    context = [(m["hook"], m["position"], m["text"]) for m in trace["mid_turn_messages"] if m["kind"] == "hook_context"]
    assert [(hook, position) for hook, position, _ in context] == [
        ("UserPromptSubmit", 0), ("PostToolUse:Bash", 1), ("PostToolUse:Bash", 2)]
    assert context[0][2].startswith("the deploy branch is release-7; push with ")
    assert context[1][2] == "the lint job also runs on push\n\nand on every tag"
    printed = [(m["hook"], m["position"], m["text"]) for m in trace["mid_turn_messages"] if m["kind"] == "hook_output"]
    assert printed == [("UserPromptSubmit", 0, "on-call today: the grid team")]


def test_hook_text_is_redacted_as_a_prompt_is(captured):
    [context] = [m for m in captured["live"]["check the release branch"]["mid_turn_messages"]
                 if (m["kind"], m["hook"]) == ("hook_context", "UserPromptSubmit")]
    assert "[REDACTED" in context["text"]
    assert GITHUB_TOKEN.encode() not in captured["raw"]


def test_import_gives_the_live_trace(captured):
    assert sorted(captured["live"]) == sorted(captured["imported"])
    for prompt, live in captured["live"].items():
        imported = captured["imported"][prompt]
        assert imported["trace_id"] == live["trace_id"]
        for field in ("mid_turn_messages", "assistant_text", "final_response", "reasoning_signals"):
            assert imported[field] == live[field], (prompt, field)


def test_show_prints_the_feedback_between_the_stop_and_the_reaction(captured):
    trace_id = captured["live"]["check the release branch"]["trace_id"]
    shown = subprocess.run([*CAPTURE_DAEMON, "show", trace_id, "--full"], env=captured["env"], capture_output=True,
                           text=True, timeout=60, check=True).stdout
    stopped, told, reaction = (shown.index("The branch is fine."), shown.index("Stop hook feedback"),
                               shown.index("Running the tests as the hook asks."))
    assert stopped < told < reaction
    assert FEEDBACK in " ".join(shown.split())  # the console wraps long lines


@pytest.mark.parametrize("prompt", ["check the release branch", "check the branch with exit 2"])
def test_serve_gives_the_student_the_turns_it_was_trained_on(captured, prompt):
    """`trainer serve` maps Claude Code's last request of the prompt (everything but the answer) to
    the trace's training example: the hooks' words where the dataset puts them, worded alike."""
    from capture_daemon.redact import redact_value
    from capture_daemon.schema import Trace
    from trainer.dataset import DatasetConfig, trace_to_example
    from trainer.serve import ContextSettings, to_chat

    config = DatasetConfig()
    example = trace_to_example(Trace.model_validate(captured["live"][prompt]), config)["messages"]
    request = [r for r in captured["requests"] if prompt in json.dumps(r.get("messages"))][-1]
    served, _, _ = to_chat(request, ContextSettings(dataset=config))
    assert redact_value(served) == example[:-1]  # the trace is redacted; the request is not
    assert any(m["content"].startswith("Stop hook feedback:") for m in served if m["role"] == "user")


def test_the_rows_are_read_as_they_are_written(captured):
    """One feedback block per stop although 2.1.328 writes it twice (a user row and an attachment)."""
    [transcript] = captured["transcripts"][:1]
    [turns] = parse_transcript(transcript).prompts.values()
    told = [(b.origin, b.hook) for b in turns.blocks if b.kind == "mid_turn"]
    assert told.count(("hook_feedback", "Stop")) == 1


# --- every version: a stop blocked while the daemon runs, the model slower than the settle time ---

VERSIONS = {"2.0.0": ("claude-code-2.0.0", (2, 0, 0)), "2.1.42": ("claude-code-2.1.42", (2, 1, 42)), "pinned": ("claude-code", None)}


@pytest.fixture(scope="module", params=list(VERSIONS))
def blocked_live(request, tmp_path_factory):
    """A Stop hook blocks the first stop; the model's next turn comes 2 s later, so the daemon has
    stored the trace by then (its settle time is 0.3 s) and must take the rest of the prompt into
    it. 2.0.0 and 2.1.42 name no prompt in their events, so only the session says whose they are."""
    version = request.param
    binary = installed_claude(VERSIONS[version][0])
    root = tmp_path_factory.mktemp(f"blocked-{version}")
    home, uhome, project, hooks, markers = (root / n for n in ("home", "understudy", "project", "hooks", "markers"))
    for folder in (home, project, hooks, markers):
        folder.mkdir()
    uhome.mkdir(mode=0o700)
    settings = home / ".claude" / "settings.json"
    hooks_config.install(settings, VERSIONS[version][1])
    data = json.loads(settings.read_text())
    (hooks / "stop.sh").write_text(STOP_HOOK)
    (hooks / "stop.sh").chmod(0o755)
    data["hooks"].setdefault("Stop", []).append({"hooks": [{"type": "command", "command": str(hooks / "stop.sh")}]})
    settings.write_text(json.dumps(data))
    env = dict(os.environ, UNDERSTUDY_HOME=str(uhome), HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    script = _script("check the slow branch", "s")
    script.delays = {2: 2.0}
    subprocess.run([*CAPTURE_DAEMON, "start"], env=env, capture_output=True, text=True, timeout=60, check=True)
    try:
        with ScriptedAPI([script]) as api:
            proc = subprocess.run([str(binary), "-p", "check the slow branch", "--allowedTools", "Bash", "--output-format", "json"],
                                  cwd=project, env=claude_env(home, uhome, api.base_url, {"MARKERS": str(markers)}),
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
            assert json.loads(proc.stdout)["result"] == "Tests pass; the branch is ready.", proc.stderr[-2000:]
        wait_for(lambda: not list((uhome / "spool").glob("*.event")), 60, "the spool to drain")
    finally:
        subprocess.run([*CAPTURE_DAEMON, "stop"], env=env, capture_output=True, text=True, timeout=60, check=True)
    fresh = dict(env, UNDERSTUDY_HOME=str(root / "imported"))
    subprocess.run([*CAPTURE_DAEMON, "import", str(home / ".claude" / "projects")], env=fresh, capture_output=True,
                   text=True, timeout=120, check=True)
    return {"version": version, "live": traces_by_prompt(env), "imported": traces_by_prompt(fresh),
            "quarantined": list((uhome / "spool" / "quarantine").glob("*"))}


def test_a_blocked_stop_is_one_prompt_live_and_imported(blocked_live):
    assert blocked_live["quarantined"] == []  # no event of the prompt's continuation was set aside
    for source in ("live", "imported"):
        assert list(blocked_live[source]) == ["check the slow branch"], source  # the feedback is no prompt
        trace = blocked_live[source]["check the slow branch"]
        assert [c["input"]["command"] for c in trace["tool_calls"]] == ["echo main", "echo 3 passed"], source
        [told] = trace["mid_turn_messages"]
        assert (told["kind"], told["hook"], told["position"], told["after_text"]) == ("hook_feedback", "Stop", 1, 1)
        # 2.0.0 lists the reasons ("- <reason>"); the model read it so.
        assert told["text"] == (f"- {FEEDBACK}" if blocked_live["version"] == "2.0.0" else FEEDBACK)
        assert trace["final_response"] == "Tests pass; the branch is ready." and trace["complete"], source
    live, imported = blocked_live["live"]["check the slow branch"], blocked_live["imported"]["check the slow branch"]
    assert imported["trace_id"] == live["trace_id"]
    for field in ("mid_turn_messages", "assistant_text", "reasoning_signals"):
        assert imported[field] == live[field], field


# --- a SubagentStop hook that blocks: the subagent goes on, told why ---

SUBAGENT_HOOK = """#!/bin/sh
cat > /dev/null
[ -e "$MARKERS/subagent" ] && exit 0
touch "$MARKERS/subagent"
echo '{"decision": "block", "reason": "check the feeder twice"}'
"""


@pytest.fixture(scope="module")
def subagent_blocked(tmp_path_factory):
    claude_bin()
    root = tmp_path_factory.mktemp("subagent-blocked")
    home, uhome, project, hooks, markers = (root / n for n in ("home", "understudy", "project", "hooks", "markers"))
    for folder in (home, project, hooks, markers):
        folder.mkdir()
    uhome.mkdir(mode=0o700)
    settings = write_settings_with_hooks(home)
    data = json.loads(settings.read_text())
    (hooks / "substop.sh").write_text(SUBAGENT_HOOK)
    (hooks / "substop.sh").chmod(0o755)
    data["hooks"].setdefault("SubagentStop", []).append({"hooks": [{"type": "command", "command": str(hooks / "substop.sh")}]})
    settings.write_text(json.dumps(data))
    env = dict(os.environ, UNDERSTUDY_HOME=str(uhome), HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    scripts = [
        Script("SUBTASK check the feeder", [[text("Feeder looks fine.")],
                                            [text("Checking it again."), tool("Bash", {"command": "echo again", "description": "s"},
                                                                               id="toolu_hc_sub1")],
                                            [text("Checked twice: fine.")]]),
        Script("delegate the feeder check", [[tool("Agent", {"description": "check", "prompt": "SUBTASK check the feeder",
                                                             "subagent_type": "general-purpose"}, id="toolu_hc_agent")],
                                             [text("The subagent checked the feeder twice.")]]),
    ]
    subprocess.run([*CAPTURE_DAEMON, "start"], env=env, capture_output=True, text=True, timeout=60, check=True)
    try:
        with ScriptedAPI(scripts) as api:
            run_claude("delegate the feeder check", home=home, understudy_home=uhome, cwd=project, base_url=api.base_url,
                       allowed_tools="Bash Agent", env={"MARKERS": str(markers)})
        wait_for(lambda: not list((uhome / "spool").glob("*.event")), 60, "the spool to drain")
    finally:
        subprocess.run([*CAPTURE_DAEMON, "stop"], env=env, capture_output=True, text=True, timeout=60, check=True)
    fresh = dict(env, UNDERSTUDY_HOME=str(root / "imported"))
    subprocess.run([*CAPTURE_DAEMON, "import", str(home / ".claude" / "projects")], env=fresh, capture_output=True,
                   text=True, timeout=120, check=True)
    return {"live": traces_by_prompt(env), "imported": traces_by_prompt(fresh)}


def test_a_subagent_stop_hooks_feedback_is_kept_in_its_lane(subagent_blocked):
    for source in ("live", "imported"):
        trace = subagent_blocked[source]["delegate the feeder check"]
        [agent] = [s["agent_id"] for s in trace["subagents"]]
        [told] = trace["mid_turn_messages"]
        assert told == {"text": "check the feeder twice", "position": 1, "kind": "hook_feedback", "hook": "SubagentStop",
                        "after_text": 1, "agent_id": agent}, source
        assert [(c["tool_use_id"], c["agent_id"]) for c in trace["tool_calls"]] == [
            ("toolu_hc_agent", None), ("toolu_hc_sub1", agent)], source
    live, imported = (subagent_blocked[s]["delegate the feeder check"] for s in ("live", "imported"))
    assert imported["mid_turn_messages"] == live["mid_turn_messages"]
    assert imported["assistant_text"] == live["assistant_text"]
