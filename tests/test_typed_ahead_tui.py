"""A message typed while the model writes its final answer is the next prompt, captured whole live.

Claude Code 2.1.328's TUI sends such a message a UserPromptSubmit as soon as it is typed, under
the running prompt's id (as for a message typed mid-turn), then runs it as the next prompt, whose
own events come with no UserPromptSubmit. The live daemon stored that next prompt incomplete
(`prompt_event_missing`) until an import replaced it. `claude -p --input-format stream-json` does
not do this (it sends the event when it runs the message, under the new prompt's id), so the real
TUI is driven here through tmux, and the test is skipped where tmux is not installed
(tests/test_ingest.py holds the recorded event order for every machine).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import pytest

from tests.claude_harness import claude_bin, write_settings_with_hooks
from tests.daemon_harness import tui_with_daemon, wait_for
from tests.scripted_api import Script, text, tool

pytestmark = pytest.mark.e2e

CAPTURE_DAEMON = [sys.executable, "-m", "capture_daemon.cli"]
FIRST, SECOND = "check the transformer notes", "now count the lines in notes.txt"
FIRST_ANSWER = "Transformer 1 runs at 11kV, as the notes say."


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    binary = claude_bin()
    root = tmp_path_factory.mktemp("typed-ahead")
    home, uhome, project = root / "home", root / "understudy", root / "project"
    for folder in (home, project):
        folder.mkdir()
    uhome.mkdir(mode=0o700)
    (project / "notes.txt").write_text("transformer 1: 11kV\n")
    write_settings_with_hooks(home)
    env = dict(os.environ, UNDERSTUDY_HOME=str(uhome), HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    scripts = [
        # The final answer takes 8 s to come: the next prompt is typed meanwhile.
        Script(FIRST, [[text("Reading the notes."), tool("Bash", {"command": "cat notes.txt", "description": "Read notes"},
                                                         id="toolu_ahead_1")],
                       [text(FIRST_ANSWER)]], delays={1: 8}),
        Script(SECOND, [[tool("Bash", {"command": "wc -l notes.txt", "description": "Count lines"}, id="toolu_ahead_2")],
                        [text("notes.txt has 1 line.")]]),
    ]
    with tui_with_daemon(binary, home, uhome, project, env, scripts) as (tui, api):
        tui.type(FIRST)
        wait_for(lambda: sum(FIRST in json.dumps(r.get("messages", [])[:1]) for r in api.requests) >= 2, 60,
                 "the request for the final answer")
        time.sleep(1)
        tui.type(SECOND)  # while that request still runs: the model is writing its answer
        tui.wait_for("notes.txt has 1 line.", 60)
    live = subprocess.run([*CAPTURE_DAEMON, "export"], env=env, capture_output=True, timeout=60, check=True).stdout
    with closing(sqlite3.connect(uhome / "traces.db")) as db:  # the hook events as the CLI sent them
        submits = {(r["payload"]["prompt"], r["payload"]["prompt_id"]) for (record,) in db.execute(
            "SELECT record FROM trace_events WHERE name LIKE '%UserPromptSubmit.event'") for r in [json.loads(record)]}
    fresh = root / "imported"
    subprocess.run([*CAPTURE_DAEMON, "import", str(home / ".claude" / "projects")], env=dict(env, UNDERSTUDY_HOME=str(fresh)),
                   capture_output=True, text=True, timeout=120, check=True)
    imported = subprocess.run([*CAPTURE_DAEMON, "export"], env=dict(env, UNDERSTUDY_HOME=str(fresh)),
                              capture_output=True, timeout=60, check=True).stdout
    return {"live": {t["prompt_id"]: t for t in map(json.loads, live.splitlines())},
            "imported": {t["prompt_id"]: t for t in map(json.loads, imported.splitlines())}, "submits": submits}


def test_the_cli_reported_the_next_prompt_under_the_previous_prompts_id(captured):
    """What makes this case: the next prompt's own events carry no UserPromptSubmit (if a
    later Claude Code sends one, this test says so and the rest is moot)."""
    [first] = [t for t in captured["live"].values() if t["prompt"] == FIRST]
    [second] = [t for t in captured["live"].values() if t["prompt"] == SECOND]
    assert captured["submits"] == {(FIRST, first["prompt_id"]), (SECOND, first["prompt_id"])}
    # The first prompt never took the message in: its answer and turn are its own.
    assert first["final_response"] == FIRST_ANSWER and first["mid_turn_messages"] == []
    assert first["complete"] and second["prompt_id"] != first["prompt_id"]


def test_the_next_prompt_is_captured_complete_live(captured):
    [second] = [t for t in captured["live"].values() if t["prompt"] == SECOND]
    assert second["complete"] and second["incomplete_reason"] is None, second["incomplete_reason"]
    assert [c["tool_use_id"] for c in second["tool_calls"]] == ["toolu_ahead_2"]
    assert second["final_response"] == "notes.txt has 1 line."


def test_live_and_imported_agree(captured):
    live, imported = captured["live"], captured["imported"]
    assert sorted(live) == sorted(imported) and len(live) == 2
    for prompt_id, trace in live.items():
        other = imported[prompt_id]
        assert (trace["trace_id"], trace["prompt"], trace["complete"], trace["final_response"]) == (
            other["trace_id"], other["prompt"], other["complete"], other["final_response"])
        assert [c["tool_use_id"] for c in trace["tool_calls"]] == [c["tool_use_id"] for c in other["tool_calls"]]
        assert trace["quality"]["accepted"] == other["quality"]["accepted"], prompt_id
