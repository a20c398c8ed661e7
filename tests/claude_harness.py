"""Drive the real Claude Code CLI offline, with understudy's hooks registered as install.sh does.

    from tests.claude_harness import claude_home, run_claude, spool_events
    from tests.scripted_api import ScriptedAPI, Script, text, tool

    def test_something(claude_home, understudy_home, tmp_path):   # claude_home: a fixture
        with ScriptedAPI([Script("list", [[tool("Bash", {"command": "ls"})], [text("Done.")]])]) as api:
            proc = run_claude("list the files", home=claude_home, understudy_home=understudy_home,
                              cwd=tmp_path, base_url=api.base_url, allowed_tools="Bash Read")
        assert json.loads(proc.stdout)["result"] == "Done."
        events = spool_events(understudy_home)        # [(header, payload), ...] in arrival order

API:

* ``installed_claude(folder)`` -> Path: an older CLI of the version matrix in ``.tools/<folder>``.
* ``claude_bin()`` -> Path: ``$UNDERSTUDY_CLAUDE_BIN`` (test.sh sets it), else
  ``.tools/claude-code/node_modules/.bin/claude`` in the checkout. The test is skipped when
  neither exists, and fails when ``$UNDERSTUDY_CLAUDE_BIN`` names a missing file.
* ``write_settings_with_hooks(home)`` -> Path: registers the hooks in ``home/.claude/settings.json``
  with ``hooks_config.install``, exactly as ``capture-daemon hooks install`` would.
* ``claude_home`` fixture: a temp HOME with the hooks registered (needs the CLI; skips without it).
* ``run_claude(prompt, *, home, understudy_home, cwd, base_url, allowed_tools, extra_args=(),
  timeout=120)`` -> CompletedProcess (text): ``claude -p PROMPT --allowedTools ... --output-format
  json`` with HOME and CLAUDE_CONFIG_DIR inside ``home``, the API at ``base_url``, a dummy key, no
  stdin, and no CLAUDE*/ANTHROPIC* variables from the outer environment. Does not check the exit code.
* ``StreamSession(binary, cwd=, env=)``: ``claude -p`` in stream-json mode, open until stdin closes
  (``.send(text)`` a user message, ``.proc`` the process).
* ``TuiSession(binary, home=, cwd=, env=, socket=)``: the interactive CLI in a detached tmux
  session on its own socket (``.type(text)`` types a line and Enter, ``.screen()`` the pane,
  ``.wait_for(text)``, ``.close()``); skips the test where tmux is not installed.
* ``spool_events(understudy_home)`` -> [(header dict, payload dict or None)] for the spool files,
  sorted by name (arrival order); payload is None when the body is not JSON.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import pytest

from capture_daemon import hooks_config

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLAUDE_BIN = REPO_ROOT / ".tools" / "claude-code" / "node_modules" / ".bin" / "claude"


def claude_bin() -> Path:
    named = os.environ.get("UNDERSTUDY_CLAUDE_BIN")
    if named:
        if not os.access(named, os.X_OK):
            pytest.fail(f"UNDERSTUDY_CLAUDE_BIN={named} is not an executable file")
        return Path(named)
    if not os.access(DEFAULT_CLAUDE_BIN, os.X_OK):
        pytest.skip(f"Claude Code CLI not installed at {DEFAULT_CLAUDE_BIN}; ./test.sh installs it")
    return DEFAULT_CLAUDE_BIN


def installed_claude(folder: str) -> Path:
    """The CLI test.sh installed in `.tools/<folder>`: an older one of the version matrix, or, for
    "claude-code", the pinned one (``claude_bin()``, so ``$UNDERSTUDY_CLAUDE_BIN`` still wins)."""
    if folder == "claude-code":
        return claude_bin()
    path = REPO_ROOT / ".tools" / folder / "node_modules" / ".bin" / "claude"
    if not os.access(path, os.X_OK):
        pytest.skip(f"Claude Code not installed at {path}; ./test.sh installs it")
    return path


def write_settings_with_hooks(home: Path) -> Path:
    settings = Path(home) / ".claude" / "settings.json"
    hooks_config.install(settings)
    return settings


@pytest.fixture
def claude_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    claude_bin()
    home = tmp_path_factory.mktemp("claude-home")
    write_settings_with_hooks(home)
    return home


def fresh_user(root: Path) -> tuple[Path, Path, Path, dict]:
    """(home, understudy home, project, env) of a fresh user under `root`: the folders made, a 3 s
    idle timeout so an unfinished prompt commits soon, env pointing HOME, CLAUDE_CONFIG_DIR and
    UNDERSTUDY_HOME there."""
    home, uhome, project = root / "home", root / "understudy", root / "project"
    home.mkdir()
    project.mkdir()
    uhome.mkdir(mode=0o700)
    (uhome / "config.toml").write_text("[capture]\nidle_timeout_seconds = 3\n")
    env = dict(os.environ, UNDERSTUDY_HOME=str(uhome), HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    return home, uhome, project, env


def claude_env(home: Path, understudy_home: Path, base_url: str, extra: Optional[dict] = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE", "ANTHROPIC"))}
    env.update(
        HOME=str(home),
        CLAUDE_CONFIG_DIR=str(Path(home) / ".claude"),
        UNDERSTUDY_HOME=str(understudy_home),
        ANTHROPIC_BASE_URL=base_url,
        ANTHROPIC_API_KEY="dummy",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
    )
    env.update(extra or {})
    return env


def run_claude(
    prompt: str,
    *,
    home: Path,
    understudy_home: Path,
    cwd: Path,
    base_url: str,
    allowed_tools: Union[str, Sequence[str]] = "Bash Read",
    extra_args: Iterable[str] = (),
    timeout: float = 120,
    env: Optional[dict] = None,
) -> subprocess.CompletedProcess:
    tools = allowed_tools if isinstance(allowed_tools, str) else " ".join(allowed_tools)
    argv = [str(claude_bin()), "-p", prompt, "--allowedTools", tools, "--output-format", "json", *extra_args]
    return subprocess.run(
        argv,
        cwd=cwd,
        env=claude_env(home, understudy_home, base_url, env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class StreamSession:
    """``claude -p --input-format stream-json --output-format stream-json``: the session stays
    open while stdin does, so a test sends user messages (``send``) while it runs (a message
    mid-turn, a next prompt) and reads the CLI's rows (``proc.stdout``, one JSON object a line)."""

    def __init__(self, binary: Path, *, cwd: Path, env: dict, allowed_tools: str = "Bash"):
        argv = [str(binary), "-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose",
                "--allowedTools", allowed_tools]
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)

    def send(self, words: str) -> None:
        self.proc.stdin.write(json.dumps({"type": "user", "message": {"role": "user", "content": words}}) + "\n")
        self.proc.stdin.flush()


class TuiSession:
    """The interactive CLI in tmux, typed into as a person would. The onboarding, trust and API
    key questions are answered in ``home``'s config beforehand, and Bash is allowed."""

    def __init__(self, binary: Path, *, home: Path, cwd: Path, env: dict, socket: Path, permission_mode: str | None = None):
        """``permission_mode`` "default" makes a call no rule allows ask first (2.1.328's own
        default is auto mode, which asks nothing)."""
        if shutil.which("tmux") is None:
            pytest.skip("tmux is not installed: the interactive CLI cannot be driven")
        self._answer_first_run_questions(Path(home), Path(cwd), env["ANTHROPIC_API_KEY"], permission_mode)
        self.tmux = ["tmux", "-S", str(socket)]
        script = Path(socket).with_suffix(".sh")  # the environment travels in a script, not on tmux's command line
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        script.write_text(f"#!/bin/sh\n{exports}cd {shlex.quote(str(cwd))}\nexec {shlex.quote(str(binary))}\n")
        script.chmod(0o700)
        subprocess.run([*self.tmux, "new-session", "-d", "-s", "claude", "-x", "160", "-y", "50", str(script)], check=True)

    @staticmethod
    def _answer_first_run_questions(home: Path, cwd: Path, key: str, permission_mode: str | None) -> None:
        config = {"hasCompletedOnboarding": True, "theme": "dark", "numStartups": 5, "lastOnboardingVersion": "2.1.328",
                  "customApiKeyResponses": {"approved": [key[-20:]], "rejected": []},
                  "bypassPermissionsModeAccepted": True, "hasAcknowledgedCostThreshold": True,
                  "projects": {str(cwd): {"hasTrustDialogAccepted": True, "allowedTools": [],
                                          "hasCompletedProjectOnboarding": True}}}
        for path in (home / ".claude.json", home / ".claude" / ".claude.json"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(config))
        settings_path = home / ".claude" / "settings.json"
        settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
        settings["permissions"] = {"allow": ["Bash"], **({"defaultMode": permission_mode} if permission_mode else {})}
        settings_path.write_text(json.dumps(settings))

    def screen(self) -> str:
        return subprocess.run([*self.tmux, "capture-pane", "-p", "-t", "claude"], capture_output=True, text=True).stdout

    def type(self, words: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", "claude", "-l", words], check=True)
        time.sleep(0.5)  # the TUI takes a pasted burst as a paste; Enter after it submits
        subprocess.run([*self.tmux, "send-keys", "-t", "claude", "Enter"], check=True)

    def press(self, key: str) -> None:
        """One key by tmux's name for it ("Escape", "Enter")."""
        subprocess.run([*self.tmux, "send-keys", "-t", "claude", key], check=True)

    def wait_for(self, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.screen():
                return
            time.sleep(0.3)
        raise AssertionError(f"{needle!r} never showed; the screen:\n{self.screen()}")

    def close(self) -> None:
        """Exit as a person does (Ctrl-D twice), so the session ends with its SessionEnd hook."""
        for _ in range(2):
            subprocess.run([*self.tmux, "send-keys", "-t", "claude", "C-d"], capture_output=True)
            time.sleep(1)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and subprocess.run([*self.tmux, "has-session", "-t", "claude"],
                                                             capture_output=True).returncode == 0:
            time.sleep(0.3)
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)


def spool_events(understudy_home: Path) -> list[tuple[dict, Optional[dict]]]:
    events = []
    for path in sorted((Path(understudy_home) / "spool").glob("*.event")):
        head, _, body = path.read_bytes().partition(b"\n")
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        events.append((json.loads(head), payload))
    return events
