"""`capture-daemon quarantine list | retry | drop`: the events the daemon set aside.

An event lands in `spool/quarantine/` when it could not be read as a hook event (the reason
says why: not JSON, a field of the wrong type, a FIFO, ...) or when the trace it belongs to
failed to build or store several times in a row. Its text was redacted on the way in.
`retry` puts files back in the spool (after an upgrade that fixes the cause, say): the
daemon reads them again and quarantines them again if the cause is still there. `drop`
deletes them; the daemon also deletes them itself after `quarantine_retention_days`.
"""

from __future__ import annotations

import os
import time

import click
import orjson
from rich.console import Console
from rich.text import Text

from capture_daemon import paths
from capture_daemon.render import printable
from capture_daemon.spool import REASON_SUFFIX, quarantined


@click.group()
def quarantine() -> None:
    """Events set aside because they could not be captured, with the reason."""


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_quarantine(as_json: bool) -> None:
    """Each quarantined event: file, age, size and why it was set aside."""
    items = quarantined(paths.quarantine_dir())
    if as_json:
        click.echo(orjson.dumps(items, option=orjson.OPT_INDENT_2).decode())
        return
    if not items:
        click.echo("nothing in quarantine")
        return
    now = time.time()
    console = Console()
    for item in items:  # two lines each: file names are long, and cut names cannot be retried
        console.print(Text(f"{printable(item['name'])}  ({_age(now - item['quarantined_at'])} ago, {item['bytes']} bytes)",
                           "bold"), soft_wrap=True)
        console.print(Text("  " + printable(item["reason"])), soft_wrap=True)
    click.echo(f"{len(items)} quarantined; `capture-daemon quarantine retry --all` puts them back in the spool, "
               "`capture-daemon quarantine drop --all` deletes them")


def _chosen(names: tuple[str, ...], every: bool) -> list[str]:
    if bool(names) == every:
        raise click.UsageError("name the files (from `capture-daemon quarantine list`) or pass --all, not both")
    present = {item["name"] for item in quarantined(paths.quarantine_dir())}
    if every:
        return sorted(present)
    missing = [n for n in names if n not in present]
    if missing:
        raise click.ClickException(f"not in quarantine: {printable(', '.join(missing))}; "
                                   "`capture-daemon quarantine list` shows what is there")
    return list(names)


@quarantine.command()
@click.argument("names", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every quarantined event.")
def retry(names: tuple[str, ...], every: bool) -> None:
    """Put quarantined events back in the spool for the daemon to read again."""
    directory, spool = paths.quarantine_dir(), paths.ensure(paths.spool_dir())
    moved = 0
    for name in _chosen(names, every):
        # The old reason goes first: once the event is back in the spool the daemon may quarantine
        # it again at once, and the reason it writes then must not be the one deleted here.
        _unlink(directory / (name + REASON_SUFFIX))
        try:
            os.replace(directory / name, spool / name)
        except FileNotFoundError:
            continue
        moved += 1
    click.echo(f"{moved} events back in the spool; the running daemon reads them within seconds "
               "(`capture-daemon status` shows any that are quarantined again)")


@quarantine.command()
@click.argument("names", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every quarantined event.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def drop(names: tuple[str, ...], every: bool, yes: bool) -> None:
    """Delete quarantined events for good."""
    chosen = _chosen(names, every)
    if chosen and not yes:
        click.confirm(f"Delete {len(chosen)} quarantined events for good?", abort=True)
    directory = paths.quarantine_dir()
    for name in chosen:
        _unlink(directory / name)
        _unlink(directory / (name + REASON_SUFFIX))
    click.echo(f"deleted {len(chosen)} quarantined events")


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
