"""`capture-daemon list | show | forget | pause | resume | rescore | config` against a real store."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from capture_daemon import paths
from capture_daemon.cli import main
from capture_daemon.hooks_config import hook_script
from capture_daemon.ingest import IngestSettings, Ingestor
from capture_daemon.store import TraceStore
from tests.spool_factory import write_session

ANSWER = ("The two services differ in how they retry: the billing worker backs off exponentially with "
          "jitter while the mailer retries at a fixed interval, which is why the mailer floods the queue "
          "whenever the SMTP relay is down for more than a minute or two during the nightly batch run.")


def _store_sessions():
    spool = paths.spool_dir()
    write_session(spool, "s-one", "p-1", "compare the billing worker and the mailer",
                  [("Read", {"file_path": "/srv/billing.py"}, "retry = backoff()"),
                   ("Grep", {"pattern": "retry"}, "mailer.py:3"), ("Read", {"file_path": "/srv/mailer.py"}, "retry = 5")],
                  ANSWER, cwd="/home/dev/services")
    write_session(spool, "s-two", "p-2", "say hi", [("Bash", {"command": "echo hi"}, "hi")], "hi",
                  cwd="/home/dev/toy")
    with TraceStore.open() as store:
        ingestor = Ingestor(store, spool, paths.quarantine_dir(), IngestSettings(settle_seconds=0))
        ingestor.scan()
        ingestor.finalize_ready()
        return {t.prompt: t for t in store.iter_traces()}


def test_list_filters(understudy_home):
    traces = _store_sessions()
    runner = CliRunner()
    everything = runner.invoke(main, ["list"])
    assert everything.exit_code == 0 and "2 of 2 matching traces" in everything.output
    accepted = runner.invoke(main, ["list", "--accepted"])
    assert "1 of 1" in accepted.output and traces["compare the billing worker and the mailer"].trace_id[:12] in accepted.output
    assert "1 of 1" in runner.invoke(main, ["list", "--tool", "Bash"]).output
    assert "0 of 0" in runner.invoke(main, ["list", "--tool", "Edit"]).output
    assert "1 of 1" in runner.invoke(main, ["list", "--project", "/home/dev/toy"]).output
    assert "1 of 1" in runner.invoke(main, ["list", "--pattern", "exploratory"]).output
    assert "2 of 2" in runner.invoke(main, ["list", "--since", "1d"]).output
    bad = runner.invoke(main, ["list", "--since", "last tuesday"])
    assert bad.exit_code != 0 and "neither a date" in bad.output


def test_show_renders_the_workflow(understudy_home):
    trace = _store_sessions()["compare the billing worker and the mailer"]
    result = CliRunner().invoke(main, ["show", trace.trace_id[:10]])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "compare the billing worker and the mailer" in out
    assert out.index("Read") < out.index("Grep") and "/srv/billing.py" in out
    assert "Read → Grep → Read" in out and "accepted" in out
    missing = CliRunner().invoke(main, ["show", "nope"])
    assert missing.exit_code == 1 and "No trace with id 'nope'" in missing.output


def test_forget_a_trace_and_a_session(understudy_home):
    traces = _store_sessions()
    runner = CliRunner()
    result = runner.invoke(main, ["forget", traces["say hi"].trace_id, "--yes"])
    assert result.exit_code == 0 and "forgot trace" in result.output
    result = runner.invoke(main, ["forget", "--session", "s-one", "--yes"])
    assert "forgot 1 traces of session s-one" in result.output
    with TraceStore.open() as store:
        assert store.count() == 0
        assert store.events_of(traces["say hi"].trace_id) == []


def test_pause_makes_the_hook_keep_nothing_until_resume(understudy_home, tmp_path):
    runner = CliRunner()
    assert "capture paused" in runner.invoke(main, ["pause"]).output
    payload = b'{"session_id": "s", "prompt_id": "p", "prompt": "secret project"}'
    subprocess.run([sys.executable, "-I", "-S", str(hook_script()), "UserPromptSubmit"], input=payload, check=True)
    assert not list(paths.spool_dir().glob("*.event"))
    assert "capture resumed" in runner.invoke(main, ["resume"]).output
    subprocess.run([sys.executable, "-I", "-S", str(hook_script()), "UserPromptSubmit"], input=payload, check=True)
    assert len(list(paths.spool_dir().glob("*.event"))) == 1


def test_rescore_applies_edited_rules(understudy_home):
    _store_sessions()
    runner = CliRunner()
    assert runner.invoke(main, ["config", "init"]).exit_code == 0
    assert runner.invoke(main, ["config", "init"]).exit_code == 1  # never overwrites silently
    paths.config_path().write_text("[quality]\nmin_answer_words = 1000\n")
    result = runner.invoke(main, ["rescore"])
    assert result.exit_code == 0, result.output
    assert "0 accepted, 1 changed verdict" in result.output
    paths.config_path().write_text("[quality]\nmin_answer_wordz = 3\n")
    broken = runner.invoke(main, ["rescore"])
    assert broken.exit_code == 1 and "min_answer_wordz" in broken.output


def test_list_piped_keeps_one_line_per_trace(understudy_home):
    """Not a terminal (a pipe, a file): no wrapping at 80 columns."""
    traces = _store_sessions()
    out = CliRunner().invoke(main, ["list"]).output
    rows = [line for line in out.splitlines() if any(t.trace_id[:12] in line for t in traces.values())]
    assert len(rows) == 2 and any("compare the billing worker and the mailer" in row for row in rows)
    assert max(map(len, rows)) > 80
