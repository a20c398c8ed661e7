"""A background Bash job's `<task-notification>` turn belongs to the prompt that started the job.

A Bash call with `run_in_background: true` returns at once; when the job ends after its prompt
did, Claude Code sends the model a `<task-notification>` turn and the model carries on (calls,
narration). Import attaches that turn to the prompt whose call started the job (README); live
capture must too, whether the daemon commits the prompt before the job ends (the usual case:
the turn reopens the stored trace) or reads the spool later, after another prompt ran in
between. `claude -p --input-format stream-json` keeps the session open until stdin closes, so
the real CLI delivers the notification turn without a terminal.

Versions: the pinned 2.1.328 (the notification names the call's tool_use_id and the job's
task id) and 2.1.42 (hooks send no prompt_id, and the notification names only the task id, the
call's `backgroundTaskId`). 2.0.0 runs background Bash but sends no notification turn (the
model polls with BashOutput), so there is nothing to attach there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capture_daemon import hooks_config
from tests.claude_harness import StreamSession, claude_env, installed_claude
from tests.daemon_harness import import_transcripts, traces_by_prompt, wait_for
from tests.scripted_api import Script, ScriptedAPI, text, tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CAPTURE_DAEMON = [sys.executable, "-m", "capture_daemon.cli"]
VERSIONS = {"pinned": ("claude-code", None), "2.1.42": ("claude-code-2.1.42", (2, 1, 42))}
LATE, SECOND, LIVE = "start the late ticker", "a second question meanwhile", "start the live ticker"


def _scripts(v: str) -> list[Script]:
    def starts(name: str, seconds: int) -> list[list[dict]]:
        return [[text(f"I'll start the {name} ticker in the background."),
                 tool("Bash", {"command": f"sleep {seconds}; echo {name}-done", "description": f"{name} ticker",
                               "run_in_background": True}, id=f"toolu_{v}_{name}_bg")],
                [text(f"The {name} ticker is running.")]]

    def reacts(name: str) -> list[list[dict]]:
        return [[text(f"The {name} ticker finished; I'll check its output."),
                 tool("Bash", {"command": f"echo checked-{name}", "description": "Check"}, id=f"toolu_{v}_{name}_check")],
                [text(f"The {name} ticker printed {name}-done.")]]

    return [Script(LATE, starts("late", 4)), Script(LIVE, starts("live", 8)),
            Script(SECOND, [[tool("Bash", {"command": "echo second", "description": "Second"}, id=f"toolu_{v}_second")],
                            [text("Second answer.")]]),
            # The notification names the job's description: "late ticker" / "live ticker".
            Script('"late ticker"', reacts("late")), Script('"live ticker"', reacts("live"))]


def _session(binary: Path, prompts: list[str], turns: int, *, home: Path, uhome: Path, project: Path, base_url: str,
             after_first=lambda: None) -> None:
    """Send `prompts` one after another's result, then wait for `turns` results in all (the
    notification turn's among them) before closing stdin."""
    session = StreamSession(binary, cwd=project, env=claude_env(home, uhome, base_url))
    proc, send = session.proc, session.send
    results, waiting = 0, list(prompts)
    try:
        send(waiting.pop(0))
        deadline = time.monotonic() + 90
        while results < turns and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if json.loads(line).get("type") == "result":
                results += 1
                if results == 1:
                    after_first()
                if waiting:
                    send(waiting.pop(0))
        proc.stdin.close()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert results == turns, f"the CLI gave {results} of {turns} results (no notification turn?)"


@pytest.fixture(scope="module", params=list(VERSIONS))
def captured(request, tmp_path_factory):
    version = request.param
    binary = installed_claude(VERSIONS[version][0])
    root = tmp_path_factory.mktemp(f"bgbash-{version}")
    home, uhome, project = root / "home", root / "understudy", root / "project"
    home.mkdir()
    project.mkdir()
    uhome.mkdir(mode=0o700)
    hooks_config.install(home / ".claude" / "settings.json", claude_version=VERSIONS[version][1])
    env = dict(os.environ, UNDERSTUDY_HOME=str(uhome), HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    drained = lambda: not list((uhome / "spool").glob("*.event"))  # noqa: E731
    stored_first = []
    with ScriptedAPI(_scripts(version.replace(".", ""))) as api:
        where = dict(home=home, uhome=uhome, project=project, base_url=api.base_url)
        # No daemon yet: it reads this session later, a second prompt between job and notification.
        _session(binary, [LATE, SECOND], 3, **where)
        subprocess.run([*CAPTURE_DAEMON, "start"], env=env, capture_output=True, text=True, timeout=60, check=True)
        try:
            wait_for(drained, 60, "the spool to drain")

            def committed() -> None:  # the job sleeps 8 s: the daemon stores the prompt first
                wait_for(lambda: LIVE in traces_by_prompt(env, uhome), 30, "the live prompt to be stored")
                stored_first.append(traces_by_prompt(env, uhome)[LIVE])

            # The daemon running: the prompt is stored before its job ends.
            _session(binary, [LIVE], 2, after_first=committed, **where)
            wait_for(drained, 60, "the spool to drain")
            time.sleep(1)
            status = json.loads(subprocess.run([*CAPTURE_DAEMON, "status", "--json"], env=env, capture_output=True,
                                               text=True, timeout=60, check=True).stdout)
        finally:
            subprocess.run([*CAPTURE_DAEMON, "stop"], env=env, capture_output=True, text=True, timeout=60)
    fresh = root / "imported"
    import_transcripts(env, home, fresh)
    return {"version": version.replace(".", ""), "live": traces_by_prompt(env, uhome), "imported": traces_by_prompt(env, fresh),
            "stored_first": stored_first, "status": status}


def _steps(trace: dict, version: str) -> tuple:
    # Everything, also the notification turn's closing text, which 2.1.42 writes to the
    # transcript after its Stop hook ran (the daemon waits for it: ingest `_answer_still_to_come`).
    narration = [(s["text"], s["position"]) for s in trace["assistant_text"]]
    return ([(c["tool_use_id"], c["input"]["command"], c["success"]) for c in trace["tool_calls"]],
            narration, trace["final_response"])


def test_the_notification_turn_is_no_trace_of_its_own(captured):
    assert sorted(captured["live"]) == sorted([LATE, SECOND, LIVE])
    assert captured["status"]["spool"]["quarantined"] == 0, captured["status"]["spool"]["quarantine"]


@pytest.mark.parametrize("name, prompt", [("late", LATE), ("live", LIVE)])
def test_the_notification_turn_joins_the_prompt_that_started_the_job(captured, name, prompt):
    v, trace = captured["version"], captured["live"][prompt]
    narration = [(f"I'll start the {name} ticker in the background.", 0),
                 (f"The {name} ticker finished; I'll check its output.", 1), (f"The {name} ticker printed {name}-done.", 2)]
    assert _steps(trace, v) == (
        [(f"toolu_{v}_{name}_bg", f"sleep {4 if name == 'late' else 8}; echo {name}-done", True),
         (f"toolu_{v}_{name}_check", f"echo checked-{name}", True)],
        narration,
        f"The {name} ticker is running.")  # the prompt's own answer, not the notification turn's
    assert trace["complete"] and trace["capture_losses"] == []


def test_the_prompt_typed_meanwhile_keeps_only_its_own_call(captured):
    calls, _, final = _steps(captured["live"][SECOND], captured["version"])
    assert calls == [(f"toolu_{captured['version']}_second", "echo second", True)] and final == "Second answer."


def test_the_stored_prompt_is_reopened_not_doubled(captured):
    """The live prompt was stored before its job ended (the path a running daemon takes); the
    notification turn rebuilt that same trace."""
    [before] = captured["stored_first"]
    after = captured["live"][LIVE]
    assert [c["input"]["command"] for c in before["tool_calls"]] == ["sleep 8; echo live-done"]
    assert after["trace_id"] == before["trace_id"]
    assert [c["input"]["command"] for c in after["tool_calls"]] == ["sleep 8; echo live-done", "echo checked-live"]


def test_import_gives_the_live_traces(captured):
    assert sorted(captured["imported"]) == sorted(captured["live"])
    for prompt, live in captured["live"].items():
        imported = captured["imported"][prompt]
        assert imported["trace_id"] == live["trace_id"], prompt
        assert _steps(imported, captured["version"]) == _steps(live, captured["version"]), prompt
