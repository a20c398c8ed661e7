"""Run the real capture daemon and the real hook as a user's machine does, for hostile-input tests.

    with RunningDaemon(uhome) as daemon:          # `capture-daemon start` ... `stop`
        hook(uhome, "UserPromptSubmit", {...})    # hooks/capture_hook.py in its own process
        daemon.wait_for(lambda: daemon.traces(), 20, "the trace")
        daemon.status()                           # `capture-daemon status --json`, parsed

Everything goes through subprocesses with UNDERSTUDY_HOME set, exactly as Claude Code and a
user would run them; nothing is called in-process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
HOOK = REPO_ROOT / "hooks" / "capture_hook.py"
CAPTURE_DAEMON = [sys.executable, "-m", "capture_daemon.cli"]


def env_for(uhome: Path) -> dict[str, str]:
    return dict(os.environ, UNDERSTUDY_HOME=str(uhome))


def hook(uhome: Path, event: str, payload: dict | bytes, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run the hook as Claude Code registers it; it must exit 0 and print nothing."""
    data = payload if isinstance(payload, bytes) else json.dumps(dict(payload, hook_event_name=event)).encode()
    proc = subprocess.run([sys.executable, "-I", "-S", str(HOOK), event], input=data, env=env_for(uhome),
                          capture_output=True, timeout=timeout)
    assert proc.returncode == 0 and proc.stdout == b"", (proc.returncode, proc.stdout[:200], proc.stderr[:500])
    return proc


def prompt_events(uhome: Path, session: str, prompt: str, *, text: str = "list the files", answer: str | None = None,
                  transcript_path: str | None = None, tool_input: Any = None, stop_extra: dict | None = None) -> None:
    """One prompt through the real hook: UserPromptSubmit, a Bash call, Stop."""
    common = {"session_id": session, "prompt_id": prompt, "cwd": "/home/dev/project",
              "transcript_path": transcript_path or f"/nonexistent/{session}.jsonl"}
    hook(uhome, "UserPromptSubmit", dict(common, prompt=text))
    call = dict(common, tool_name="Bash", tool_use_id=f"toolu_{prompt}",
                tool_input={"command": "ls"} if tool_input is None else tool_input)
    hook(uhome, "PreToolUse", call)
    hook(uhome, "PostToolUse", dict(call, tool_response={"stdout": "a.py\nb.py", "stderr": ""}))
    stop = dict(common, last_assistant_message=answer or f"Listed the files for {prompt}.", background_tasks=[])
    hook(uhome, "Stop", dict(stop, **(stop_extra or {})))


class RunningDaemon:
    def __init__(self, uhome: Path):
        self.uhome = Path(uhome)
        self.env = env_for(self.uhome)

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run([*CAPTURE_DAEMON, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, (args, proc.stdout[-1000:], proc.stderr[-2000:])
        return proc

    def __enter__(self) -> "RunningDaemon":
        self.cli("start")
        self.started = {self.pid()}
        return self

    def __exit__(self, *exc: object) -> None:
        pids = {self.pid(), *getattr(self, "started", ())} - {None}
        proc = self.cli("stop", check=False, timeout=60)
        for pid in pids:  # never leave a daemon behind, whatever the test did to its files
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        assert proc.returncode == 0, proc.stderr

    def pid(self) -> int | None:
        try:
            return int((self.uhome / "daemon.pid").read_text())
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        pid = self.pid()
        return bool(pid) and _alive(pid)

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout)

    def traces(self) -> list[dict]:
        """Committed traces, read straight from the store (no daemon code involved)."""
        db_path = self.uhome / "traces.db"
        if not db_path.exists():
            return []
        try:
            with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as db:
                return [json.loads(row[0]) for row in db.execute("SELECT json FROM traces")]
        except sqlite3.Error:
            return []

    def trace_for(self, prompt_id: str) -> dict | None:
        return next((t for t in self.traces() if t["prompt_id"] == prompt_id), None)

    wait_for = staticmethod(lambda predicate, timeout, what: wait_for(predicate, timeout, what))


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """The first truthy value of predicate(), polled every 0.1 s; AssertionError naming
    `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def ingest_spool(env: dict, uhome: Path) -> dict:
    """Start the daemon, let it commit every spooled event, and stop it; returns `status --json`
    as the daemon left it."""
    start = subprocess.run([*CAPTURE_DAEMON, "start"], env=env, capture_output=True, text=True, timeout=60)
    assert start.returncode == 0, start.stderr
    try:
        wait_for(lambda: not list((uhome / "spool").glob("*.event")), 60, "the spool to drain")
        return json.loads(subprocess.run([*CAPTURE_DAEMON, "status", "--json"], env=env, capture_output=True,
                                         text=True, timeout=60, check=True).stdout)
    finally:
        stop = subprocess.run([*CAPTURE_DAEMON, "stop"], env=env, capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0, stop.stderr


def exported_traces(env: dict, uhome: Path | None = None) -> list[dict]:
    """Every stored trace, as `capture-daemon export --format jsonl` gives them to a user; from
    `uhome` when given, else from the UNDERSTUDY_HOME that `env` names."""
    if uhome is not None:
        env = dict(env, UNDERSTUDY_HOME=str(uhome))
    out = subprocess.run([*CAPTURE_DAEMON, "export", "--format", "jsonl"], env=env, capture_output=True, timeout=60,
                         check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def traces_by_prompt(env: dict, uhome: Path | None = None) -> dict[str, dict]:
    return {t["prompt"]: t for t in exported_traces(env, uhome)}


def import_transcripts(env: dict, home: Path, uhome: Path) -> None:
    """`capture-daemon import` of every Claude Code transcript under `home` into the store at
    `uhome` (a fresh one: what a backfill of the same sessions gives, to compare with live)."""
    subprocess.run([*CAPTURE_DAEMON, "import", str(home / ".claude" / "projects")],
                   env=dict(env, UNDERSTUDY_HOME=str(uhome)), capture_output=True, text=True, timeout=120, check=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


def quarantine_reasons(uhome: Path) -> dict[str, str]:
    directory = Path(uhome) / "spool" / "quarantine"
    return {p.name[:-len(".reason")]: p.read_text() for p in directory.glob("*.reason")} if directory.exists() else {}


def write_transcript(path: Path, session: str, prompts: list[str]) -> Path:
    """A transcript in Claude Code's row format for prompts made by prompt_events(): per
    prompt, the user row, narration + the Bash call, its result, the final answer."""
    rows = []
    for prompt in prompts:
        stamp = "2026-12-01T10:00:00.000Z"
        rows.append({"type": "user", "sessionId": session, "promptId": prompt, "timestamp": stamp,
                     "message": {"role": "user", "content": "list the files"}})
        rows.append({"type": "assistant", "sessionId": session, "timestamp": stamp, "message": {
            "id": f"msg_{prompt}_1", "model": "claude-opus-5-5", "role": "assistant",
            "content": [{"type": "text", "text": f"Let me look ({prompt})."}]}})
        rows.append({"type": "assistant", "sessionId": session, "timestamp": stamp, "message": {
            "id": f"msg_{prompt}_1", "model": "claude-opus-5-5", "role": "assistant",
            "content": [{"type": "tool_use", "id": f"toolu_{prompt}", "name": "Bash", "input": {"command": "ls"}}]}})
        rows.append({"type": "user", "sessionId": session, "promptId": prompt, "timestamp": stamp, "message": {
            "role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{prompt}", "content": "a.py\nb.py"}]}})
        rows.append({"type": "assistant", "sessionId": session, "timestamp": stamp, "message": {
            "id": f"msg_{prompt}_2", "model": "claude-opus-5-5", "role": "assistant",
            "content": [{"type": "text", "text": f"Listed the files for {prompt}."}]}})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@contextmanager
def tui_with_daemon(binary: Path, home: Path, uhome: Path, project: Path, env: dict, scripts: list,
                    permission_mode: Optional[str] = None) -> Iterator[tuple[Any, Any]]:
    """The interactive CLI in tmux against `scripts`, the capture daemon running as a user runs
    it: yields (tui, api) at the CLI's first prompt; on leaving, the CLI is closed as a person
    closes it, the spool drained and the daemon stopped."""
    from tests.claude_harness import TuiSession, claude_env
    from tests.scripted_api import ScriptedAPI

    sockets = Path(tempfile.mkdtemp(prefix="understudy-tui-"))  # a socket path must stay short
    subprocess.run([*CAPTURE_DAEMON, "start"], env=env, capture_output=True, text=True, timeout=60, check=True)
    try:
        with ScriptedAPI(scripts) as api:
            tui = TuiSession(binary, home=home, cwd=project, env=claude_env(home, uhome, api.base_url),
                             socket=sockets / "s", permission_mode=permission_mode)
            try:
                tui.wait_for("❯", 60)
                yield tui, api
            finally:
                tui.close()
                shutil.rmtree(sockets, ignore_errors=True)
        wait_for(lambda: not list((uhome / "spool").glob("*.event")), 60, "the spool to drain")
    finally:
        subprocess.run([*CAPTURE_DAEMON, "stop"], env=env, capture_output=True, text=True, timeout=60)
