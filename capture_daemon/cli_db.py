"""`capture-daemon db recover`, and `open_store()`: how every command opens the store, so
a damaged or unusable traces.db is one line naming the fix, never a traceback."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click

from capture_daemon import paths
from capture_daemon.render import printable
from capture_daemon.store import RECOVER_COMMAND, TraceStore, is_corruption


class StoreCorrupt(click.ClickException):
    """traces.db cannot be read as a database; the message names the recovery command."""

    def __init__(self, path: Path, error: BaseException):
        super().__init__(f"{path} is corrupt ({printable(error)}): stop the daemon "
                         f"(`capture-daemon stop`) and run `{RECOVER_COMMAND}`")


@contextmanager
def open_store() -> Iterator[TraceStore]:
    """`TraceStore.open()` for commands: SQLite errors, at open or in a query, become one line."""
    path = paths.store_path()
    try:
        store = TraceStore.connect(path)
    except OSError as exc:  # a read-only or full disk, a permission
        raise click.ClickException(f"cannot open {path}: {printable(exc.strerror or exc)}") from None
    except sqlite3.DatabaseError as exc:
        raise _one_line(path, exc) from None
    try:
        yield store
    except sqlite3.DatabaseError as exc:
        raise _one_line(path, exc) from None
    finally:
        store.close()


def _one_line(path: Path, exc: sqlite3.DatabaseError) -> click.ClickException:
    if is_corruption(exc):
        return StoreCorrupt(path, exc)
    return click.ClickException(f"{path}: {printable(exc)}")


@click.group()
def db() -> None:
    """The trace database (traces.db) itself."""


@db.command()
@click.option("--force", is_flag=True, help="Rebuild even when SQLite finds nothing wrong.")
def recover(force: bool) -> None:
    """Rebuild a damaged traces.db from what can still be read.

    The damaged file is kept aside as traces.db.corrupt-<time>; the rows SQLite can still
    read go into a fresh traces.db. Stop the daemon first (`capture-daemon stop`).
    """
    from capture_daemon.store_recover import recover as rebuild

    result = rebuild(force=force)
    what = f"was damaged ({printable(result.problem)})" if result.problem else "passed the integrity check"
    click.echo(f"{result.path} {what}; kept it as {result.corrupt_copy}")
    errors = {salvage.error for salvage in result.tables.values()}
    if None not in errors:
        click.echo(f"nothing could be read from it ({printable('; '.join(sorted(errors)))})")
    else:
        click.echo("salvaged " + ", ".join(_counted(name, salvage) for name, salvage in result.tables.items()))
    skipped = sum(salvage.unreadable for salvage in result.tables.values())
    invalid = sum(salvage.invalid for salvage in result.tables.values())
    if skipped or invalid or result.traces < (result.tables["traces"].expected or 0):
        click.echo(f"{skipped} unreadable stretch(es) of rows skipped, {invalid} damaged row(s) left out; "
                   "`capture-daemon import` backfills lost traces from Claude Code's transcripts")
    if result.respooled_traces:
        click.echo(f"{result.respooled_traces} lost trace(s) whose events survived ({result.respooled_events} events) "
                   "are back in the spool: the daemon builds them again when it starts")
    click.echo(f"wrote a fresh {result.path}; `capture-daemon start` resumes capture (the spool was kept)")


def _counted(name: str, salvage) -> str:
    if salvage.error is not None:
        return f"no {name} ({printable(salvage.error)})"
    if salvage.expected is not None and salvage.expected != salvage.rows:
        return f"{salvage.rows} of {salvage.expected} {name}"
    return f"{salvage.rows} {name}"
