"""The daemon comes back by itself, and `stop` keeps it stopped.

`capture-daemon start` writes daemon.cmd; from then on the SessionStart hook starts the daemon,
fully detached, whenever it is not running (pid file + lock probe), unless `capture-daemon stop`
left its `stopped` flag or capture is paused. `stop` escalates to SIGKILL after 5 s.
The last two tests drive the real Claude Code CLI (tests/claude_harness.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from capture_daemon import hooks_config, paths
from capture_daemon.store import TraceStore
from tests.claude_harness import run_claude
from tests.daemon_harness import RunningDaemon, prompt_events, wait_for
from tests.scripted_api import Script, ScriptedAPI, text, tool

CAPTURE_DAEMON = [sys.executable, "-m", "capture_daemon.cli"]
SESSION_START = json.dumps({"session_id": "sess-auto", "hook_event_name": "SessionStart", "source": "startup",
                            "cwd": "/home/dev/project"}).encode()


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CAPTURE_DAEMON, *args], capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (our own child, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def daemon_pid() -> int | None:
    """The pid of the daemon holding this data dir's lock (read as the hook does)."""
    from capture_daemon.daemon import running_pid

    return running_pid()


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid) and daemon_pid() != pid, 10, f"daemon {pid} to die")


@pytest.fixture
def daemons(understudy_home):
    """Collects the pids of the daemons a test starts (directly or via a hook); kills them all at the end."""
    seen: set[int] = set()

    def note() -> int | None:
        pid = daemon_pid()
        if pid:
            seen.add(pid)
        return pid

    yield note
    note()
    subprocess.run([*CAPTURE_DAEMON, "stop"], capture_output=True, timeout=60)
    for pid in seen:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def run_session_start_hook() -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    # capture_output: run() returns only once the hook's stdout and stderr are closed by
    # everyone, so a daemon that kept them would show up as a hang here (Claude Code waits too).
    proc = subprocess.run(hooks_config.hook_command("SessionStart"), shell=True, input=SESSION_START,
                          capture_output=True, timeout=30)
    return proc, time.monotonic() - start


# --- start / stop ---------------------------------------------------------------------------


def test_start_records_the_command_and_stop_keeps_it_stopped(daemons, understudy_home):
    out = cli("start").stdout
    pid = daemons()
    assert pid and f"pid {pid}" in out
    argv = json.loads((understudy_home / "daemon.cmd").read_text())
    assert argv == [sys.executable, "-m", "capture_daemon.cli", "run"]
    assert (understudy_home / "daemon.cmd").stat().st_mode & 0o077 == 0
    out = cli("stop").stdout
    assert f"capture daemon stopped (pid {pid})" in out
    assert "until `capture-daemon start`" in out
    assert (understudy_home / "stopped").exists() and not alive(pid)
    cli("start")
    assert not (understudy_home / "stopped").exists(), "start clears the stopped flag"


def test_stop_kills_a_daemon_that_ignores_sigterm(daemons, understudy_home):
    # A stand-in daemon: holds the lock and the pid file as the real one does, ignores SIGTERM.
    paths.ensure(understudy_home)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"lock = open({str(understudy_home / 'daemon.lock')!r}, 'a')\n"
        "fcntl.flock(lock, fcntl.LOCK_EX)\n"
        f"open({str(understudy_home / 'daemon.pid')!r}, 'w').write(str(os.getpid()))\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "ready\n"
        assert daemons() == holder.pid
        start = time.monotonic()
        out = cli("stop").stdout
        elapsed = time.monotonic() - start
        holder.wait(timeout=10)
        assert holder.returncode == -signal.SIGKILL
        assert 4.5 < elapsed < 12, elapsed
        assert f"capture daemon {holder.pid} did not stop within 5s of SIGTERM: killed it (SIGKILL)" in out
        assert "nothing is lost" in out
        assert not (understudy_home / "daemon.pid").exists()
        assert "capture daemon was not running" in cli("stop").stdout
    finally:
        holder.kill()


def test_a_broken_config_is_named_by_start_and_status_and_no_daemon_claims_to_run(daemons, understudy_home):
    """A daemon on a broken config.toml dies at once: `start` used to report it running. Now start
    fails with the file's problem and what to do, status names it, and the hook's way of starting
    it (`capture-daemon run`) exits before taking the lock; fixed, it starts."""
    paths.ensure(understudy_home)
    (understudy_home / "config.toml").write_text("[capture]\nidle_timeout_seconds = 60\nfoo bar\n")
    started = cli("start", check=False)
    assert started.returncode == 1 and "Traceback" not in started.stderr, started
    error = started.stderr.strip()
    assert error.startswith(f"Error: {understudy_home / 'config.toml'}: invalid TOML: ") and "line 3" in error, error
    assert "fix it, then run `capture-daemon start` again" in error and "\n" not in error
    assert daemons() is None
    run = subprocess.run([*CAPTURE_DAEMON, "run"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "invalid TOML" in run.stderr and daemons() is None

    status = " ".join(cli("status").stdout.split())  # as one line, however rich wraps it
    assert "config.toml is broken" in status and "line 3" in status and "the daemon cannot start" in status
    report = json.loads(cli("status", "--json").stdout)
    assert "invalid TOML" in report["config"]["problem"] and not report["daemon"]["running"]

    (understudy_home / "config.toml").write_text("[capture]\nidle_timeout_seconds = 60\n[quality]\nmin_answer_words = 3\nmin_score = 0.99\n")
    assert "capture daemon running" in cli("start").stdout and daemons()
    assert json.loads(cli("status", "--json").stdout)["config"]["problem"] is None
    # Broken while it runs: status says so, and a trace committed meanwhile is stored as usual, judged
    # by the rules read last (before, it failed to build four times and went to quarantine).
    (understudy_home / "config.toml").write_text("[quality]\nmin_score = 'high'\n")
    status = " ".join(cli("status").stdout.split())
    assert "config.toml is broken" in status and "keeps the settings it read last" in status
    prompt_events(understudy_home, "s-typo", "p-typo", answer="Listed the two Python files: a.py and b.py, nothing else.")
    stored = RunningDaemon(understudy_home).trace_for
    trace = wait_for(lambda: stored("p-typo"), 30, "the trace committed while config.toml was broken")
    reasons = "\n".join(trace["quality"]["reasons"])  # (the defaults would reject its 10-word answer as short)
    assert "below min_score 0.99" in reasons and "under 50 words" not in reasons and not trace["quality"]["accepted"]
    report = json.loads(cli("status", "--json").stdout)
    assert report["spool"]["quarantined"] == 0 and not report["health"]["stuck"]


# --- the SessionStart hook ------------------------------------------------------------------


def test_session_start_hook_brings_a_killed_daemon_back(daemons, understudy_home):
    cli("start")
    first = daemons()
    kill9(first)
    proc, elapsed = run_session_start_hook()
    assert proc.returncode == 0 and proc.stdout == b"", proc.stderr
    assert elapsed < 3, "the hook never waits for the daemon"
    second = wait_for(daemons, 30, "the daemon to come back")
    assert second != first and alive(second)
    with open(f"/proc/{second}/cmdline", "rb") as handle:
        assert handle.read().split(b"\0")[1:4] == [b"-m", b"capture_daemon.cli", b"run"]
    assert os.getsid(second) != os.getsid(0), "detached: a session of its own"
    assert "started by the SessionStart hook" in (understudy_home / "logs" / "daemon.log").read_text()
    assert len(list((understudy_home / "spool").glob("*SessionStart.event"))) <= 1  # spooled (maybe already ingested)
    # Alive now: the next session start leaves it alone.
    run_session_start_hook()
    time.sleep(0.5)
    assert daemons() == second


def test_session_start_hook_without_start_or_after_stop_or_paused_starts_nothing(daemons, understudy_home):
    # Never started here: no daemon.cmd, so the hook has nothing to run.
    proc, _ = run_session_start_hook()
    assert proc.returncode == 0 and proc.stdout == b""
    time.sleep(0.5)
    assert daemons() is None and not (understudy_home / "logs" / "daemon.log").exists()

    cli("start")
    cli("stop")
    run_session_start_hook()
    time.sleep(1)
    assert daemons() is None, "stopped stays stopped"

    cli("start")
    cli("pause")
    kill9(daemons())
    run_session_start_hook()
    time.sleep(1)
    assert daemons() is None, "paused: the hook does nothing at all"
    cli("resume")
    run_session_start_hook()
    wait_for(daemons, 30, "the daemon after resume")


def test_session_start_hook_with_a_broken_daemon_cmd_logs_and_exits_0(daemons, understudy_home):
    cli("start")
    kill9(daemons())
    (understudy_home / "daemon.cmd").write_text("not json")
    proc, _ = run_session_start_hook()
    assert proc.returncode == 0 and proc.stdout == b""
    assert "hook SessionStart:" in (understudy_home / "logs" / "hook-errors.log").read_text()
    assert daemons() is None


def test_session_start_hook_with_a_vanished_interpreter_says_to_start_again(daemons, understudy_home, tmp_path):
    cli("start")
    kill9(daemons())
    (understudy_home / "daemon.cmd").write_text(json.dumps([str(tmp_path / "gone" / "python"), "-m", "x"]))
    proc, _ = run_session_start_hook()
    assert proc.returncode == 0 and proc.stdout == b""
    log = (understudy_home / "logs" / "hook-errors.log").read_text()
    assert "daemon.cmd names" in log and "run `capture-daemon start` again" in log


# --- with the real Claude Code CLI ----------------------------------------------------------


def _scripts() -> list[Script]:
    return [Script("list the files please", [
        [tool("Bash", {"command": "ls", "description": "List files"}, id="toolu_auto_1")],
        [text("There are the files you asked about.")],
    ])]


def _commit_count() -> int:
    if not paths.store_path().exists():
        return 0
    with TraceStore.open() as store:
        return store.count()


@pytest.mark.e2e
def test_real_session_restarts_a_killed_daemon_and_its_trace_commits(claude_home, daemons, understudy_home, tmp_path):
    paths.ensure(understudy_home)
    (understudy_home / "config.toml").write_text("[capture]\nidle_timeout_seconds = 3\n")
    cli("start")
    first = daemons()
    kill9(first)
    with ScriptedAPI(_scripts()) as api:
        proc = run_claude("list the files please", home=claude_home, understudy_home=understudy_home,
                          cwd=tmp_path, base_url=api.base_url, allowed_tools="Bash")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["result"] == "There are the files you asked about."
    second = wait_for(daemons, 30, "the session's SessionStart hook to bring the daemon back")
    assert second != first and alive(second)
    wait_for(lambda: _commit_count() == 1, 60, "the session's trace to commit")
    with TraceStore.open() as store:
        [trace] = list(store.iter_traces())
    assert trace.prompt == "list the files please"
    assert [c.tool_use_id for c in trace.tool_calls] == ["toolu_auto_1"]


@pytest.mark.e2e
def test_real_session_after_stop_does_not_restart_the_daemon(claude_home, daemons, understudy_home, tmp_path):
    cli("start")
    pid = daemons()
    assert "until `capture-daemon start`" in cli("stop").stdout
    assert not alive(pid)
    with ScriptedAPI(_scripts()) as api:
        proc = run_claude("list the files please", home=claude_home, understudy_home=understudy_home,
                          cwd=tmp_path, base_url=api.base_url, allowed_tools="Bash")
    assert proc.returncode == 0, proc.stderr[-2000:]
    time.sleep(1)
    assert daemons() is None
    pending = list((understudy_home / "spool").glob("*.event"))
    assert any(p.name.endswith("-SessionStart.event") for p in pending), "events still spool while stopped"
    assert _commit_count() == 0
