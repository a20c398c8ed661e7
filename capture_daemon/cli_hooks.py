"""`capture-daemon hooks ...`: register the capture hook with Claude Code, or take it out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from capture_daemon import hooks_config
from capture_daemon.render import printable

project_option = click.option(
    "--project",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Use DIR/.claude/settings.json instead of the user settings "
    "(${CLAUDE_CONFIG_DIR:-~/.claude}/settings.json).",
)


def _target(project: Optional[Path]) -> Path:
    if project is not None and not project.is_dir():
        raise click.ClickException(f"--project {project}: no such directory")
    return hooks_config.settings_path(project)


@click.group()
def hooks() -> None:
    """Register understudy's capture hook with Claude Code."""


@hooks.command()
@project_option
@click.option("--claude-version", "claude_version", metavar="X.Y.Z",
              help="Register for this Claude Code version (default: the `claude` on PATH, else every event).")
def install(project: Optional[Path], claude_version: Optional[str]) -> None:
    """Register the capture hook for every event.

    Merges into the settings file, keeping everything else in it; the previous file is
    kept as settings.json.understudy-backup-<time> whenever it changes. Running it again
    changes nothing; after the checkout moved, it repoints the entries in place. Claude
    Code runs no hook at all when it finds an event it does not know, so the events an older
    one lacks are left out (two before 2.0.64, more in 1.0.x); run this again after upgrading
    Claude Code. Before 1.0.53 (no UserPromptSubmit hook) it refuses: upgrade first.
    """
    version = hooks_config.parse_version(claude_version) if claude_version else hooks_config.detect_claude_version()
    if claude_version and version is None:
        raise click.BadParameter(f"'{claude_version}' is not a version like 2.1.328", param_hint="--claude-version")
    too_old = hooks_config.too_old_for_live_capture(version)
    if too_old:
        raise click.ClickException(too_old)
    skipped = [e for e in hooks_config.EVENTS if e not in hooks_config.events_for(version)]
    if skipped:
        click.echo(f"Claude Code {hooks_config.version_text(version)} does not know {', '.join(skipped)}: "
                   "leaving them out (run `capture-daemon hooks install` again after upgrading it)")
    try:
        change = hooks_config.install(_target(project), claude_version=version)
    except hooks_config.SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"Cannot write {exc.filename or 'settings'}: {exc.strerror}") from exc
    if not change.changed:
        click.echo(f"Hooks already installed in {change.path}")
    else:
        click.echo(f"Hooks {change.action} in {change.path} ({len(change.events)} events)")
        if change.backup:
            click.echo(f"Previous settings kept in {change.backup}")
    _warn_if_switched_off(change.path, project)


def _warn_if_switched_off(settings_file: Path, project: Optional[Path]) -> None:
    switched_off = hooks_config.hooks_switched_off(settings_file, project=project)
    if switched_off:
        click.echo(f"Warning: {switched_off} switches every hook off: Claude Code will run none of them and "
                   "nothing is captured until that setting is removed", err=True)


@hooks.command()
@project_option
def uninstall(project: Optional[Path]) -> None:
    """Remove exactly what `install` added.

    Everything else in the settings file stays as it was.
    """
    try:
        change = hooks_config.uninstall(_target(project))
    except hooks_config.SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"Cannot write {exc.filename or 'settings'}: {exc.strerror}") from exc
    if not change.changed:
        click.echo(f"No understudy hooks in {change.path}")
        return
    click.echo(f"Hooks removed from {change.path} ({len(change.events)} events)")
    if change.backup:
        click.echo(f"Previous settings kept in {change.backup}")


@hooks.command()
@project_option
def show(project: Optional[Path]) -> None:
    """Show which events run the capture hook."""
    path = _target(project)
    try:
        found = hooks_config.registered(path)
    except hooks_config.SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Settings: {path}{'' if path.exists() else ' (does not exist)'}")
    if not found:
        click.echo("No understudy hooks registered. Run: capture-daemon hooks install")
        return
    stale = False
    for event in hooks_config.EVENTS:
        commands = found.get(event)
        if not commands:
            click.echo(f"  {event:<20} missing")
            continue
        current = all(hooks_config.is_current(c, event) for c in commands)
        stale = stale or not current
        note = "" if current else "  (points elsewhere: " + printable(commands[0]) + ")"
        click.echo(f"  {event:<20} registered{note}")
    missing = [e for e in hooks_config.EVENTS if e not in found]
    if missing or stale:
        click.echo("Run `capture-daemon hooks install` to register the current checkout for every event.")
    _warn_if_switched_off(path, project)
