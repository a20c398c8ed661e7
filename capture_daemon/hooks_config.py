"""Register understudy's capture hook in a Claude Code settings.json, and take it out again.

Each event gets its own matcher group holding one command::

    /abs/python3.11 -I -S /abs/checkout/hooks/capture_hook.py PostToolUse

A hook entry is ours when its command runs a file named ``hooks/capture_hook.py``; nothing
else in the file is ever changed. ``install`` merges (other keys and other people's hooks are
kept), is idempotent, repoints our entries in place when the checkout or interpreter moved,
and keeps a backup of the file it is about to change. ``uninstall`` removes exactly our
entries and the containers that become empty without them.

    from capture_daemon import hooks_config
    change = hooks_config.install(hooks_config.settings_path())
    print(change.action, change.backup)
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

EVENTS = (
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PostToolUse",
    "PostToolUseFailure",
    "Stop",
    "SubagentStart",
    "SubagentStop",
    "PreCompact",
    "SessionEnd",
)
# Events older Claude Code does not know, with the first published version that runs each (read
# from each release's cli.js on npm; the 1.0.x numbers have gaps where none was published). A
# Claude Code that finds an event it does not know in its hooks block ignores the whole block and
# runs no hook at all (2.0.0, 2.0.45 and 1.0.60 seen; 2.0.64 runs them), so those are left out for
# it: see events_for(). Without PostToolUseFailure a failed call is still seen in the transcript;
# without SessionStart or SessionEnd a session's prompts are still captured.
EVENTS_SINCE: dict[str, tuple[int, int, int]] = {
    "Stop": (1, 0, 31),
    "SubagentStop": (1, 0, 41),
    "PreCompact": (1, 0, 48),
    "UserPromptSubmit": (1, 0, 53),
    "SessionStart": (1, 0, 62),
    "SessionEnd": (1, 0, 85),
    "PostToolUseFailure": (2, 0, 64),
    "SubagentStart": (2, 0, 64),
}
# Live capture opens a trace at UserPromptSubmit and closes it at Stop: before Claude Code runs
# both, hooks alone cannot capture a prompt.
LIVE_CAPTURE_SINCE = max(EVENTS_SINCE["UserPromptSubmit"], EVENTS_SINCE["Stop"])
# Events that take a tool-name matcher; "*" matches every tool.
TOOL_EVENTS = frozenset({"PreToolUse", "PostToolUse", "PostToolUseFailure"})
# Claude Code kills a hook after this many seconds; the hook's own deadline (5 s) comes first.
HOOK_TIMEOUT_SECONDS = 10
HOOK_SCRIPT_SUFFIX = "hooks/capture_hook.py"
BACKUP_INFIX = ".understudy-backup-"


class SettingsError(Exception):
    """The settings file cannot be used as it is; the message says which file and what to do."""


@dataclass
class Change:
    path: Path
    # "installed", "updated", "already installed", "removed", "not installed"
    action: str
    backup: Optional[Path] = None
    events: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.action in ("installed", "updated", "removed")


def settings_path(project: Optional[Path] = None) -> Path:
    """``PROJECT/.claude/settings.json``, else ``${CLAUDE_CONFIG_DIR:-~/.claude}/settings.json``."""
    if project is not None:
        return Path(project).expanduser().absolute() / ".claude" / "settings.json"
    config_dir = os.environ.get("CLAUDE_CONFIG_DIR")
    base = Path(config_dir).expanduser() if config_dir else Path.home() / ".claude"
    return base.absolute() / "settings.json"


def hook_script() -> Path:
    """The capture hook shipped beside this package (the checkout, for an editable install)."""
    return Path(__file__).resolve().parent.parent / "hooks" / "capture_hook.py"


def hook_python() -> Path:
    """The interpreter the hook runs with: this one, symlinks and shims resolved.

    Resolving matters: a pyenv shim costs ~90 ms per call, the real binary a tenth of it.
    With ``-I -S`` the venv's site-packages are never read, so the base interpreter is enough.
    """
    return Path(os.path.realpath(sys.executable))


def hook_command(event: str, python: Optional[Path] = None, script: Optional[Path] = None) -> str:
    python = python or hook_python()
    script = script or hook_script()
    return " ".join([shlex.quote(str(python)), "-I", "-S", shlex.quote(str(script)), event])


def is_ours(hook: Any) -> bool:
    """True for a hook entry that runs understudy's capture hook (from any checkout)."""
    if not isinstance(hook, dict) or not isinstance(hook.get("command"), str):
        return False
    try:
        words = shlex.split(hook["command"])
    except ValueError:
        return False
    return any(w.replace("\\", "/").endswith(HOOK_SCRIPT_SUFFIX) for w in words)


def desired_hook(event: str) -> dict:
    return {"type": "command", "command": hook_command(event), "timeout": HOOK_TIMEOUT_SECONDS}


def desired_group(event: str) -> dict:
    group: dict[str, Any] = {"matcher": "*"} if event in TOOL_EVENTS else {}
    group["hooks"] = [desired_hook(event)]
    return group


# --- reading and writing settings.json ------------------------------------------------------


def load(path: Path) -> tuple[dict, Optional[bytes]]:
    """Return (settings, the file's bytes); a missing or blank file is an empty object."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        raise SettingsError(f"Cannot read {path}: {exc.strerror}.") from exc
    if not raw.strip():
        return {}, raw
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno}: {exc.msg})" if isinstance(exc, json.JSONDecodeError) else ""
        raise SettingsError(
            f"{path} is not valid JSON{where}. Fix it or move it aside, then run this again; nothing was written."
        ) from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{path} does not hold a JSON object. Fix it or move it aside; nothing was written.")
    hooks = data.get("hooks")
    if hooks is not None and not isinstance(hooks, dict):
        raise SettingsError(f'{path}: "hooks" is not an object. Fix it or move it aside; nothing was written.')
    for event, groups in (hooks or {}).items():
        if not isinstance(groups, list):
            raise SettingsError(f'{path}: "hooks.{event}" is not a list. Fix it or move it aside; nothing was written.')
    return data, raw


def _backup(path: Path, raw: bytes, mode: int) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    backup = path.with_name(f"{path.name}{BACKUP_INFIX}{stamp}")
    n = 1
    while backup.exists():
        backup = path.with_name(f"{path.name}{BACKUP_INFIX}{stamp}-{n}")
        n += 1
    _write_atomic(backup, raw, mode)
    return backup


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Temp file in the same folder, fsync, rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _save(path: Path, data: dict, raw: Optional[bytes]) -> Optional[Path]:
    """Write settings, keeping the old file's mode and a backup of its bytes; return the backup."""
    # Write through a symlink (dotfile managers link settings.json), never replace the link itself.
    target = Path(os.path.realpath(path))
    try:
        text = json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \ud800-style escape: keep it escaped
        text = json.dumps(data, indent=2).encode("ascii")
    mode = 0o600
    backup = None
    if raw is not None:
        mode = target.stat().st_mode & 0o7777
        backup = _backup(path, raw, mode)
    _write_atomic(target, text + b"\n", mode)
    return backup


# --- which Claude Code ---------------------------------------------------------------------


def parse_version(text: str) -> Optional[tuple[int, int, int]]:
    """(2, 1, 328) from `claude --version` output such as "2.1.328 (Claude Code)"."""
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(part) for part in match.groups()) if match else None  # type: ignore[return-value]


# (path, size, mtime) → version: `status` asks on every call, and the dashboard every few seconds.
_versions_seen: dict[tuple[str, int, int], Optional[tuple[int, int, int]]] = {}


def detect_claude_version(binary: Optional[str] = None, timeout: float = 20) -> Optional[tuple[int, int, int]]:
    """The version of the `claude` on PATH (or `binary`); None when there is none or it says
    nothing (within `timeout` seconds). Asked once per binary as it is on disk."""
    binary = binary or shutil.which("claude")
    if not binary:
        return None
    try:
        st = os.stat(binary)
    except OSError:
        return None
    key = (os.path.realpath(binary), st.st_size, st.st_mtime_ns)
    if key not in _versions_seen:
        try:
            proc = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            return None  # not remembered: a slow first start may answer next time
        _versions_seen[key] = parse_version(proc.stdout)
    return _versions_seen[key]


def events_for(version: Optional[tuple[int, int, int]]) -> tuple[str, ...]:
    """The events to register for this Claude Code version (every event when unknown)."""
    if version is None:
        return EVENTS
    return tuple(e for e in EVENTS if version >= EVENTS_SINCE.get(e, (0, 0, 0)))


def version_text(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def too_old_for_live_capture(version: Optional[tuple[int, int, int]]) -> Optional[str]:
    """Why hooks cannot capture with this Claude Code version, in one line; None when they can."""
    if version is None or version >= LIVE_CAPTURE_SINCE:
        return None
    return (f"Claude Code {version_text(version)} runs no UserPromptSubmit hook, which live capture starts "
            f"every trace from: upgrade it to {version_text(LIVE_CAPTURE_SINCE)} or later "
            "(`npm install -g @anthropic-ai/claude-code`), then run `capture-daemon hooks install` again")


def unknown_to(version: Optional[tuple[int, int, int]], registered_events) -> list[str]:
    """The registered events this Claude Code version does not know: any one of them makes it
    ignore the whole hooks block (settings written for a newer Claude Code, or for every event)."""
    if version is None:
        return []
    known = set(events_for(version))
    return [e for e in EVENTS if e in registered_events and e not in known]


# --- install / uninstall --------------------------------------------------------------------


def _merge(data: dict, events: tuple[str, ...] = EVENTS) -> dict:
    """Return a copy of data with our hooks registered for `events` (and our entries for
    any other event taken out); data itself is left as it was."""
    data = json.loads(json.dumps(data))  # deep copy, so the caller can compare before and after
    hooks = data.setdefault("hooks", {})
    for event in EVENTS:
        if event not in events:
            _drop_ours(hooks, event)
            continue
        groups = hooks.setdefault(event, [])
        want_group = desired_group(event)
        want_hook = want_group["hooks"][0]
        ours = None  # the group holding our (first) entry for this event
        emptied = []  # groups that held only duplicates of ours
        for group in groups:
            if not isinstance(group, dict) or not isinstance(group.get("hooks"), list):
                continue
            if not any(map(is_ours, group["hooks"])):
                continue
            kept = []
            for hook in group["hooks"]:
                if not is_ours(hook):
                    kept.append(hook)
                elif ours is None:
                    ours = group
                    kept.append(want_hook)  # repoint in place: same position, current paths
            group["hooks"] = kept
            if not kept:
                emptied.append(group)
        if ours is None:
            groups.append(want_group)
        elif len(ours["hooks"]) == 1 and event in TOOL_EVENTS:
            ours["matcher"] = "*"  # our own group: it must still match every tool
        groups[:] = [g for g in groups if not any(g is e for e in emptied)]
    return data


def _drop_ours(hooks: dict, event: str) -> None:
    groups = hooks.get(event)
    if not isinstance(groups, list):
        return
    kept = []
    for group in groups:
        if isinstance(group, dict) and isinstance(group.get("hooks"), list) and any(map(is_ours, group["hooks"])):
            group = dict(group, hooks=[h for h in group["hooks"] if not is_ours(h)])
            if not group["hooks"]:
                continue
        kept.append(group)
    if kept:
        hooks[event] = kept
    else:
        hooks.pop(event, None)


def install(settings_file: Path, claude_version: Optional[tuple[int, int, int]] = None) -> Change:
    """Register the capture hook for every event `claude_version` knows (all when None); idempotent."""
    settings_file = Path(settings_file)
    events = events_for(claude_version)
    data, raw = load(settings_file)
    merged = _merge(data, events)
    if merged == data:
        return Change(settings_file, "already installed", events=list(events))
    before = registered_in(data)
    changed = [e for e in EVENTS if merged["hooks"].get(e) != (data.get("hooks") or {}).get(e)]
    backup = _save(settings_file, merged, raw)
    action = "updated" if before else "installed"
    return Change(settings_file, action, backup=backup, events=changed)


def uninstall(settings_file: Path) -> Change:
    """Remove exactly the entries install added, and containers left empty by that."""
    settings_file = Path(settings_file)
    data, raw = load(settings_file)
    hooks = data.get("hooks")
    if not hooks or not registered_in(data):
        return Change(settings_file, "not installed")
    cleaned = json.loads(json.dumps(data))
    removed = []
    for event in list(cleaned["hooks"]):
        groups = cleaned["hooks"][event]
        new_groups = []
        for group in groups:
            if isinstance(group, dict) and isinstance(group.get("hooks"), list) and any(map(is_ours, group["hooks"])):
                removed.append(event)
                rest = [h for h in group["hooks"] if not is_ours(h)]
                if not rest:
                    continue
                group["hooks"] = rest
            new_groups.append(group)
        if new_groups or not groups:
            cleaned["hooks"][event] = new_groups
        else:
            del cleaned["hooks"][event]
    if not cleaned["hooks"]:
        del cleaned["hooks"]
    backup = _save(settings_file, cleaned, raw)
    return Change(settings_file, "removed", backup=backup, events=sorted(set(removed), key=_event_order))


def _event_order(event: str) -> int:
    return EVENTS.index(event) if event in EVENTS else len(EVENTS)


def registered_in(data: dict) -> dict[str, list[str]]:
    """{event: [our commands]} for the events where our hook is registered."""
    found: dict[str, list[str]] = {}
    for event, groups in (data.get("hooks") or {}).items():
        for group in groups if isinstance(groups, list) else []:
            for hook in group.get("hooks", []) if isinstance(group, dict) else []:
                if is_ours(hook):
                    found.setdefault(event, []).append(hook["command"])
    return found


def registered(settings_file: Path) -> dict[str, list[str]]:
    """Which events run our hook in this settings file (read only)."""
    data, _ = load(Path(settings_file))
    return registered_in(data)


# Where Claude Code reads managed (enterprise policy) settings, by platform.
MANAGED_SETTINGS = {
    "linux": Path("/etc/claude-code/managed-settings.json"),
    "darwin": Path("/Library/Application Support/ClaudeCode/managed-settings.json"),
    "win32": Path("C:/Program Files/ClaudeCode/managed-settings.json"),
}


def hooks_switched_off(settings_file: Path, project: Optional[Path] = None) -> Optional[str]:
    """Why Claude Code runs none of our hooks although they are registered, or None.

    `disableAllHooks: true` in the user's settings, or in a project's (`project` given: its
    `.claude/settings.json` and `settings.local.json`), turns every hook of those files off;
    in managed settings it, or `allowManagedHooksOnly`, turns off all but the managed ones.
    Capture then records nothing, silently: say so wherever the hooks' state is shown. An
    unreadable file says nothing here (`load` reports it where it matters)."""
    candidates = [(Path(settings_file), ("disableAllHooks",))]
    if project is not None:
        folder = Path(project).expanduser().absolute() / ".claude"
        candidates += [(folder / "settings.json", ("disableAllHooks",)),
                       (folder / "settings.local.json", ("disableAllHooks",))]
    managed = MANAGED_SETTINGS.get(sys.platform)
    if managed is not None:
        candidates.append((managed, ("disableAllHooks", "allowManagedHooksOnly")))
    for path, keys in candidates:
        try:
            data, _ = load(path)
        except SettingsError:
            continue
        for key in keys:
            if data.get(key) is True:
                return f'"{key}": true in {path}'
    return None


def is_current(command: str, event: str) -> bool:
    """True when a registered command is exactly what install would write now."""
    return command == hook_command(event)
