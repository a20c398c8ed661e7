"""`capture-daemon`: run the capture daemon and look at what it captured.

A thin layer: every command calls into the library (daemon, store, spool); command
groups that grow live in their own modules (cli_hooks, cli_traces).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
import orjson

from capture_daemon import daemon, paths
from capture_daemon.cli_db import open_store
from capture_daemon.cli_hooks import hooks
from capture_daemon.cli_quarantine import quarantine
from capture_daemon.status import collect_status, render_status
from capture_daemon.ui.cli import ui


class _Commands(click.Group):
    """Commands whose unhandled OSError is one line naming the path, not a traceback: the data
    folder (UNDERSTUDY_HOME) naming a file, a folder where traces.db belongs, a full disk."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (BrokenPipeError, KeyboardInterrupt):
            raise
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            what = ("a file stands where a folder belongs" if isinstance(exc, (FileExistsError, NotADirectoryError))
                    else exc.strerror or str(exc))
            raise click.ClickException(
                f"{where}{what} (understudy keeps its data in {paths.data_dir()}; "
                "set UNDERSTUDY_HOME to a folder you can write)") from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="understudy")
def main() -> None:
    """Capture Claude Code workflows as traces (hooks → spool → daemon → store)."""
    # Traces hold prompts, code and command output: whatever this process (or the daemon it
    # starts) creates is for the user's eyes only, whatever umask the shell had.
    os.umask(0o077)


main.add_command(hooks)
main.add_command(quarantine)
main.add_command(ui)


@main.command()
@click.option("-v", "--verbose", is_flag=True, help="Log every pass, not just problems.")
def run(verbose: bool) -> None:
    """Run the daemon in the foreground (Ctrl-C stops it; nothing is lost)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        daemon.run()
    except daemon.DaemonError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
def start() -> None:
    """Start the daemon in the background; returns once it is up.

    From then on, a Claude Code session start brings the daemon back whenever it is not
    running (after a reboot, a crash, a kill), until `capture-daemon stop`.
    """
    try:
        pid = daemon.start()
    except daemon.DaemonError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"capture daemon running (pid {pid}); data in {paths.data_dir()}")


@main.command()
def stop() -> None:
    """Stop the background daemon and keep it stopped until `capture-daemon start`.

    Sessions no longer bring it back; hooks keep spooling events, which are ingested at the
    next start. A daemon that ignores SIGTERM for 5 s is killed (nothing is lost).
    """
    try:
        stopped = daemon.stop()
    except daemon.DaemonError as exc:
        raise click.ClickException(str(exc)) from None
    if stopped.killed:
        click.echo(f"capture daemon {stopped.pid} did not stop within {daemon.STOP_GRACE_SECONDS:.0f}s of SIGTERM: "
                   "killed it (SIGKILL); nothing is lost, the spool is replayed at the next start")
    elif stopped.pid:
        click.echo(f"capture daemon stopped (pid {stopped.pid})")
    else:
        click.echo("capture daemon was not running")
    click.echo("Capture stays stopped until `capture-daemon start` (new sessions do not restart it); "
               "events keep spooling meanwhile.")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Is capture working? Daemon, trace counts, pending spool, recent errors."""
    report = collect_status()
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        render_status(report)


@main.command()
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: stdout).")
@click.option("--accepted", "accepted", flag_value=True, default=None, help="Only traces the quality filter accepted.")
def export(fmt: str, output: Path | None, accepted: bool | None) -> None:
    """Write every stored trace, one JSON object per line, with the schema's field names."""
    from capture_daemon.scrub import scrub_trace

    def write(handle) -> int:
        count = 0
        for trace in store.iter_traces(accepted=accepted):
            # Redacted again by this version's rules: a trace stored before a rule existed keeps
            # what that rule removes, and an export goes on to training.
            handle.write(scrub_trace(trace).model_dump_json().encode() + b"\n")
            count += 1
        return count

    with open_store() as store:
        if output is None:
            write(sys.stdout.buffer)
            return
        try:  # 0600, and whole or not at all: a store that breaks half way leaves no half file
            with paths.private_output(output) as handle:
                count = write(handle)
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {count} traces to {output}", err=True)


try:  # commands from the analysis work (list, show, import, rescore, pause, ...)
    from capture_daemon.cli_traces import register as _register_trace_commands

    _register_trace_commands(main)
except ImportError:
    pass


if __name__ == "__main__":
    main()
