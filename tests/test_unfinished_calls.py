"""A tool call that never returned is recorded as what it was for the model: no output, a failure.

The real CLI, offline against the scripted API; the capture daemon as a user runs it, and an import
of the same transcripts. How Claude Code ends a call without a PostToolUse (seen with these CLIs):

* `-p` killed (SIGKILL) while the call runs: no PostToolUse, no Stop, no SessionEnd, and no tool
  result in the transcript. Nothing says the call returned; it used to be stored as a success with
  an empty output. Now: `success` false, no output, `error` "no result: ...".
* `-p` interrupted (SIGINT) while the call runs: no PostToolUse; 2.1.328's transcript holds an error
  result ("The user doesn't want to proceed ...") and "[Request interrupted by user for tool use]",
  2.1.42's no result at all (as killed).
* `-p` terminated (SIGTERM): no PostToolUse; 2.1.328's transcript holds an error result ("Exit code
  137"), 2.1.42's none (it sends SessionEnd).
* `-p` without the tool allowed (a permission denied): no PostToolUse nor PostToolUseFailure; only
  the transcript's error result says it was denied. 2.1.42 writes that after the Stop hook ran, so
  the daemon waits for it there (ingest `_answer_still_to_come`).

The interactive ways (Esc during a call, the session ending while a permission prompt waits) leave
the same transcript and hook shapes as SIGINT and SIGKILL respectively: a rejection result with the
interrupt row, or no result at all (tests/test_interrupted_tui.py drives them through the TUI).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capture_daemon import hooks_config
from tests.claude_harness import claude_env, installed_claude
from tests.daemon_harness import import_transcripts, traces_by_prompt, wait_for
from tests.scripted_api import Script, ScriptedAPI, text, tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CAPTURE_DAEMON = [sys.executable, "-m", "capture_daemon.cli"]
VERSIONS = {"pinned": ("claude-code", None), "2.1.42": ("claude-code-2.1.42", (2, 1, 42))}
SLOW = "python3 -c 'import time; time.sleep(60)'"
KILLED, INTERRUPTED, TERMINATED, DENIED = "killed mid call", "interrupted mid call", "terminated mid call", "denied a write"


def _scripts(project: Path) -> list[Script]:
    slow = [[tool("Bash", {"command": SLOW, "description": "Wait"}, id="toolu_slow")], [text("Never sent.")]]
    return [Script(KILLED, slow), Script(INTERRUPTED, slow), Script(TERMINATED, slow),
            Script(DENIED, [[text("I'll write the file."),
                             tool("Write", {"file_path": str(project / "x.txt"), "content": "hi"}, id="toolu_write")],
                            [text("I could not write the file: permission was not granted.")]])]


def _run_until_the_call_runs(binary: Path, prompt: str, sig: signal.Signals, *, cwd: Path, env: dict, uhome: Path) -> None:
    """`claude -p PROMPT`, signalled once its slow call has started (its PreToolUse spooled)."""
    argv = [str(binary), "-p", prompt, "--allowedTools", "Bash", "--output-format", "json"]
    victim = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: _call_started(uhome, prompt), 60, f"{prompt!r}'s call to start")
        time.sleep(1)  # the call is running: the command started
        os.killpg(victim.pid, sig)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()


def _call_started(uhome: Path, prompt: str) -> bool:
    """The prompt's session has spooled a PreToolUse."""
    def body(path: Path) -> dict:
        try:
            return json.loads(path.read_bytes().partition(b"\n")[2])
        except (ValueError, OSError):
            return {}

    spool = uhome / "spool"
    sessions = {body(p).get("session_id") for p in spool.glob("*UserPromptSubmit.event") if body(p).get("prompt") == prompt}
    return any(body(p).get("session_id") in sessions for p in spool.glob("*PreToolUse.event"))


@pytest.fixture(scope="module", params=list(VERSIONS))
def captured(request, tmp_path_factory):
    version = request.param
    binary = installed_claude(VERSIONS[version][0])
    root = tmp_path_factory.mktemp(f"unfinished-{version}")
    home, uhome, project = root / "home", root / "understudy", root / "project"
    home.mkdir()
    project.mkdir()
    uhome.mkdir(mode=0o700)
    (uhome / "config.toml").write_text("[capture]\nidle_timeout_seconds = 3\n")
    hooks_config.install(home / ".claude" / "settings.json", claude_version=VERSIONS[version][1])
    env = dict(os.environ, UNDERSTUDY_HOME=str(uhome), HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    with ScriptedAPI(_scripts(project)) as api:
        cli_env = claude_env(home, uhome, api.base_url)
        # Only Bash allowed: the Write is denied, as `-p` denies what no rule allows.
        subprocess.run([str(binary), "-p", DENIED, "--allowedTools", "Bash", "--output-format", "json"], cwd=project,
                       env=cli_env, stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=True)
        for prompt, sig in ((KILLED, signal.SIGKILL), (INTERRUPTED, signal.SIGINT), (TERMINATED, signal.SIGTERM)):
            _run_until_the_call_runs(binary, prompt, sig, cwd=project, env=cli_env, uhome=uhome)
    subprocess.run([*CAPTURE_DAEMON, "start"], env=env, capture_output=True, text=True, timeout=60, check=True)
    try:  # the killed session never ends: committed after the 3 s idle timeout
        wait_for(lambda: not list((uhome / "spool").glob("*.event")), 60, "the spool to drain")
    finally:
        subprocess.run([*CAPTURE_DAEMON, "stop"], env=env, capture_output=True, text=True, timeout=60)
    fresh = root / "imported"
    import_transcripts(env, home, fresh)
    return {"version": version, "live": traces_by_prompt(env, uhome), "imported": traces_by_prompt(env, fresh)}


def _call(trace: dict) -> dict:
    [call] = trace["tool_calls"]
    return call


@pytest.mark.parametrize("side", ["live", "imported"])
def test_a_call_whose_session_was_killed_is_no_success(captured, side):
    trace = captured[side][KILLED]
    call = _call(trace)
    assert not trace["complete"]
    assert call["tool_use_id"] == "toolu_slow" and call["input"]["command"] == SLOW
    assert call["success"] is False and call["output"] is None
    assert call["error"].startswith("no result: ") and "returned" in call["error"]


@pytest.mark.parametrize("side", ["live", "imported"])
@pytest.mark.parametrize("prompt, said", [(INTERRUPTED, "The user doesn't want to proceed"), (TERMINATED, "Exit code"),
                                          (DENIED, "requested permissions to write")])
def test_a_call_the_cli_ended_is_recorded_with_what_the_model_saw(captured, side, prompt, said):
    call = _call(captured[side][prompt])
    # 2.1.42 writes no result for a call it was interrupted or terminated in; 2.1.328 writes the
    # killed command's "Exit code" on SIGTERM when it gets to it before it exits, which on a busy
    # machine it sometimes does not. Either way live and import agree on what the model read (the
    # error may say more live: there the SessionEnd hook tells why), and it is no success.
    wrote_none = ((captured["version"] == "2.1.42" and prompt != DENIED)
                  or (prompt == TERMINATED and call["output"] is None))
    other = _call(captured["imported" if side == "live" else "live"][prompt])
    assert (call["success"], call["output"]) == (other["success"], other["output"])
    if wrote_none:
        assert call["success"] is False and call["output"] is None and call["error"].startswith("no result: "), call
        return
    assert call["success"] is False and said in call["output"] and said in call["error"], call


def test_the_denied_write_is_a_complete_trace_with_its_answer(captured):
    for side in ("live", "imported"):
        trace = captured[side][DENIED]
        assert trace["complete"] and trace["final_response"] == "I could not write the file: permission was not granted."
        assert _call(trace)["name"] == "Write"
