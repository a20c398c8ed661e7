"""What a person does to a session in the interactive CLI, and what capture keeps of it.

Claude Code 2.1.328's TUI through tmux (skipped where tmux is not installed), the capture daemon
running as a user runs it:

* `/clear` starts a new session (SessionEnd "clear", a new session id): the prompts on both
  sides are captured, the command itself is no trace.
* Rewind (Esc Esc, "Restore conversation"): the conversation goes back to before a prompt and a
  new prompt is typed there. The transcript then holds both branches; the prompt rewound away
  was answered by the model all the same, so it stays a trace, and the new branch's prompt is
  one of its own. Live and an import of the same transcripts agree, each prompt once.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.claude_harness import claude_bin, write_settings_with_hooks
from tests.daemon_harness import exported_traces, import_transcripts, tui_with_daemon, wait_for
from tests.scripted_api import Script, text, tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BEFORE_CLEAR, AFTER_CLEAR = "list the project files", "count the lines of notes.txt"
REWOUND, BRANCH = "show the first note", "show the last note"
ANSWERS = {BEFORE_CLEAR: "One file: notes.txt.", AFTER_CLEAR: "notes.txt has 2 lines.",
           REWOUND: "The first note is a.", BRANCH: "The last note is b."}
COMMANDS = {BEFORE_CLEAR: "ls", AFTER_CLEAR: "wc -l notes.txt", REWOUND: "head -n 1 notes.txt", BRANCH: "tail -n 1 notes.txt"}


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    binary = claude_bin()
    root = tmp_path_factory.mktemp("session-commands")
    home, uhome, project = root / "home", root / "understudy", root / "project"
    for folder in (home, project):
        folder.mkdir()
    uhome.mkdir(mode=0o700)
    (project / "notes.txt").write_text("a\nb\n")
    write_settings_with_hooks(home)
    env = dict(os.environ, UNDERSTUDY_HOME=str(uhome), HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    scripts = [Script(prompt, [[tool("Bash", {"command": COMMANDS[prompt], "description": "Look"})], [text(answer)]])
               for prompt, answer in ANSWERS.items()]
    with tui_with_daemon(binary, home, uhome, project, env, scripts) as (tui, _):
        tui.type(BEFORE_CLEAR)
        tui.wait_for(ANSWERS[BEFORE_CLEAR], 60)
        tui.type("/clear")
        wait_for(lambda: ANSWERS[BEFORE_CLEAR] not in tui.screen(), 30, "the screen to clear")
        tui.type(AFTER_CLEAR)
        tui.wait_for(ANSWERS[AFTER_CLEAR], 60)
        tui.type(REWOUND)
        tui.wait_for(ANSWERS[REWOUND], 60)
        tui.press("Escape")
        time.sleep(0.3)
        tui.press("Escape")  # the rewind menu, the current point selected
        tui.wait_for("Rewind", 30)
        tui.press("Up")  # to before REWOUND was sent
        time.sleep(1)
        tui.press("Enter")
        tui.wait_for("Restore conversation", 30)
        tui.press("Enter")
        wait_for(lambda: ANSWERS[REWOUND] not in tui.screen(), 30, "the conversation to go back")
        tui.press("C-u")  # the restored prompt is in the input: typed over
        time.sleep(0.5)
        tui.type(BRANCH)
        tui.wait_for(ANSWERS[BRANCH], 60)
    fresh = root / "imported"
    import_transcripts(env, home, fresh)
    return {"live": exported_traces(env, uhome), "imported": exported_traces(env, fresh)}


@pytest.mark.parametrize("side", ["live", "imported"])
def test_every_prompt_is_one_complete_trace(captured, side):
    traces = captured[side]
    assert sorted(t["prompt"] for t in traces) == sorted(ANSWERS)  # no trace for /clear, none twice
    for trace in traces:
        assert trace["complete"] and trace["final_response"] == ANSWERS[trace["prompt"]], trace["prompt"]
        assert [c["input"]["command"] for c in trace["tool_calls"]] == [COMMANDS[trace["prompt"]]]
        assert all(c["success"] for c in trace["tool_calls"])


def test_clear_starts_a_new_session(captured):
    sessions = {t["prompt"]: t["session_id"] for t in captured["live"]}
    assert sessions[BEFORE_CLEAR] != sessions[AFTER_CLEAR]
    assert sessions[AFTER_CLEAR] == sessions[REWOUND] == sessions[BRANCH]  # a rewind stays in its session


def test_live_and_imported_agree(captured):
    live = {t["trace_id"]: t for t in captured["live"]}
    imported = {t["trace_id"]: t for t in captured["imported"]}
    assert sorted(live) == sorted(imported)
    for trace_id, trace in live.items():
        other = imported[trace_id]
        assert (trace["prompt"], trace["prompt_id"], trace["final_response"]) == (
            other["prompt"], other["prompt_id"], other["final_response"])
        assert [c["tool_use_id"] for c in trace["tool_calls"]] == [c["tool_use_id"] for c in other["tool_calls"]]
