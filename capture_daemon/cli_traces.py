"""`capture-daemon list | show | import | rescore | forget | pause | resume | config | db`:
looking at, backfilling, re-judging and removing traces."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from capture_daemon import paths
from capture_daemon.cli_db import db, open_store
from capture_daemon.render import printable, render_trace


def _since(value: str | None) -> datetime | None:
    """'2026-11-01', '2026-11-01T10:00', or a relative '7d' / '12h'."""
    if not value:
        return None
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if value[-1] in units and value[:-1].isdigit():
        return datetime.now(timezone.utc) - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is neither a date (2026-11-01) nor an age like 7d or 12h") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@click.command("list")
@click.option("--accepted/--rejected", "accepted", default=None, help="Only accepted (or only rejected) traces.")
@click.option("--pattern", type=click.Choice(["linear", "parallel", "exploratory", "iterative"]))
@click.option("--tool", help="Only traces that called this tool (e.g. Bash).")
@click.option("--since", help="Only traces started since a date (2026-11-01) or an age (7d, 12h).")
@click.option("--project", help="Only traces whose working directory is under this path (or matches this glob).")
@click.option("-n", "--limit", type=int, default=50, show_default=True, help="Show the newest N (0 = all).")
def list_traces(accepted, pattern, tool, since, project, limit) -> None:
    """List stored traces, newest last."""
    with open_store() as store:
        traces = list(store.iter_traces(accepted=accepted, pattern=pattern, tool=tool, since=_since(since), project=project))
    shown = traces[-limit:] if limit else traces
    table = Table("id", "started", "ok", "score", "pattern", "workflow", "prompt", box=None)
    for t in shown:
        q = t.quality
        s = t.reasoning_signals
        cells = (t.trace_id[:12], t.started_at.strftime("%m-%d %H:%M") if t.started_at else "",
                 "" if q is None else ("✓" if q.accepted else "✗"), "" if q is None else f"{q.score:.2f}",
                 s.pattern or "", (s.workflow or " → ".join(s.tool_sequence))[:48], t.prompt.replace("\n", " ")[:60])
        # Text, not str: a cell string would be parsed as rich markup.
        table.add_row(*(Text(printable(cell)) for cell in cells))
    # Piped to a file or another program, rich would wrap the table at 80 columns: one
    # line per trace is what `grep` and `wc -l` expect, so give it room there.
    console = Console()
    if not console.is_terminal:
        console = Console(width=400)
    console.print(table)
    click.echo(f"{len(shown)} of {len(traces)} matching traces")


@click.command()
@click.argument("trace_id")
@click.option("--full", is_flag=True, help="Do not shorten tool inputs and outputs.")
def show(trace_id: str, full: bool) -> None:
    """Show one trace's workflow: prompt, calls, narration, answer, signals, quality."""
    with open_store() as store:
        trace = store.find(trace_id)
    if trace is None:
        raise click.ClickException(f"No trace with id '{printable(trace_id)}' (or more than one starts so); "
                                   "`capture-daemon list` shows ids")
    render_trace(trace, Console(), full=full)


def _size_or_zero(path: Path) -> int:
    """For the progress bar only: a file that cannot be read (a dangling symlink, a loop, one
    deleted since it was listed) counts 0 here and is named by the import as not importable."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


@click.command("import")
@click.argument("sources", nargs=-1, type=click.Path(exists=True, path_type=Path))
def import_cmd(sources: tuple[Path, ...]) -> None:
    """Backfill traces from Claude Code transcripts (default: ~/.claude/projects).

    Prompts already in the store are skipped, so running it again adds nothing.
    """
    from capture_daemon.config import load_config
    from capture_daemon.importer import default_roots, import_paths, prepare_for_store, session_files

    # Every imported trace is judged by its rules: a broken file is one error, not one per prompt.
    capture = load_config().capture
    roots = list(sources) or [r for r in default_roots() if r.exists()]
    if not roots:
        raise click.ClickException(f"No transcripts found at {default_roots()[0]}; pass the folder that holds them")
    total = sum(map(_size_or_zero, session_files(roots)))
    started = time.perf_counter()
    with open_store() as store, Progress(TextColumn("importing"), BarColumn(), DownloadColumn(),
                                                TransferSpeedColumn(), transient=True) as progress:
        task = progress.add_task("import", total=total)
        report = import_paths(roots, store, prepare_for_store, on_file=lambda path, size: progress.advance(task, size),
                              is_excluded=capture.is_excluded)
    elapsed = time.perf_counter() - started
    click.echo(f"imported {report.imported} traces from {report.files} session files "
               f"({report.bytes / 1e6:.1f} MB in {elapsed:.1f}s); {report.skipped_existing} already stored, "
               f"{report.copies} copies of a prompt in an earlier file, "
               f"{report.replaced} incomplete ones replaced, {report.incomplete} incomplete, "
               f"{report.commands} slash-command/bash-mode turns left out, {report.corrupt_lines} corrupt lines skipped"
               + (f", {report.excluded} prompts of excluded projects left out" if report.excluded else ""))
    if report.skipped_rows:
        click.echo("skipped rows: " + ", ".join(f"{n} {printable(why)}" for why, n in sorted(report.skipped_rows.items())))
    for failure in report.failed_files:
        click.echo(f"could not import {printable(failure)}", err=True)
    for failure in report.failed_prompts:
        click.echo(f"could not import {printable(failure)}", err=True)
    if not report.ok:
        lost = len(report.failed_prompts)
        raise click.ClickException(f"{len(report.failed_files)} files and {lost} prompts could not be imported (listed above)")


@click.command()
def rescore() -> None:
    """Re-apply the signal and quality rules (config.toml) to every stored trace.

    A verdict given by hand (`capture-daemon ui`) still wins over the rules afterwards."""
    from capture_daemon.quality import analyze
    from capture_daemon.config import load_config
    from capture_daemon.store import apply_human_verdict

    config = load_config()
    changed = 0
    with open_store() as store:
        traces = list(store.iter_traces())
        human = store.human_verdicts()
        with store.transaction() as db:
            for trace in traces:
                if trace.quality is not None:
                    trace.quality.duplicate_of = None  # recomputed by put()
                updated = apply_human_verdict(analyze(trace, config), human.get(trace.trace_id))
                changed += (updated.quality.accepted if updated.quality else None) != (trace.quality.accepted if trace.quality else None)
                store.put(updated, db=db)
        accepted = store.count(accepted=True)
    kept = f"; {len(human)} verdicts given by hand kept" if human else ""
    click.echo(f"rescored {len(traces)} traces: {accepted} accepted, {changed} changed verdict{kept}")


@click.command()
@click.argument("trace_id", required=False)
@click.option("--session", "session_id", help="Forget every trace of this session.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def forget(trace_id: str | None, session_id: str | None, yes: bool) -> None:
    """Remove a trace (or a whole session) from the store for good."""
    if bool(trace_id) == bool(session_id):
        raise click.UsageError("give a TRACE_ID or --session SESSION_ID (one of them)")
    with open_store() as store:
        if trace_id:
            trace = store.find(trace_id)
            if trace is None:
                raise click.ClickException(f"No trace with id '{printable(trace_id)}'; `capture-daemon list` shows ids")
            if not yes:
                click.confirm(f"Forget trace {printable(trace.trace_id)} ({printable(repr(trace.prompt[:50]))})?", abort=True)
            store.delete_trace(trace.trace_id)
            click.echo(f"forgot trace {printable(trace.trace_id)}")
        else:
            if not yes:
                click.confirm(f"Forget every trace of session {printable(session_id)}?", abort=True)
            click.echo(f"forgot {store.delete_session(session_id)} traces of session {printable(session_id)}")


@click.command()
def pause() -> None:
    """Stop capturing (hooks keep nothing) until `capture-daemon resume`."""
    paths.ensure(paths.data_dir())
    paths.write_private(paths.paused_flag(), datetime.now(timezone.utc).isoformat() + "\n")
    click.echo("capture paused: Claude Code sessions are not recorded until `capture-daemon resume`")


@click.command()
def resume() -> None:
    """Capture again after `capture-daemon pause`."""
    try:
        paths.paused_flag().unlink()
        click.echo("capture resumed")
    except FileNotFoundError:
        click.echo("capture was not paused")


@click.group()
def config() -> None:
    """The settings file (quality thresholds, excluded projects, idle timeout)."""


@config.command("init")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def config_init(force: bool) -> None:
    """Write a commented config.toml with every setting and its default."""
    from capture_daemon.config import DEFAULT_CONFIG_TOML

    target = paths.config_path()
    if target.exists() and not force:
        raise click.ClickException(f"{target} already exists; edit it, or pass --force to start over")
    paths.ensure(target.parent)
    paths.write_private(target, DEFAULT_CONFIG_TOML)
    click.echo(f"wrote {target}; after editing, `capture-daemon rescore` re-applies the rules")


@config.command("path")
def config_path() -> None:
    """Print where the settings file lives."""
    click.echo(paths.config_path())


def register(group: click.Group) -> None:
    for command in (list_traces, show, import_cmd, rescore, forget, pause, resume, config, db):
        group.add_command(command)
