"""`capture-daemon ui`: serve the dashboard (needs the `ui` extra: starlette, uvicorn)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback asks for a token (printed in the URL).")
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--runs", "runs_dir", default="runs", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder holding training runs (each `trainer run --out` folder) for the Training page.")
@click.option("--token", envvar="UNDERSTUDY_UI_TOKEN", help="Ask for this token (default: a random one off loopback).")
def ui(host: str, port: int, runs_dir: Path, token: str | None) -> None:
    """A local web dashboard: live capture, browse and curate traces, training runs.

    Live shows traces as they commit and the daemon's health; Browse filters, searches and draws
    each trace's workflow; Curate accepts, rejects or forgets traces by hand (a verdict that wins
    over the rules and survives `rescore`) and shows how ready the dataset is; Training shows the
    runs under --runs.
    """
    try:
        from capture_daemon.ui.app import serve
    except ImportError as exc:
        raise click.ClickException(f"the dashboard needs the ui extra ({exc.name} is missing): "
                                   "pip install 'understudy[ui]'") from None
    serve(host, port, None, runs_dir, token)
