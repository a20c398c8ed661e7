"""Esc in the interactive CLI: the prompt it stops is unfinished, live as an import says, and the
prompts around it are captured whole.

Claude Code 2.1.328's TUI, driven through tmux (skipped where tmux is not installed), with the
capture daemon running as a user runs it. Three ways a person stops or leaves a call:

* Esc while a command runs: the transcript gets the call's rejection ("The user doesn't want to
  proceed ...") and "[Request interrupted by user for tool use]"; no Stop hook runs, so the
  daemon held the trace open until the session ended and stored it as `session_ended`, where an
  import of the same transcript says `interrupted`.
* Esc at a permission question (the session in the "default" permission mode, so an unallowed
  Write asks): the same rejection and interrupt row.
* The session closed while a permission question waits: no result anywhere; the call is no
  success and has no output.

The next prompt typed after each Esc is a prompt of its own, complete.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.claude_harness import claude_bin, write_settings_with_hooks
from tests.daemon_harness import exported_traces, import_transcripts, tui_with_daemon
from tests.scripted_api import Script, text, tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ESC_IN_CALL, AFTER_CALL = "run the slow check", "now list the files"
ESC_AT_QUESTION, AFTER_QUESTION = "write the summary file", "count the notes"
LEFT_AT_QUESTION = "write the second file"
SLOW = "python3 -c 'import time; time.sleep(60)'"
REJECTED = "The user doesn't want to proceed with this tool use"


def _scripts(project: Path) -> list[Script]:
    return [
        Script(ESC_IN_CALL, [[text("Running the check."), tool("Bash", {"command": SLOW, "description": "Slow check"},
                                                               id="toolu_esc_call")], [text("Never sent.")]]),
        Script(AFTER_CALL, [[tool("Bash", {"command": "ls", "description": "List files"}, id="toolu_after_call")],
                            [text("One file: notes.txt.")]]),
        Script(ESC_AT_QUESTION, [[text("Writing it."), tool("Write", {"file_path": str(project / "sum.txt"), "content": "sum"},
                                                             id="toolu_esc_question")], [text("Never sent.")]]),
        Script(AFTER_QUESTION, [[tool("Bash", {"command": "wc -l notes.txt", "description": "Count lines"},
                                      id="toolu_after_question")], [text("notes.txt has 2 lines.")]]),
        Script(LEFT_AT_QUESTION, [[text("Writing the second."), tool("Write", {"file_path": str(project / "two.txt"),
                                                                               "content": "2"}, id="toolu_left")],
                                  [text("Never sent.")]]),
    ]


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    binary = claude_bin()
    root = tmp_path_factory.mktemp("interrupted-tui")
    home, uhome, project = root / "home", root / "understudy", root / "project"
    for folder in (home, project):
        folder.mkdir()
    uhome.mkdir(mode=0o700)
    (project / "notes.txt").write_text("a\nb\n")
    write_settings_with_hooks(home)
    env = dict(os.environ, UNDERSTUDY_HOME=str(uhome), HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    with tui_with_daemon(binary, home, uhome, project, env, _scripts(project), permission_mode="default") as (tui, _):
        tui.type(ESC_IN_CALL)
        tui.wait_for("Slow check", 60)
        time.sleep(2)  # the command runs
        tui.press("Escape")
        tui.wait_for("Interrupted", 30)
        tui.type(AFTER_CALL)
        tui.wait_for("One file: notes.txt.", 60)
        tui.type(ESC_AT_QUESTION)
        tui.wait_for("Do you want to create sum.txt?", 60)
        tui.press("Escape")
        tui.wait_for("Rejected write to sum.txt", 30)
        tui.type(AFTER_QUESTION)
        tui.wait_for("notes.txt has 2 lines.", 60)
        tui.type(LEFT_AT_QUESTION)
        tui.wait_for("Do you want to create two.txt?", 60)  # left open: the session closes on it
    fresh = root / "imported"
    import_transcripts(env, home, fresh)
    every = {"live": exported_traces(env, uhome), "imported": exported_traces(env, fresh)}
    return {"every": every, **{side: {t["prompt"]: t for t in traces} for side, traces in every.items()}}


@pytest.mark.parametrize("side", ["live", "imported"])
def test_every_prompt_is_captured_once(captured, side):
    assert sorted(t["prompt"] for t in captured["every"][side]) == sorted([ESC_IN_CALL, AFTER_CALL, ESC_AT_QUESTION, AFTER_QUESTION, LEFT_AT_QUESTION])


@pytest.mark.parametrize("side", ["live", "imported"])
@pytest.mark.parametrize("prompt, tool_use_id", [(ESC_IN_CALL, "toolu_esc_call"), (ESC_AT_QUESTION, "toolu_esc_question")])
def test_a_prompt_stopped_with_esc_is_interrupted(captured, side, prompt, tool_use_id):
    trace = captured[side][prompt]
    assert (trace["complete"], trace["incomplete_reason"]) == (False, "interrupted"), trace["incomplete_reason"]
    assert not trace["quality"]["accepted"] and not trace["final_response"]
    [call] = trace["tool_calls"]
    assert call["tool_use_id"] == tool_use_id and call["success"] is False
    assert REJECTED in call["output"] and REJECTED in call["error"]


@pytest.mark.parametrize("side", ["live", "imported"])
@pytest.mark.parametrize("prompt, answer", [(AFTER_CALL, "One file: notes.txt."), (AFTER_QUESTION, "notes.txt has 2 lines.")])
def test_the_prompt_after_an_esc_is_its_own_and_complete(captured, side, prompt, answer):
    trace = captured[side][prompt]
    assert trace["complete"] and trace["incomplete_reason"] is None, trace["incomplete_reason"]
    assert trace["final_response"] == answer
    assert [c["success"] for c in trace["tool_calls"]] == [True]


@pytest.mark.parametrize("side", ["live", "imported"])
def test_a_question_left_open_is_a_call_that_never_returned(captured, side):
    trace = captured[side][LEFT_AT_QUESTION]
    assert not trace["complete"] and not trace["quality"]["accepted"]
    [call] = trace["tool_calls"]
    assert call["tool_use_id"] == "toolu_left" and call["success"] is False and call["output"] is None
    assert call["error"].startswith("no result: ")


def test_live_and_imported_agree(captured):
    live, imported = captured["live"], captured["imported"]
    for prompt, trace in live.items():
        other = imported[prompt]
        assert (trace["trace_id"], trace["complete"], trace["final_response"]) == (
            other["trace_id"], other["complete"], other["final_response"]), prompt
        if prompt != LEFT_AT_QUESTION:  # live knows the session ended there; the transcript only stops
            assert trace["incomplete_reason"] == other["incomplete_reason"], prompt
        assert [(c["tool_use_id"], c["success"], c["output"]) for c in trace["tool_calls"]] == [
            (c["tool_use_id"], c["success"], c["output"]) for c in other["tool_calls"]], prompt
