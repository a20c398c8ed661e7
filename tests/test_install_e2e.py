"""The real Claude Code CLI with the hooks registered as install.sh registers them.

Proves three things: every event reaches the spool with the right prompt_id, the hooks do
not change what Claude Code answers, and the plugin layout (hooks/hooks.json) works too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from capture_daemon import hooks_config
from tests.claude_harness import REPO_ROOT, claude_bin, run_claude, spool_events, write_settings_with_hooks
from tests.scripted_api import Script, ScriptedAPI, text, tool

pytestmark = pytest.mark.e2e

FINAL = "There are two files: notes.txt and main.py."
PROMPT = "What files are in this project?"


def scripts(project: Path) -> list[Script]:
    return [
        Script(
            match=PROMPT,
            turns=[
                [text("Let me look."), tool("Bash", {"command": "ls", "description": "List files"}, id="toolu_e2e_1")],
                [tool("Read", {"file_path": str(project / "notes.txt")}, id="toolu_e2e_2")],
                [text(FINAL)],
            ],
        )
    ]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("transformer notes\n")
    (project / "main.py").write_text("print('hi')\n")
    return project


def run_session(home: Path, understudy_home: Path, project: Path, extra_args=(), env=None):
    with ScriptedAPI(scripts(project)) as api:
        proc = run_claude(
            PROMPT, home=home, understudy_home=understudy_home, cwd=project,
            base_url=api.base_url, allowed_tools="Bash Read", extra_args=extra_args, env=env,
        )
    assert proc.returncode == 0, proc.stderr
    return proc


def assert_session_spooled(understudy_home: Path, session_id: str) -> None:
    events = spool_events(understudy_home)
    names = [h["event"] for h, _ in events]
    assert names == [
        "SessionStart", "UserPromptSubmit",
        "PreToolUse", "PostToolUse", "PreToolUse", "PostToolUse",
        "Stop", "SessionEnd",
    ], names
    for header, payload in events:
        assert payload is not None and payload["hook_event_name"] == header["event"]
        assert payload["session_id"] == session_id
    by_event = {}
    for header, payload in events:
        by_event.setdefault(header["event"], []).append(payload)
    [prompt] = by_event["UserPromptSubmit"]
    assert prompt["prompt"] == PROMPT
    prompt_id = prompt["prompt_id"]
    for event in ("PreToolUse", "PostToolUse", "Stop"):
        assert all(p["prompt_id"] == prompt_id for p in by_event[event]), event
    assert [p["tool_use_id"] for p in by_event["PreToolUse"]] == ["toolu_e2e_1", "toolu_e2e_2"]
    assert [p["tool_name"] for p in by_event["PostToolUse"]] == ["Bash", "Read"]
    assert "notes.txt" in by_event["PostToolUse"][0]["tool_response"]["stdout"]


def test_registered_hooks_capture_a_session_and_change_nothing(claude_home, understudy_home, project, tmp_path):
    captured = run_session(claude_home, understudy_home, project)
    result = json.loads(captured.stdout)
    assert result["result"] == FINAL and result["is_error"] is False
    assert_session_spooled(understudy_home, result["session_id"])
    assert not (understudy_home / "logs" / "hook-errors.log").exists()

    # The same session without hooks answers the same: the hooks are invisible to Claude Code.
    bare_home = tmp_path / "bare-home"
    bare_home.mkdir()
    bare_data = tmp_path / "bare-data"
    bare = json.loads(run_session(bare_home, bare_data, project).stdout)
    assert bare["result"] == result["result"] and bare["num_turns"] == result["num_turns"]
    assert not bare_data.exists()


def test_claude_config_dir_settings_are_the_ones_claude_code_reads(understudy_home, project, tmp_path):
    claude_bin()
    home = tmp_path / "home"  # HOME has no settings; only CLAUDE_CONFIG_DIR does
    home.mkdir()
    config_dir = tmp_path / "claude-config"
    hooks_config.install(config_dir / "settings.json")
    proc = run_session(home, understudy_home, project, env={"CLAUDE_CONFIG_DIR": str(config_dir)})
    assert_session_spooled(understudy_home, json.loads(proc.stdout)["session_id"])


def test_plugin_layout_captures_with_plugin_dir(understudy_home, project, tmp_path):
    claude_bin()
    home = tmp_path / "home"  # no hooks in settings: only the plugin's hooks/hooks.json
    home.mkdir()
    proc = run_session(home, understudy_home, project, extra_args=["--plugin-dir", str(REPO_ROOT)])
    result = json.loads(proc.stdout)
    assert result["result"] == FINAL
    assert_session_spooled(understudy_home, result["session_id"])


def test_project_scope_registration(understudy_home, project, tmp_path):
    claude_bin()
    home = tmp_path / "home"
    home.mkdir()
    hooks_config.install(hooks_config.settings_path(project))
    proc = run_session(home, understudy_home, project)
    assert_session_spooled(understudy_home, json.loads(proc.stdout)["session_id"])


def test_uninstalled_hooks_capture_nothing(claude_home, understudy_home, project):
    hooks_config.uninstall(claude_home / ".claude" / "settings.json")
    run_session(claude_home, understudy_home, project)
    assert spool_events(understudy_home) == []
    write_settings_with_hooks(claude_home)  # and back again
    run_session(claude_home, understudy_home, project)
    assert len(spool_events(understudy_home)) == 8


def test_capture_status_slash_command_runs_capture_daemon_status(understudy_home, tmp_path):
    claude_bin()
    home = tmp_path / "home"
    home.mkdir()
    project = tmp_path / "project"
    shutil.copytree(REPO_ROOT / ".claude" / "commands", project / ".claude" / "commands")
    # As after install.sh: capture-daemon on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    with ScriptedAPI([]) as api:
        proc = run_claude("/capture-status", home=home, understudy_home=understudy_home, cwd=project,
                          base_url=api.base_url, env={"PATH": path})
    assert proc.returncode == 0, proc.stderr
    sent = json.dumps([r["messages"] for r in api.requests])
    assert "capture-status" in sent
    assert str(understudy_home) in sent, "the status output (it names the data dir) reached the model"
    assert "!`capture-daemon" not in sent


def venv_is_current() -> bool:
    """True when install.sh would skip pip, so running it cannot modify the checkout's .venv."""
    stamp = REPO_ROOT / ".venv" / ".understudy-installed"
    digest = hashlib.sha256((REPO_ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    key = f"{digest}-{sys.version.split()[0]} capture"
    return stamp.exists() and key in stamp.read_text().splitlines()


def run_install(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO_ROOT / "install.sh"), *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


def test_install_sh_registers_hooks_idempotently_and_links_the_cli(isolated_env, tmp_path, monkeypatch):
    if not venv_is_current():
        pytest.skip("the checkout's .venv is not up to date; ./test.sh brings it up to date first")
    monkeypatch.delenv("CLAUDE_CONFIG_DIR")
    home = isolated_env.home
    settings = home / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"model": "opus", "env": {"A": "1"}}))
    (home / ".local" / "bin").mkdir(parents=True)
    env = dict(os.environ, PATH=f"{home / '.local' / 'bin'}{os.pathsep}{os.environ['PATH']}")

    first = run_install("--no-daemon", env=env)
    assert first.returncode == 0, first.stderr
    assert f"hooks:   Hooks installed in {settings} (10 events)" in first.stdout
    assert "daemon:  not started (--no-daemon)" in first.stdout
    assert "capture-daemon status" in first.stdout and str(isolated_env.understudy_home) in first.stdout
    data = json.loads(settings.read_text())
    assert data["model"] == "opus" and data["env"] == {"A": "1"}
    assert set(hooks_config.registered(settings)) == set(hooks_config.EVENTS)
    link = home / ".local" / "bin" / "capture-daemon"
    assert link.is_symlink() and link.resolve() == (REPO_ROOT / ".venv" / "bin" / "capture-daemon").resolve()
    after_first = settings.read_bytes()

    second = run_install("--no-daemon", env=env)
    assert second.returncode == 0, second.stderr
    assert f"hooks:   Hooks already installed in {settings}" in second.stdout
    assert settings.read_bytes() == after_first
    assert len(list(settings.parent.glob("settings.json.understudy-backup-*"))) == 1
    assert not isolated_env.understudy_home.exists(), "--no-daemon starts nothing"

    config_dir = tmp_path / "claude-config"
    third = run_install("--no-daemon", "--quiet", env=dict(env, CLAUDE_CONFIG_DIR=str(config_dir)))
    assert third.returncode == 0, third.stderr
    assert set(hooks_config.registered(config_dir / "settings.json")) == set(hooks_config.EVENTS)
    assert "Done." not in third.stdout

    bad = run_install("--bogus", env=env)
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr
