"""Everything understudy writes is private: folders 0700, files 0600, whatever the umask
and whatever mode the data dir had before (the real CLI and daemon, run under umask 000)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon_harness import wait_for as _wait_for
from click.testing import CliRunner

from capture_daemon import paths
from capture_daemon.cli import main
from capture_daemon.hooks_config import hook_script
from capture_daemon.store import TraceStore

CLI = [sys.executable, "-m", "capture_daemon.cli"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _modes(root: Path) -> dict[str, str]:
    """Every path under root (root included) whose mode is not private: {relative path: mode}."""
    wrong = {}
    for path in [root, *root.rglob("*")]:
        want = 0o700 if path.is_dir() else 0o600
        if _mode(path) != want:
            wrong[str(path.relative_to(root))] = f"{_mode(path):04o}"
    return wrong


def _umask0():
    os.umask(0)


def _cli(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60, preexec_fn=_umask0)
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def _hook(event: str, payload: dict, env: dict) -> None:
    subprocess.run([sys.executable, "-I", "-S", str(hook_script()), event], input=json.dumps(payload).encode(),
                   env=env, check=True, timeout=30, preexec_fn=_umask0)


def test_cli_and_daemon_write_only_private_files_under_umask_000(understudy_home, tmp_path):
    # A data dir (and spool, logs) someone made world-writable before understudy ran.
    old = os.umask(0)
    try:
        for folder in (understudy_home, understudy_home / "spool", understudy_home / "logs"):
            folder.mkdir(mode=0o777)
    finally:
        os.umask(old)
    assert _mode(understudy_home) == 0o777
    outside = tmp_path / "shared"
    outside.mkdir()
    outside.chmod(0o777)
    env = dict(os.environ)

    _cli("config", "init", env=env)
    _cli("pause", env=env)
    assert _modes(understudy_home) == {}  # the folders were tightened, config.toml and paused are 0600
    _cli("resume", env=env)
    _cli("start", env=env)
    try:
        common = {"session_id": "s-perm", "cwd": "/srv/app", "transcript_path": "/nonexistent/s.jsonl"}
        _hook("UserPromptSubmit", dict(common, prompt_id="p1", prompt="list the files"), env)
        tool = dict(common, prompt_id="p1", tool_name="Bash", tool_input={"command": "ls"}, tool_use_id="toolu_1")
        _hook("PreToolUse", tool, env)
        _hook("PostToolUse", dict(tool, tool_response={"stdout": "a b", "stderr": ""}), env)
        _hook("Stop", dict(common, prompt_id="p1", last_assistant_message="a and b"), env)
        _wait_for(lambda: json.loads(_cli("status", "--json", env=env).stdout)["traces"]["total"] == 1, 30,
                  "the daemon to store the trace")
        assert (understudy_home / "traces.db-wal").exists() and (understudy_home / "daemon.pid").exists()
        assert _modes(understudy_home) == {}  # traces.db, its -wal and -shm, pid, lock, logs: while running
        listed = _cli("list", env=env).stdout
        assert "list the files" in listed
        assert "list the files" in _cli("show", listed.splitlines()[1].split()[0], env=env).stdout
        _cli("export", "-o", str(outside / "traces.jsonl"), env=env)
        refused = _cli("db", "recover", "--force", env=env, check=False)
        assert refused.returncode == 1 and "capture-daemon stop" in refused.stderr
    finally:
        _cli("stop", env=env)
    _cli("db", "recover", "--force", env=env)
    assert list(understudy_home.glob("traces.db.corrupt-*"))
    _cli("list", env=env)

    assert _modes(understudy_home) == {}
    assert _mode(outside / "traces.jsonl") == 0o600
    assert len((outside / "traces.jsonl").read_text().splitlines()) == 1


def test_library_writes_private_files_whatever_the_umask(understudy_home, tmp_path):
    old = os.umask(0)
    try:
        understudy_home.mkdir(mode=0o755)
        with TraceStore.open() as store:  # -wal and -shm exist while a connection is open
            store.db.execute("CREATE TABLE scratch (x)")
            store.db.execute("INSERT INTO scratch VALUES (1)")
            assert (understudy_home / "traces.db-wal").exists() and (understudy_home / "traces.db-shm").exists()
            assert _modes(understudy_home) == {}
        paths.write_private(paths.config_path(), "# settings\n")
        with paths.open_private(paths.logs_dir().parent / "note.log", "a") as handle:
            handle.write("x\n")
        outside = tmp_path / "export.jsonl"
        outside.write_text("old")
        outside.chmod(0o644)
        with paths.open_private(outside, "wb") as handle:  # an existing file is made private too
            handle.write(b"{}\n")
        assert _mode(outside) == 0o600 and outside.read_text() == "{}\n"
        assert _modes(understudy_home) == {}
    finally:
        os.umask(old)


def test_a_data_dir_that_cannot_be_made_private_is_refused(understudy_home, monkeypatch):
    understudy_home.mkdir()
    understudy_home.chmod(0o755)
    real_chmod = Path.chmod

    def chmod(self, mode, **kw):
        if self == understudy_home:
            raise PermissionError(1, "Operation not permitted")  # as for a folder someone else owns
        return real_chmod(self, mode, **kw)

    monkeypatch.setattr(Path, "chmod", chmod)
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 1
    assert "is mode 0755 and cannot be made private" in result.output and "UNDERSTUDY_HOME" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (understudy_home / "traces.db").exists()


@pytest.mark.parametrize("folder", ["spool", "logs", "spool/quarantine"])
def test_existing_subfolders_are_tightened_too(understudy_home, folder):
    (understudy_home / folder).mkdir(parents=True)
    for path in (understudy_home, *(understudy_home / folder).parents, understudy_home / folder):
        if understudy_home in (path, *path.parents):
            path.chmod(0o777)
    paths.ensure(paths.data_dir())
    assert _modes(understudy_home) == {}
