"""A message the user types while Claude works is part of the trace, live and imported alike.

Claude Code 2.1.328 queues a message typed during a turn and delivers it within that turn,
with the next tool result; the model's next steps react to it. Interactively that is typing
into the TUI; `claude -p --input-format stream-json` does the same with a second user
message sent on stdin while a tool runs (the same `queued_command` transcript row, the same
UserPromptSubmit under the running prompt's id), so the real CLI is driven here without a
terminal. Two sessions: one captured with its transcript, one whose transcript is gone when
the daemon builds it (the hooks alone must keep the message); both imported into a fresh
store must give the same messages in the same places.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.claude_harness import StreamSession, claude_bin, claude_env, write_settings_with_hooks
from tests.daemon_harness import wait_for
from tests.scripted_api import Script, ScriptedAPI, text, tool

pytestmark = pytest.mark.e2e

CAPTURE_DAEMON = [sys.executable, "-m", "capture_daemon.cli"]
GITHUB_TOKEN = "ghp_" + "Q1w2E3r4T5y6U7i8O9p0A1s2D3f4G5h6J7k8"
STEER = f"only the 33kV feeder please, and push with {GITHUB_TOKEN}"
ANSWER = ("Feeder B runs at 33kV on the sub-transmission side; as you asked I left feeder A out. The notes "
          "list no other 33kV feeder, so that is the only one to check before the maintenance window.")


def _script(prompt: str, suffix: str) -> Script:
    return Script(prompt, [
        [text("I'll list the files first."),
         tool("Bash", {"command": "sleep 4; ls", "description": "List files"}, id=f"toolu_mid_{suffix}1")],
        [text("You want the 33kV feeder only, so I'll look for just that one."),
         tool("Bash", {"command": "grep 33kV notes.txt", "description": "Find 33kV"}, id=f"toolu_mid_{suffix}2")],
        [text(ANSWER)],
    ])


def _session(prompt: str, steer: str, *, home: Path, uhome: Path, project: Path, base_url: str) -> str:
    """One prompt, and `steer` sent while its first tool call runs; returns the session id."""
    session = StreamSession(claude_bin(), cwd=project, env=claude_env(home, uhome, base_url))
    proc, send = session.proc, session.send
    try:
        send(prompt)
        deadline, sent, session = time.monotonic() + 90, False, None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            row = json.loads(line)
            session = row.get("session_id") or session
            blocks = (row.get("message") or {}).get("content") if row.get("type") == "assistant" else None
            if not sent and any(isinstance(b, dict) and b.get("type") == "tool_use" for b in blocks or []):
                send(steer)  # the call sleeps 4 s: this arrives while it runs
                sent = True
            if row.get("type") == "result":
                break
        proc.stdin.close()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sent and session, "the CLI never issued the tool call"
    return session


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    claude_bin()
    root = tmp_path_factory.mktemp("midturn")
    home, uhome, project, moved = root / "home", root / "understudy", root / "project", root / "moved"
    for folder in (home, project, moved):
        folder.mkdir()
    (project / "notes.txt").write_text("feeder A: 11kV\nfeeder B: 33kV\n")
    uhome.mkdir(mode=0o700)
    write_settings_with_hooks(home)
    env = dict(os.environ, UNDERSTUDY_HOME=str(uhome), HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    with ScriptedAPI([_script("check the feeder voltages", "a"), _script("check the feeders without a transcript", "b")]) as api:
        where = dict(home=home, uhome=uhome, project=project, base_url=api.base_url)
        _session("check the feeder voltages", STEER, **where)
        gone = _session("check the feeders without a transcript", "only the 33kV feeder please", **where)
        requests = list(api.requests)
    # The second session's transcript is moved away before the daemon reads it: built from hooks alone.
    transcript = next((home / ".claude" / "projects").rglob(f"{gone}.jsonl"))
    shutil.move(str(transcript), moved / transcript.name)

    subprocess.run([*CAPTURE_DAEMON, "start"], env=env, capture_output=True, text=True, timeout=60, check=True)
    try:
        wait_for(lambda: not list((uhome / "spool").glob("*.event")), 60, "the spool to drain")
    finally:
        subprocess.run([*CAPTURE_DAEMON, "stop"], env=env, capture_output=True, text=True, timeout=60, check=True)
    live = subprocess.run([*CAPTURE_DAEMON, "export"], env=env, capture_output=True, timeout=60, check=True).stdout

    fresh = root / "imported"
    for source in (home / ".claude" / "projects", moved):
        subprocess.run([*CAPTURE_DAEMON, "import", str(source)], env=dict(env, UNDERSTUDY_HOME=str(fresh)),
                       capture_output=True, text=True, timeout=120, check=True)
    imported = subprocess.run([*CAPTURE_DAEMON, "export"], env=dict(env, UNDERSTUDY_HOME=str(fresh)),
                              capture_output=True, timeout=60, check=True).stdout
    return {"live": {t["prompt"]: t for t in map(json.loads, live.splitlines())},
            "imported": {t["prompt"]: t for t in map(json.loads, imported.splitlines())},
            "raw": live + imported, "env": env, "requests": requests}


def test_the_message_is_kept_where_it_arrived(captured):
    trace = captured["live"]["check the feeder voltages"]
    assert [c["tool_use_id"] for c in trace["tool_calls"]] == ["toolu_mid_a1", "toolu_mid_a2"]
    # After the first call (it came with that call's result), before the step that reacts to it.
    [message] = trace["mid_turn_messages"]
    assert message["position"] == 1
    assert message["text"].startswith("only the 33kV feeder please, and push with ")
    assert [(s["text"], s["position"]) for s in trace["assistant_text"]] == [
        ("I'll list the files first.", 0), ("You want the 33kV feeder only, so I'll look for just that one.", 1)]
    assert trace["final_response"] == ANSWER and trace["complete"]


def test_the_message_is_no_prompt_of_its_own(captured):
    assert sorted(captured["live"]) == sorted(captured["imported"]) == [
        "check the feeder voltages", "check the feeders without a transcript"]


def test_the_message_is_redacted_as_a_prompt_is(captured):
    [message] = captured["live"]["check the feeder voltages"]["mid_turn_messages"]
    assert "[REDACTED" in message["text"]
    assert GITHUB_TOKEN.encode() not in captured["raw"]


def test_import_gives_the_live_trace(captured):
    for prompt, live in captured["live"].items():
        imported = captured["imported"][prompt]
        assert imported["trace_id"] == live["trace_id"]
        assert imported["mid_turn_messages"] == live["mid_turn_messages"], prompt
    live, imported = captured["live"]["check the feeder voltages"], captured["imported"]["check the feeder voltages"]
    assert imported["assistant_text"] == live["assistant_text"]
    assert imported["reasoning_signals"] == live["reasoning_signals"]


def test_without_a_transcript_the_hooks_keep_the_message(captured):
    trace = captured["live"]["check the feeders without a transcript"]
    assert trace["assistant_text"] == []  # the transcript was gone: hooks alone
    assert trace["mid_turn_messages"] == [{"text": "only the 33kV feeder please", "position": 1, "kind": "user", "hook": None,
                                           "after_text": 0, "agent_id": None}]


def test_show_prints_it_between_the_call_and_the_reaction(captured):
    trace_id = captured["live"]["check the feeder voltages"]["trace_id"]
    shown = subprocess.run([*CAPTURE_DAEMON, "show", trace_id, "--full"], env=captured["env"], capture_output=True,
                           text=True, timeout=60, check=True).stdout
    first, message, reaction = (shown.index("sleep 4; ls"), shown.index("only the 33kV feeder please"),
                                shown.index("You want the 33kV feeder only"))
    assert first < message < reaction


def test_served_the_student_sees_the_message_as_training_showed_it(captured):
    """`-p` sends the message to the model as a system message inside `messages`; `trainer serve`
    must give the student the turns the dataset builds from the captured trace (the message as a
    user turn after the results it came with), not drop it."""
    from capture_daemon.schema import Trace
    from trainer.dataset import DatasetConfig, trace_to_example
    from trainer.serve import ContextSettings, to_chat

    trace = captured["live"]["check the feeder voltages"]
    last = max((r for r in captured["requests"] if "check the feeder voltages" in json.dumps(r["messages"][:1])),
               key=lambda r: len(r["messages"]))
    assert any(m["role"] == "system" and "only the 33kV feeder please" in json.dumps(m) for m in last["messages"])
    # Training sees the message redacted, as capture stored it; the request has the words typed.
    [message] = trace["mid_turn_messages"]
    redacted = message["text"].removeprefix("only the 33kV feeder please, and push with ")
    last = json.loads(json.dumps(last).replace(GITHUB_TOKEN, redacted))
    config = DatasetConfig()
    example = trace_to_example(Trace.model_validate(trace), config)
    served, _, _ = to_chat(last, ContextSettings(dataset=config))
    assert served == example["messages"][:-1]  # all but the final answer the request asks for
