"""Hook registration in settings.json: merge, backup, idempotence, exact uninstall."""

from __future__ import annotations

import json
import os
import shlex
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from capture_daemon import hooks_config
from capture_daemon.cli_hooks import hooks

THEIR_SETTINGS = {
    "model": "opus",
    "permissions": {"allow": ["Bash(npm test:*)"], "deny": []},
    "env": {"FOO": "bär"},
    "hooks": {
        "PreToolUse": [
            {"matcher": "Bash", "hooks": [{"type": "command", "command": "/usr/local/bin/guard.sh", "timeout": 5}]}
        ],
        "Notification": [{"hooks": [{"type": "command", "command": "notify-send claude"}]}],
    },
    "statusLine": {"type": "command", "command": "~/.claude/statusline.sh"},
}


def write(path: Path, data) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = (json.dumps(data, indent=4) + "\n").encode() if not isinstance(data, bytes) else data
    path.write_bytes(raw)
    return raw


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + hooks_config.BACKUP_INFIX + "*"))


def ours(settings: dict, event: str) -> list[dict]:
    return [h for g in settings["hooks"].get(event, []) for h in g["hooks"] if hooks_config.is_ours(h)]


def test_settings_path_follows_claude_config_dir(isolated_env, monkeypatch, tmp_path):
    assert hooks_config.settings_path() == isolated_env.claude_config_dir / "settings.json"
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "cfg"))
    assert hooks_config.settings_path() == tmp_path / "cfg" / "settings.json"
    monkeypatch.delenv("CLAUDE_CONFIG_DIR")
    assert hooks_config.settings_path() == isolated_env.home / ".claude" / "settings.json"
    assert hooks_config.settings_path(tmp_path) == tmp_path / ".claude" / "settings.json"


def test_command_is_absolute_isolated_and_quoted(tmp_path):
    python = tmp_path / "odd dir" / "python3"
    command = hooks_config.hook_command("PostToolUse", python=python, script=tmp_path / "it's" / "hooks/capture_hook.py")
    words = shlex.split(command)
    assert words == [str(python), "-I", "-S", str(tmp_path / "it's" / "hooks/capture_hook.py"), "PostToolUse"]
    default = shlex.split(hooks_config.hook_command("Stop"))
    assert Path(default[0]).is_absolute() and os.access(default[0], os.X_OK)
    assert not Path(default[0]).is_symlink(), "shims and venv links are resolved"
    assert Path(default[3]) == hooks_config.hook_script() and Path(default[3]).is_file()


def test_install_into_missing_file_registers_every_event(tmp_path):
    path = tmp_path / "cfg" / "settings.json"
    change = hooks_config.install(path)
    assert change.action == "installed" and change.backup is None
    assert change.events == list(hooks_config.EVENTS)
    data = json.loads(path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for event in hooks_config.EVENTS:
        [group] = data["hooks"][event]
        assert group.get("matcher") == ("*" if event in hooks_config.TOOL_EVENTS else None)
        [hook] = group["hooks"]
        assert hook["type"] == "command" and hook["command"] == hooks_config.hook_command(event)
        assert "async" not in hook, "async hooks are killed when `claude -p` exits"
    assert path.read_text().startswith('{\n  "hooks": {\n    "SessionStart"'), "indent 2"


def test_install_merges_and_keeps_everything_else(tmp_path):
    path = tmp_path / "settings.json"
    write(path, THEIR_SETTINGS)
    os.chmod(path, 0o640)
    hooks_config.install(path)
    data = json.loads(path.read_text())
    for key in ("model", "permissions", "env", "statusLine"):
        assert data[key] == THEIR_SETTINGS[key]
    assert data["hooks"]["Notification"] == THEIR_SETTINGS["hooks"]["Notification"]
    assert data["hooks"]["PreToolUse"][0] == THEIR_SETTINGS["hooks"]["PreToolUse"][0], "theirs stay first"
    assert len(ours(data, "PreToolUse")) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o640, "file mode preserved"
    assert "bär" in path.read_text(), "non-ASCII kept as written"


def test_backup_written_once_and_second_install_is_byte_identical(tmp_path):
    path = tmp_path / "settings.json"
    original = write(path, THEIR_SETTINGS)
    first = hooks_config.install(path)
    assert first.action == "installed" and first.backup is not None
    assert backups(path) == [first.backup] and first.backup.read_bytes() == original
    after_first = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    second = hooks_config.install(path)
    assert second.action == "already installed" and not second.changed and second.backup is None
    assert path.read_bytes() == after_first and path.stat().st_mtime_ns == mtime
    assert backups(path) == [first.backup]


def test_uninstall_restores_the_original_semantics(tmp_path):
    path = tmp_path / "settings.json"
    write(path, THEIR_SETTINGS)
    hooks_config.install(path)
    change = hooks_config.uninstall(path)
    assert change.action == "removed" and change.events == list(hooks_config.EVENTS)
    assert json.loads(path.read_text()) == THEIR_SETTINGS
    assert hooks_config.uninstall(path).action == "not installed"


def test_uninstall_removes_the_containers_it_created(tmp_path):
    path = tmp_path / "settings.json"
    write(path, {"model": "opus"})
    hooks_config.install(path)
    hooks_config.uninstall(path)
    assert json.loads(path.read_text()) == {"model": "opus"}


def test_uninstall_keeps_a_hook_someone_added_to_our_group(tmp_path):
    path = tmp_path / "settings.json"
    hooks_config.install(path)
    data = json.loads(path.read_text())
    extra = {"type": "command", "command": "echo also"}
    data["hooks"]["Stop"][0]["hooks"].append(extra)
    write(path, data)
    hooks_config.uninstall(path)
    assert json.loads(path.read_text()) == {"hooks": {"Stop": [{"hooks": [extra]}]}}


def test_install_repoints_entries_of_a_moved_checkout_in_place(tmp_path):
    path = tmp_path / "settings.json"
    old = {
        "hooks": {
            "PreToolUse": [
                {"matcher": "*", "hooks": [{"type": "command", "command": "/old/py -I -S /old/checkout/hooks/capture_hook.py PreToolUse"}]},
                {"matcher": "Bash", "hooks": [{"type": "command", "command": "guard"}]},
                # A duplicate of ours (say, from a second checkout): dropped, with its group.
                {"matcher": "*", "hooks": [{"type": "command", "command": "'/other dir/py' -I -S '/x y/hooks/capture_hook.py' PreToolUse"}]},
            ]
        }
    }
    write(path, old)
    change = hooks_config.install(path)
    assert change.action == "updated" and "PreToolUse" in change.events
    groups = json.loads(path.read_text())["hooks"]["PreToolUse"]
    assert len(groups) == 2
    assert groups[0]["hooks"][0]["command"] == hooks_config.hook_command("PreToolUse"), "same position"
    assert groups[1] == old["hooks"]["PreToolUse"][1]
    assert hooks_config.install(path).action == "already installed"


def test_corrupt_settings_is_an_error_and_nothing_is_written(tmp_path):
    path = tmp_path / "settings.json"
    raw = write(path, b'{"model": "opus",,}')
    with pytest.raises(hooks_config.SettingsError) as err:
        hooks_config.install(path)
    assert str(path) in str(err.value) and "not valid JSON" in str(err.value) and "move it" in str(err.value)
    assert path.read_bytes() == raw and backups(path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]
    with pytest.raises(hooks_config.SettingsError):
        hooks_config.uninstall(path)
    for bad in (b"[1, 2]", b'{"hooks": []}', b'{"hooks": {"Stop": {}}}'):
        write(path, bad)
        with pytest.raises(hooks_config.SettingsError, match="settings.json"):
            hooks_config.install(path)
        assert path.read_bytes() == bad


def test_blank_settings_file_counts_as_empty(tmp_path):
    path = tmp_path / "settings.json"
    write(path, b"\n")
    assert hooks_config.install(path).action == "installed"
    assert set(json.loads(path.read_text())["hooks"]) == set(hooks_config.EVENTS)


def test_symlinked_settings_are_written_through_the_link(tmp_path):
    real = tmp_path / "dotfiles" / "settings.json"
    write(real, {"model": "opus"})
    link = tmp_path / ".claude" / "settings.json"
    link.parent.mkdir()
    link.symlink_to(real)
    hooks_config.install(link)
    assert link.is_symlink()
    assert "hooks" in json.loads(real.read_text())


# --- the click group ----------------------------------------------------------------------------


def test_cli_install_show_uninstall_respect_claude_config_dir(isolated_env):
    runner = CliRunner()
    path = isolated_env.claude_config_dir / "settings.json"
    result = runner.invoke(hooks, ["install"])
    assert result.exit_code == 0, result.output
    assert result.output == f"Hooks installed in {path} (10 events)\n"
    assert runner.invoke(hooks, ["install"]).output == f"Hooks already installed in {path}\n"
    shown = runner.invoke(hooks, ["show"]).output
    assert shown.startswith(f"Settings: {path}\n")
    assert all(f"{e:<20} registered" in shown for e in hooks_config.EVENTS)
    result = runner.invoke(hooks, ["uninstall"])
    assert result.exit_code == 0
    assert result.output.startswith(f"Hooks removed from {path} (10 events)\nPrevious settings kept in ")
    assert json.loads(path.read_text()) == {}
    assert "No understudy hooks registered" in runner.invoke(hooks, ["show"]).output


def test_cli_project_writes_dir_dot_claude_settings(isolated_env, tmp_path):
    project = tmp_path / "repo"
    project.mkdir()
    runner = CliRunner()
    result = runner.invoke(hooks, ["install", "--project", str(project)])
    assert result.exit_code == 0, result.output
    path = project / ".claude" / "settings.json"
    assert set(hooks_config.registered(path)) == set(hooks_config.EVENTS)
    assert not (isolated_env.claude_config_dir / "settings.json").exists()
    assert runner.invoke(hooks, ["uninstall", "--project", str(project)]).exit_code == 0
    assert hooks_config.registered(path) == {}
    missing = runner.invoke(hooks, ["install", "--project", str(tmp_path / "nope")])
    assert missing.exit_code != 0 and "no such directory" in missing.output.lower()


def test_cli_corrupt_settings_gives_a_clear_message_not_a_traceback(isolated_env):
    path = isolated_env.claude_config_dir / "settings.json"
    write(path, b"{oops")
    result = CliRunner().invoke(hooks, ["install"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {path} is not valid JSON (line 1, column 2")
    assert "Fix it or move it aside" in result.output
    assert path.read_bytes() == b"{oops"


# --- the shipped hook files agree with hooks_config ---------------------------------------------


@pytest.mark.parametrize("relpath", ["hooks/hooks.json", ".claude/settings.example.json"])
def test_shipped_hook_files_register_every_event_like_install(relpath):
    doc = json.loads((Path(hooks_config.__file__).resolve().parent.parent / relpath).read_text())
    assert list(doc["hooks"]) == list(hooks_config.EVENTS)
    for event, groups in doc["hooks"].items():
        [group] = groups
        assert group.get("matcher") == ("*" if event in hooks_config.TOOL_EVENTS else None)
        [hook] = group["hooks"]
        assert hooks_config.is_ours(hook) and "async" not in hook
        words = shlex.split(hook["command"])
        assert words[1:3] == ["-I", "-S"] and words[-1] == event


def test_plugin_manifest():
    root = Path(hooks_config.__file__).resolve().parent.parent
    manifest = json.loads((root / ".claude-plugin" / "plugin.json").read_text())
    assert manifest["name"] == "understudy"
    assert "hooks" not in manifest, "hooks/hooks.json is loaded by convention; naming it again loads it twice"
    assert "${CLAUDE_PLUGIN_ROOT}/hooks/capture_hook.py" in (root / "hooks" / "hooks.json").read_text()


def test_lone_surrogate_in_settings_survives(tmp_path):
    path = tmp_path / "settings.json"
    write(path, b'{"env": {"ODD": "\\ud800x"}}')
    hooks_config.install(path)
    assert json.loads(path.read_text())["env"] == {"ODD": "\ud800x"}
    hooks_config.uninstall(path)
    assert json.loads(path.read_text()) == {"env": {"ODD": "\ud800x"}}


def test_old_claude_code_gets_only_the_events_it_knows(tmp_path):
    """Claude Code before 2.0.64 runs no hook at all when its hooks block names an event it
    does not know; a later install for a newer version adds them back."""
    settings = tmp_path / "settings.json"
    assert hooks_config.parse_version("2.0.0 (Claude Code)") == (2, 0, 0)
    assert hooks_config.parse_version("no version here") is None
    hooks_config.install(settings)
    hooks_config.install(settings, claude_version=(2, 0, 45))
    registered = set(hooks_config.registered(settings))
    assert not registered & {"PostToolUseFailure", "SubagentStart"}
    assert {"PreToolUse", "PostToolUse", "Stop", "SessionStart"} <= registered
    hooks_config.install(settings, claude_version=(2, 1, 328))
    assert set(hooks_config.registered(settings)) == set(hooks_config.EVENTS)
    assert hooks_config.events_for(None) == hooks_config.EVENTS


def test_hooks_switched_off_by_claude_code_settings_are_reported(isolated_env, monkeypatch, tmp_path):
    """`disableAllHooks: true` (user or project settings), or managed settings that allow only
    their own hooks: Claude Code runs none of ours and nothing is captured. `hooks install`
    and `status` say so instead of reporting capture as set up."""
    from capture_daemon.cli import main

    managed = tmp_path / "managed-settings.json"
    monkeypatch.setitem(hooks_config.MANAGED_SETTINGS, os.sys.platform, managed)
    path = isolated_env.claude_config_dir / "settings.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"disableAllHooks": True, "model": "x"}))
    runner = CliRunner()
    result = runner.invoke(hooks, ["install"])
    assert result.exit_code == 0
    assert f'"disableAllHooks": true in {path} switches every hook off' in result.output
    report = json.loads(runner.invoke(main, ["status", "--json"]).output)
    assert report["capture"]["hooks_switched_off"] == f'"disableAllHooks": true in {path}'
    assert "hooks switched off" in runner.invoke(main, ["status"]).output
    assert "switches every hook off" in runner.invoke(hooks, ["show"]).output

    path.write_text(json.dumps({**json.loads(path.read_text()), "disableAllHooks": False}))
    assert "switches every hook off" not in runner.invoke(hooks, ["install"]).output
    assert json.loads(runner.invoke(main, ["status", "--json"]).output)["capture"]["hooks_switched_off"] is None
    managed.write_text(json.dumps({"allowManagedHooksOnly": True}))
    assert hooks_config.hooks_switched_off(path) == f'"allowManagedHooksOnly": true in {managed}'
    managed.write_text("{not json")  # unreadable: nothing to say here
    assert hooks_config.hooks_switched_off(path) is None
    project = tmp_path / "repo"
    (project / ".claude").mkdir(parents=True)
    (project / ".claude" / "settings.local.json").write_text(json.dumps({"disableAllHooks": True}))
    assert hooks_config.hooks_switched_off(path, project=project) == \
        f'"disableAllHooks": true in {project / ".claude" / "settings.local.json"}'


# The first published Claude Code that runs each event (from each release's cli.js on npm):
# 1.0.60 knows neither SessionStart nor SessionEnd, 1.0.84 no SessionEnd, 1.0.128 both, and
# none of them PostToolUseFailure or SubagentStart.
@pytest.mark.parametrize("version, left_out", [
    ((1, 0, 53), {"SessionStart", "SessionEnd", "PostToolUseFailure", "SubagentStart"}),
    ((1, 0, 60), {"SessionStart", "SessionEnd", "PostToolUseFailure", "SubagentStart"}),
    ((1, 0, 84), {"SessionEnd", "PostToolUseFailure", "SubagentStart"}),
    ((1, 0, 128), {"PostToolUseFailure", "SubagentStart"}),
    ((2, 0, 63), {"PostToolUseFailure", "SubagentStart"}),
    ((2, 0, 64), set()),
])
def test_claude_code_1_0_gets_only_the_events_it_knows(tmp_path, version, left_out):
    """A 1.0.x Claude Code ignores its whole hooks block for one event it does not know (1.0.60
    seen running no hook at all): every event it lacks is left out, not just 2.0's two."""
    settings = tmp_path / "settings.json"
    hooks_config.install(settings, claude_version=version)
    assert set(hooks_config.registered(settings)) == set(hooks_config.EVENTS) - left_out
    assert hooks_config.too_old_for_live_capture(version) is None
    assert hooks_config.unknown_to(version, hooks_config.registered(settings)) == []


def test_claude_code_without_user_prompt_submit_is_refused(isolated_env):
    """Before 1.0.53 Claude Code runs no UserPromptSubmit hook: hooks cannot capture a prompt,
    so `hooks install` says so in one line and writes nothing."""
    path = isolated_env.claude_config_dir / "settings.json"
    result = CliRunner().invoke(hooks, ["install", "--claude-version", "1.0.51"])
    assert result.exit_code == 1
    assert "Claude Code 1.0.51 runs no UserPromptSubmit hook" in result.output
    assert "upgrade it to 1.0.53 or later" in result.output and "Traceback" not in result.output
    assert not path.exists()
    result = CliRunner().invoke(hooks, ["install", "--claude-version", "1.0.60"])
    assert result.exit_code == 0, result.output
    assert "does not know SessionStart, PostToolUseFailure, SubagentStart, SessionEnd" in result.output


def test_status_says_when_the_claude_on_path_runs_none_of_the_hooks(isolated_env, monkeypatch, tmp_path):
    """Settings written for a newer Claude Code (or for every event) and an older `claude` on
    PATH: it ignores the whole block, so `status` must not report capture as set up."""
    from capture_daemon.cli import main

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "claude"
    fake.write_text("#!/bin/sh\necho '1.0.60 (Claude Code)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    runner = CliRunner()
    assert runner.invoke(hooks, ["install", "--claude-version", "2.1.328"]).exit_code == 0
    report = json.loads(runner.invoke(main, ["status", "--json"]).output)
    assert report["capture"]["claude_version"] == "1.0.60"
    assert report["capture"]["hooks_claude_ignores"] == (
        "Claude Code 1.0.60 does not know SessionStart, PostToolUseFailure, SubagentStart, SessionEnd and so runs "
        "no hook at all: run `capture-daemon hooks install` again")
    assert "hooks not run" in runner.invoke(main, ["status"]).output
    assert runner.invoke(hooks, ["install"]).exit_code == 0  # for the claude on PATH, as the message says
    assert json.loads(runner.invoke(main, ["status", "--json"]).output)["capture"]["hooks_claude_ignores"] is None
    fake.write_text("#!/bin/sh\necho '1.0.45 (Claude Code)'\n")
    assert "runs no UserPromptSubmit hook" in json.loads(
        runner.invoke(main, ["status", "--json"]).output)["capture"]["hooks_claude_ignores"]


def test_the_claude_version_is_asked_once_per_binary(tmp_path):
    """`status` asks on every call and the dashboard every few seconds: the binary is run again
    only when it changed on disk (an upgrade), and a hung one does not hang the caller."""
    fake, runs = tmp_path / "claude", tmp_path / "runs"
    fake.write_text(f"#!/bin/sh\necho x >> {runs}\necho '2.1.328 (Claude Code)'\n")
    fake.chmod(0o755)
    assert [hooks_config.detect_claude_version(str(fake)) for _ in range(3)] == [(2, 1, 328)] * 3
    assert runs.read_text().count("x") == 1
    fake.write_text(f"#!/bin/sh\necho x >> {runs}\necho '2.1.332 (Claude Code)'\n")  # upgraded in place
    assert hooks_config.detect_claude_version(str(fake)) == (2, 1, 332)
    assert runs.read_text().count("x") == 2
    hung = tmp_path / "hung"
    hung.write_text("#!/bin/sh\nsleep 30\n")
    hung.chmod(0o755)
    assert hooks_config.detect_claude_version(str(hung), timeout=0.5) is None
