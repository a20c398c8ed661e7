"""What `capture-daemon status` reports: gathered as data, rendered for people separately."""

from __future__ import annotations

import sqlite3
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from capture_daemon import daemon, hooks_config, paths
from capture_daemon.render import printable
from capture_daemon.loop import read_state
from capture_daemon.spool import pending_names, quarantined
from capture_daemon.store import TraceStore, store_problem

MAX_ERRORS = 10


def _tail(path, limit: int) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip()][-limit:]


def _config() -> tuple[int, str | None]:
    """(the accepted-trace target, what is wrong with config.toml or None): the daemon cannot start
    on a broken one, so status says so (with the default target meanwhile)."""
    from capture_daemon.config import CaptureSettings, ConfigError, load_config

    try:
        return int(load_config().capture.target_accepted), None
    except ConfigError as exc:
        return CaptureSettings().target_accepted, exc.message


def _target_accepted() -> int:
    """The accepted-trace target (the default while config.toml is broken)."""
    return _config()[0]


def collect_status() -> dict[str, Any]:
    pid = daemon.running_pid()
    traces: dict[str, Any] = {"total": 0}
    if paths.store_path().exists():
        try:
            with TraceStore.open() as store:
                traces = store.stats()
        except (sqlite3.DatabaseError, OSError) as exc:  # report it, and everything else (a read-only disk too)
            traces = {"total": 0, "problem": store_problem(exc)}
    target, config_problem = _config()
    traces["target_accepted"] = target
    traces["progress"] = round(min(1.0, traces.get("accepted", 0) / target), 3) if target else None
    quarantine = quarantined(paths.quarantine_dir())
    registered = hooks_config.registered(hooks_config.settings_path()) if hooks_config.settings_path().exists() else {}
    switched_off = hooks_config.hooks_switched_off(hooks_config.settings_path(), project=Path.cwd()) if registered else None
    # A short wait: a `claude` that hangs must not hang `status` (then no version is reported).
    claude_version = hooks_config.detect_claude_version(timeout=5) if registered else None
    errors = [f"hook: {line}" for line in _tail(paths.hook_error_log(), MAX_ERRORS)]
    errors += [f"daemon: {line}" for line in _tail(paths.logs_dir() / "daemon-errors.log", MAX_ERRORS)]
    return {
        "data_dir": str(paths.data_dir()),
        "daemon": {"running": pid is not None, "pid": pid},
        "capture": {"paused": paths.paused_flag().exists(),
                    "hooks_settings": str(hooks_config.settings_path()),
                    "hooks_registered": sorted(registered),
                    "hooks_switched_off": switched_off,
                    "claude_version": hooks_config.version_text(claude_version) if claude_version else None,
                    "hooks_claude_ignores": _hooks_claude_ignores(claude_version, registered)},
        "traces": traces,
        "config": {"path": str(paths.config_path()), "problem": config_problem},
        "spool": {"pending_events": len(pending_names(paths.spool_dir())), "quarantined": len(quarantine),
                  "quarantine": quarantine[-MAX_ERRORS:]},
        "errors": errors[-2 * MAX_ERRORS:],
        "health": _daemon_health(pid),
    }


def _hooks_claude_ignores(version, registered) -> str | None:
    """Why the `claude` on PATH runs none of the registered hooks, in one line; None when it runs them."""
    too_old = hooks_config.too_old_for_live_capture(version)
    if too_old:
        return too_old
    unknown = hooks_config.unknown_to(version, registered)
    if unknown:
        return (f"Claude Code {hooks_config.version_text(version)} does not know {', '.join(unknown)} and so runs "
                "no hook at all: run `capture-daemon hooks install` again")
    return None


# A running daemon rewrites its state after every pass (a couple of seconds apart, a
# minute at most while backing off): older than this, it is stuck or cannot write.
STALE_STATE_SECONDS = 90
# Less free space than this on the data dir's disk is reported as full.
LOW_SPACE_BYTES = 1 << 20


def _disk_problem() -> str | None:
    """A full or read-only disk, seen directly: the daemon cannot write its state there."""
    base = paths.data_dir()
    if not base.exists():
        return (f"{base} does not exist (deleted?): the next Claude Code hook event or "
                "`capture-daemon start` makes it again")
    try:
        if not os.access(base, os.W_OK):
            return (f"{base} is not writable (a read-only disk?): capture events wait in the hooks' "
                    "spool once it is writable again; make it writable")
        vfs = os.statvfs(base)
    except OSError:
        return None
    if vfs.f_bavail * vfs.f_frsize < LOW_SPACE_BYTES:
        return f"disk full: under 1 MiB free for {base}; free some space, capture catches up by itself"
    return None


def _daemon_health(pid: int | None) -> dict[str, Any]:
    """What the running daemon last said about itself (the problem it is backing off from,
    traces stuck retrying after a failure, each with its reason), and what the disk says."""
    disk = _disk_problem()
    state = read_state() if pid else None
    if not state or state.get("pid") != pid:
        return {"problem": disk, "stuck": [], "state_age_seconds": None}
    age = max(0.0, time.time() - float(state.get("updated_at") or 0))
    problem = state.get("problem") or disk
    if problem is None and age > STALE_STATE_SECONDS:
        problem = (f"the daemon has not reported for {age:.0f}s (it may be hung, or unable to write to "
                   f"{paths.data_dir()}); `capture-daemon stop` then `capture-daemon start`")
    return {"problem": problem, "problem_since": state.get("problem_since"), "retry_at": state.get("retry_at"),
            "stuck": state.get("stuck") or [], "state_age_seconds": round(age, 1)}


def render_problems(report: dict[str, Any], console: Console) -> None:
    """The daemon's own trouble, stuck traces and quarantined events, each with what to do."""
    health = report.get("health") or {}
    if health.get("problem"):
        console.print(Text.assemble(("capture is failing", "red"), ": ", printable(health["problem"])))
    for item in health.get("stuck") or []:
        console.print(Text.assemble(("stuck", "yellow"), f" trace {printable(item.get('trace_id'))}: ",
                                    printable(item.get("reason")),
                                    f" (attempt {item.get('attempts')} of {item.get('max_attempts')}; "
                                    "set aside in quarantine after the last)"))
    spool = report["spool"]
    if spool["quarantined"]:
        console.print(Text(f"quarantined events ({spool['quarantined']}; redacted, deleted after the retention period):",
                           "bold"))
        for item in spool["quarantine"]:
            console.print(Text(f"  {printable(item['name'])}: {printable(item['reason'])}"))
        console.print(Text("  `capture-daemon quarantine list` shows them all; `quarantine retry --all` reads them "
                           "again, `quarantine drop --all` deletes them"))


def render_status(report: dict[str, Any]) -> None:
    # Paths, hook names and logged errors are shown through printable() inside Text: a
    # control sequence or a `[tag]` in them is shown, never interpreted.
    console = Console()
    p = printable
    d, t, s = report["daemon"], report["traces"], report["spool"]
    console.print(Text.assemble(("understudy capture", "bold"), f"  data: {p(report['data_dir'])}"))
    console.print(Text.assemble("daemon: ", *((("running", "green"), f" (pid {d['pid']})") if d["running"]
                                              else (("not running", "red"), " — start it with `capture-daemon start`"))))
    registered = ", ".join(p(name) for name in report["capture"]["hooks_registered"])
    hooks_line = (registered,) if registered else (("none", "red"), " — run `capture-daemon hooks install`")
    console.print(Text.assemble("hooks: ", *hooks_line, f"  ({p(report['capture']['hooks_settings'])})"))
    if report["capture"].get("hooks_switched_off"):
        console.print(Text.assemble(("hooks switched off", "red"), f" by {p(report['capture']['hooks_switched_off'])}: "
                                    "Claude Code runs none of them and nothing is captured; remove that setting"))
    if report["capture"].get("hooks_claude_ignores"):
        console.print(Text.assemble(("hooks not run", "red"), ": ", p(report["capture"]["hooks_claude_ignores"])))
    if report["capture"]["paused"]:
        console.print(Text.assemble(("capture paused", "yellow"), " — `capture-daemon resume` turns it back on"))
    config_problem = (report.get("config") or {}).get("problem")
    if config_problem:
        then = ("the running daemon keeps the settings it read last, and cannot start again until then"
                if d["running"] else "then `capture-daemon start`; until then the daemon cannot start (events wait in the spool)")
        console.print(Text.assemble(("config.toml is broken", "red"), f" ({p(config_problem)}): fix it; {then}"))
    problem = t.get("problem")
    if problem:
        what = "is corrupt" if problem["corrupt"] else "cannot be read"
        fix = f": run `{problem['fix']}` (stop the daemon first)" if problem.get("fix") else ""
        console.print(Text.assemble((f"traces.db {what}", "red"), f" ({p(problem['error'])}){fix}"))
    table = Table(show_header=False, box=None)
    table.add_row("traces", "?" if problem else str(t.get("total", 0)))
    for key in ("complete", "incomplete", "accepted", "rejected", "duplicates", "sessions"):
        if key in t:
            table.add_row(f"  {key}", str(t[key]))
    if t.get("by_pattern"):
        table.add_row("  by pattern", Text(", ".join(f"{p(k)} {v}" for k, v in sorted(t["by_pattern"].items()))))
    if t.get("target_accepted") and not problem:
        table.add_row("  toward target", f"{t.get('accepted', 0)}/{t['target_accepted']} accepted ({100 * (t.get('progress') or 0):.0f}%)")
    if t.get("last_stored_at"):
        when = datetime.fromtimestamp(t["last_stored_at"], tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        table.add_row("  last stored", when)
    table.add_row("spool pending", str(s["pending_events"]))
    table.add_row("quarantined", str(s["quarantined"]))
    console.print(table)
    render_problems(report, console)
    if report["errors"]:
        console.print(Text("recent errors", "bold"))
        for line in report["errors"]:
            console.print(Text("  " + p(line)))
