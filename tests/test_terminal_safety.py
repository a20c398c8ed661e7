"""Trace text never drives the terminal: `show`, `list` and `status` print control
sequences and bidi overrides as visible escapes, and `[brackets]` literally (not as rich markup)."""

from __future__ import annotations

from datetime import datetime, timezone

from click.testing import CliRunner

from capture_daemon import paths
from capture_daemon.cli import main
from capture_daemon.render import printable
from capture_daemon.schema import Quality, ReasoningSignals, TextStep, ToolCall, Trace
from capture_daemon.store import TraceStore

# Retitle the window, clear the screen, a C1 CSI, a bidi override and isolate, a bell,
# and brackets rich would take for markup.
EVIL = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil\u2066 [old] [/] [bold red]x[/]"
RAW = ("\x1b", "\x9b", "\x07", "\u202e", "\u2066", "\u200f")
WIDE = {"COLUMNS": "400"}


def test_printable_shows_controls_and_keeps_what_the_layout_wants():
    assert printable("plain [text] ünïcødé 👨‍👩‍👧") == "plain [text] ünïcødé 👨‍👩‍👧"
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("\x9b\u202e\u2066\x7f\r") == "\\x9b\\u202e\\u2066\\x7f\\x0d"
    assert printable("one\ntwo\tthree") == "one\\x0atwo\\x09three"
    assert printable("one\ntwo\tthree", keep="\n\t") == "one\ntwo\tthree"
    assert printable(None) == ""


def _evil_trace() -> Trace:
    call = ToolCall(tool_use_id="toolu_1", name="Bash" + EVIL, input={"command": "cat " + EVIL}, output="out " + EVIL,
                    agent_id="agent" + EVIL, agent_type="Explore" + EVIL, parallel_group=1)
    failed = ToolCall(tool_use_id="toolu_2", name="Read", input={"file_path": "/x"}, success=False,
                      error="err " + EVIL, parallel_group=2)
    return Trace(
        trace_id="e" * 32, session_id="sess" + EVIL, prompt_id="p1", prompt="[old] prompt " + EVIL + "\nline two",
        final_response="answer " + EVIL, model="model" + EVIL, cwd="/srv/[old]/[/]" + EVIL,
        started_at=datetime(2026, 11, 1, tzinfo=timezone.utc), complete=False, incomplete_reason="idle" + EVIL,
        tool_calls=[call, failed],
        assistant_text=[TextStep(text="narration " + EVIL, position=0),
                        TextStep(text="sub narration " + EVIL, position=1, agent_id="agent" + EVIL)],
        thinking=[TextStep(text="thinking " + EVIL, position=2)],
        reasoning_signals=ReasoningSignals(tool_sequence=["Bash" + EVIL, "Read"], workflow="[old] Bash → Read" + EVIL,
                                           explicit_plan="plan " + EVIL),
        quality=Quality(score=0.9, accepted=True, reasons=["+ reason " + EVIL]),
    )


def _assert_safe(output: str) -> None:
    leaked = [c for c in RAW if c in output]
    assert not leaked, f"raw control characters reached the terminal: {leaked!r}"
    assert "\\x1b]0;pwned" in output  # shown, visibly


def _store(trace: Trace) -> None:
    with TraceStore.open() as store:
        store.put(trace)


def test_show_prints_trace_text_escaped_and_literally(understudy_home):
    _store(_evil_trace())
    result = CliRunner().invoke(main, ["show", "eeee"], env=WIDE)
    assert result.exit_code == 0, result.output
    out = result.output
    _assert_safe(out)
    assert "/srv/[old]/[/]" in out and "[bold red]x[/]" in out and "[old] prompt" in out
    for text in ("narration", "sub narration", "thinking", "answer", "out ", "err ", "plan ", "+ reason", "sess",
                 "model", "idle", "Explore", "cat "):
        assert text in out
    assert "prompt \\x1b" in out and "\nline two" in out  # the prompt keeps its own line breaks
    result = CliRunner().invoke(main, ["show", "eeee", "--full"], env=WIDE)
    assert result.exit_code == 0 and "[bold red]x[/]" in result.output
    _assert_safe(result.output)


def test_list_prints_trace_text_escaped_and_literally(understudy_home):
    _store(_evil_trace())
    result = CliRunner().invoke(main, ["list"], env=WIDE)
    assert result.exit_code == 0, result.output
    _assert_safe(result.output)
    assert "[old] prompt" in result.output and "[old] Bash" in result.output
    assert "1 of 1 matching traces" in result.output


def test_error_messages_escape_what_the_user_typed(understudy_home):
    _store(_evil_trace())
    result = CliRunner().invoke(main, ["show", "nope" + EVIL])
    assert result.exit_code == 1 and "No trace with id 'nope\\x1b" in result.output
    assert not [c for c in RAW if c in result.output]


def test_status_escapes_paths_and_logged_errors(isolated_env, monkeypatch, tmp_path):
    home = tmp_path / ("data [old] [/]" + "\x1b[2J")
    monkeypatch.setenv("UNDERSTUDY_HOME", str(home))
    _store(_evil_trace())
    paths.ensure(paths.logs_dir())
    paths.hook_error_log().write_text("2026-11-01T00:00:00Z\thook Stop: " + EVIL + "\n")
    result = CliRunner().invoke(main, ["status"], env=WIDE)
    assert result.exit_code == 0, result.output
    out = result.output
    assert not [c for c in RAW if c in out]
    assert "data [old] [/]\\x1b[2J" in out  # the data dir, literally
    assert "hook Stop: \\x1b]0;pwned" in out and "[bold red]x[/]" in out
