"""Hostile input against the real daemon: poison events, hostile files, broken transcripts.

Each test reproduces a failure an outside tester found (one malformed event stopped all
capture for good; a FIFO hung the daemon; one bad transcript row broke a whole session)
with the real hook and `capture-daemon` processes, and checks that the good traces still
commit, the bad input is set aside with its reason, and status says so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.daemon_harness import RunningDaemon, _alive, hook, prompt_events, quarantine_reasons, write_transcript

SECRET = "ghp_" + "Q9w8E7r6T5y4U3i2O1p0A9s8D7f6G5h4J3k2"


def _nested(depth: int) -> dict:
    value: object = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value  # type: ignore[return-value]


def _raw_spool_file(uhome: Path, name: str, data: bytes) -> Path:
    """`data` as a spool file, appearing whole as the hook's files do (written aside, then renamed):
    written in place, a running daemon could read it half-written ("no header line", a loaded CI run)."""
    spool = uhome / "spool"
    spool.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = spool / name
    aside = uhome / f"{name}.part"
    aside.write_bytes(data)
    os.replace(aside, path)
    return path


def test_poison_events_are_quarantined_and_never_block_good_traces(understudy_home):
    uhome = understudy_home
    with RunningDaemon(uhome) as daemon:
        prompt_events(uhome, "good-1", "p-good-1")
        # The family that used to fail the whole commit batch, every pass, for good:
        prompt_events(uhome, "bad-tasks", "p-bad-tasks", stop_extra={"background_tasks": "not a list"})
        prompt_events(uhome, "bad-deep", "p-bad-deep", tool_input=_nested(300))
        hook(uhome, "UserPromptSubmit", {"session_id": "bad-id", "prompt_id": ["a", "list"], "prompt": "x"})
        hook(uhome, "UserPromptSubmit", {"session_id": "bad-id", "prompt_id": {"an": "object"}, "prompt": "x"})
        _raw_spool_file(uhome, "00000000000000000001-0000001-Stop.event",
                        b'{"v": 1, "event": "Stop", "received_ns": "soon"}\n{"session_id": "bad-header"}')
        # JSON nested 100k levels used to raise RecursionError on every start.
        hook(uhome, "PreToolUse", b'{"session_id": "bad-json", "prompt_id": "p", "tool_input": '
             + b"[" * 100_000 + b"]" * 100_000 + b"}")
        # A secret in a poison event's dict key must not reach any log or the quarantine.
        hook(uhome, "PreToolUse", {"session_id": "bad-key", "prompt_id": "p", "tool_use_id": ["x"],
                                   "tool_input": {SECRET: 1}})
        prompt_events(uhome, "good-2", "p-good-2")

        daemon.wait_for(lambda: daemon.trace_for("p-good-1") and daemon.trace_for("p-good-2"), 30, "both good traces")
        # A poisoned prompt is stored as what it is: a trace missing an event, which says so.
        daemon.wait_for(lambda: daemon.trace_for("p-bad-tasks") and daemon.trace_for("p-bad-deep"), 30,
                        "the poisoned prompts' traces")
        reasons = daemon.wait_for(lambda: len(quarantine_reasons(uhome)) >= 7 and quarantine_reasons(uhome), 30,
                                  "the poison events in quarantine")
        status = daemon.status()
        assert daemon.alive()
    text = "\n".join(reasons.values())
    assert "background_tasks is a JSON string" in text
    assert "nested deeper than 100 levels" in text
    assert "prompt_id is a JSON array" in text and "prompt_id is a JSON object" in text
    assert "received_ns is a JSON string" in text
    assert status["spool"]["quarantined"] == len(reasons)
    assert {item["reason"] for item in status["spool"]["quarantine"]} <= {r.strip() for r in reasons.values()}
    assert status["health"]["problem"] is None
    # The good traces are whole; the poisoned prompts record their loss and never train anything.
    good = RunningDaemon(uhome).trace_for("p-good-1")
    assert [c["name"] for c in good["tool_calls"]] == ["Bash"] and good["complete"] and not good["capture_losses"]
    for prompt, lost in (("p-bad-tasks", ["Stop"]), ("p-bad-deep", ["PostToolUse", "PreToolUse"])):
        bad = RunningDaemon(uhome).trace_for(prompt)
        assert sorted(loss["event"] for loss in bad["capture_losses"]) == lost
        assert all(loss["reason"].startswith("quarantined: ") for loss in bad["capture_losses"])
        assert not bad["quality"]["accepted"] and any("lost in capture" in r for r in bad["quality"]["reasons"])
    for path in [*uhome.rglob("*")]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"the secret reached {path}"

    # Restarting changes nothing: no poison is left to trip over, the traces stay one each.
    with RunningDaemon(uhome) as daemon:
        time.sleep(3)
        assert daemon.alive() and len(daemon.traces()) == 4


def test_quarantine_commands_list_retry_and_drop(understudy_home):
    uhome = understudy_home
    hook(uhome, "Stop", {"session_id": "s", "prompt_id": "p", "background_tasks": 7})
    daemon = RunningDaemon(uhome)
    with daemon:
        daemon.wait_for(lambda: quarantine_reasons(uhome), 30, "the bad Stop in quarantine")
        listed = json.loads(daemon.cli("quarantine", "list", "--json").stdout)
        assert len(listed) == 1 and "background_tasks is a JSON number" in listed[0]["reason"]
        human = daemon.cli("quarantine", "list").stdout
        assert listed[0]["name"] in human and "background_tasks" in human
        # Retry: back in the spool, read again, quarantined again for the same reason.
        os.unlink(uhome / "spool" / "quarantine" / (listed[0]["name"] + ".reason"))
        assert "1 events back" in daemon.cli("quarantine", "retry", "--all").stdout
        daemon.wait_for(lambda: quarantine_reasons(uhome), 30, "the retried event to come back")
        assert "background_tasks" in daemon.cli("status").stdout
    daemon.cli("quarantine", "drop", "--all", "--yes")
    assert json.loads(daemon.cli("quarantine", "list", "--json").stdout) == []
    missing = daemon.cli("quarantine", "retry", "no-such.event", check=False)
    assert missing.returncode == 1 and "not in quarantine" in missing.stderr and "Traceback" not in missing.stderr


def test_a_fifo_as_event_or_transcript_neither_hangs_nor_stops_the_daemon(understudy_home, tmp_path):
    uhome = understudy_home
    fifo_transcript = tmp_path / "transcript.jsonl"
    os.mkfifo(fifo_transcript)
    (uhome / "spool").mkdir(parents=True, mode=0o700)
    os.mkfifo(uhome / "spool" / "00000000000000000005-0000009-PreToolUse.event")
    with RunningDaemon(uhome) as daemon:
        prompt_events(uhome, "s-fifo", "p-fifo", transcript_path=str(fifo_transcript))
        prompt_events(uhome, "s-after", "p-after")
        trace = daemon.wait_for(lambda: daemon.trace_for("p-fifo"), 30, "the trace whose transcript is a FIFO")
        daemon.wait_for(lambda: daemon.trace_for("p-after"), 30, "the next trace")
        assert "not a regular file (fifo)" in "".join(quarantine_reasons(uhome).values())
        started = time.monotonic()
    assert time.monotonic() - started < 10, "stop must not hang"
    # Built from the hook events alone, as when a transcript is missing.
    assert [c["name"] for c in trace["tool_calls"]] == ["Bash"]


@pytest.mark.slow
def test_a_huge_sparse_transcript_is_streamed_in_bounded_memory(understudy_home, tmp_path):
    uhome = understudy_home
    sparse = tmp_path / "sparse.jsonl"
    with open(sparse, "wb") as handle:
        handle.truncate(2 << 30)  # 2 GiB of zeros, no newline anywhere
    with RunningDaemon(uhome) as daemon:
        prompt_events(uhome, "s-sparse", "p-sparse", transcript_path=str(sparse))
        daemon.wait_for(lambda: daemon.trace_for("p-sparse"), 120, "the trace with a 2 GiB transcript")
        peak_kb = int(next(line.split()[1] for line in Path(f"/proc/{daemon.pid()}/status").read_text().splitlines()
                           if line.startswith("VmHWM")))
    assert peak_kb < 400 * 1024, f"daemon peaked at {peak_kb // 1024} MiB reading a sparse 2 GiB transcript"


def test_stop_is_prompt_while_the_daemon_waits_on_a_locked_database(understudy_home):
    import sqlite3

    uhome = understudy_home
    with RunningDaemon(uhome) as daemon:
        prompt_events(uhome, "s-1", "p-1")
        daemon.wait_for(lambda: daemon.trace_for("p-1"), 30, "the first trace")
        locker = sqlite3.connect(uhome / "traces.db", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            prompt_events(uhome, "s-2", "p-2")
            status = daemon.wait_for(lambda: (s := daemon.status())["health"]["problem"] and s, 30,
                                     "status to report the lock")
            assert "locked" in status["health"]["problem"]
            started = time.monotonic()
            daemon.cli("stop", timeout=30)
            assert time.monotonic() - started < 8
            assert not daemon.alive()
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        daemon.cli("start")
        daemon.wait_for(lambda: daemon.trace_for("p-2"), 30, "the trace held back by the lock")


def test_a_data_dir_deleted_under_the_daemon_is_made_again(understudy_home):
    import shutil

    uhome = understudy_home
    with RunningDaemon(uhome) as daemon:
        prompt_events(uhome, "s-1", "p-1")
        daemon.wait_for(lambda: daemon.trace_for("p-1"), 30, "the first trace")
        pid = daemon.pid()
        gone = uhome.with_name("deleted")
        os.rename(uhome, gone)  # at once, as far as the daemon can tell
        shutil.rmtree(gone)
        status = daemon.wait_for(lambda: (s := daemon.status())["health"]["problem"] and s, 30,
                                 "status to say the data dir is gone")
        assert "does not exist" in status["health"]["problem"]
        time.sleep(3)
        assert _alive(pid) and not uhome.exists()  # waiting, not resurrecting what the user removed
        prompt_events(uhome, "s-2", "p-2")  # the hook makes the data dir and spool again
        daemon.wait_for(lambda: daemon.trace_for("p-2"), 30, "a trace in the new data dir")
        assert daemon.pid() == pid and daemon.alive()
        assert oct(uhome.stat().st_mode & 0o777) == oct(0o700)


def test_a_bad_transcript_row_costs_that_row_only(understudy_home, tmp_path):
    """One row of another shape used to make every prompt of its session fail to build."""
    transcript = write_transcript(tmp_path / "session.jsonl", "s-rows", ["p-1", "p-2"])
    with open(transcript, "ab") as handle:
        handle.write(b'{"type": "user", "message": "a string", "promptId": "p-2"}\n')
        handle.write(b'{"type": "assistant", "message": {"content": 5}}\n')
        handle.write(b'{"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "x", "content": 3}]},'
                     b' "promptId": ["p"]}\n')
    with RunningDaemon(understudy_home) as daemon:
        for prompt in ("p-1", "p-2"):
            prompt_events(understudy_home, "s-rows", prompt, transcript_path=str(transcript))
        daemon.wait_for(lambda: len(daemon.traces()) == 2, 30, "both prompts of the session")
        traces = {t["prompt_id"]: t for t in daemon.traces()}
    for prompt in ("p-1", "p-2"):
        assert [s["text"] for s in traces[prompt]["assistant_text"]][0] == f"Let me look ({prompt})."


def test_the_daemon_survives_sigterm_mid_pass_and_replays_without_loss(understudy_home):
    uhome = understudy_home
    for index in range(60):
        prompt_events(uhome, f"s-{index}", f"p-{index}")
    daemon = RunningDaemon(uhome)
    daemon.cli("start")
    time.sleep(0.3)
    pid = daemon.pid()
    os.kill(pid, signal.SIGTERM)
    RunningDaemon.wait_for(lambda: not daemon.alive(), 8, "SIGTERM to stop the daemon")
    with daemon:
        daemon.wait_for(lambda: len(daemon.traces()) == 60, 60, "all 60 traces after the restart")
    assert len({t["trace_id"] for t in daemon.traces()}) == 60


def test_errors_never_carry_payload_values(understudy_home):
    """Failures are logged by type and place: a value in an exception's text stays out."""
    uhome = understudy_home
    hook(uhome, "PreToolUse", {"session_id": "s", "prompt_id": "p", "tool_name": {"password": "hunter2hunter2"},
                               "tool_input": {"api_key": "AKIA" + "Z" * 16}})
    with RunningDaemon(uhome) as daemon:
        daemon.wait_for(lambda: quarantine_reasons(uhome), 30, "the bad event in quarantine")
        status = daemon.cli("status").stdout
    assert "tool_name is a JSON object" in status
    for path in uhome.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"hunter2hunter2" not in data and b"AKIA" + b"Z" * 16 not in data, path


@pytest.fixture
def tiny_disk(tmp_path):
    """A 16 MiB tmpfs to fill up and make read-only (needs root; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        yield mount
    finally:  # the tmpfs, and a read-only bind layer a failed test may have left over it
        while subprocess.run(["mountpoint", "-q", str(mount)]).returncode == 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(path: Path) -> None:
    with open(path, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * (1 << 20))
                handle.flush()
        except OSError:
            pass


@pytest.mark.slow
def test_full_then_read_only_disk_the_daemon_waits_says_so_and_catches_up(tiny_disk, monkeypatch):
    uhome = tiny_disk / "understudy"
    monkeypatch.setenv("UNDERSTUDY_HOME", str(uhome))
    staging = tiny_disk / "staging"
    with RunningDaemon(uhome) as daemon:
        # An error recorded first: the old daemon died at the next error-log write on a full disk.
        hook(uhome, "Stop", {"session_id": "s", "prompt_id": "p", "background_tasks": "x"})
        daemon.wait_for(lambda: quarantine_reasons(uhome), 30, "the bad event in quarantine")
        prompt_events(uhome, "s-0", "p-0")
        daemon.wait_for(lambda: daemon.trace_for("p-0"), 30, "the first trace")

        # Events spooled elsewhere on the same disk, moved in once it is full (a rename needs no space).
        staging_uhome = staging / "understudy"
        for index in (1, 2):
            prompt_events(staging_uhome, f"s-{index}", f"p-{index}", answer="word " * 400)
        _fill(tiny_disk / "filler")
        for path in sorted((staging_uhome / "spool").glob("*.event")):
            os.rename(path, uhome / "spool" / path.name)
        status = daemon.wait_for(lambda: (s := daemon.status())["health"]["problem"] and s, 30, "status to say disk full")
        assert "disk full" in status["health"]["problem"]
        time.sleep(3)
        assert daemon.alive(), "a full disk must not kill the daemon"
        (tiny_disk / "filler").unlink()
        daemon.wait_for(lambda: daemon.trace_for("p-1") and daemon.trace_for("p-2"), 90, "the traces after space returned")
        daemon.wait_for(lambda: daemon.status()["health"]["problem"] is None, 30, "status to clear")

        # Read-only: the daemon finds events it cannot commit, and waits for the disk.
        prompt_events(staging_uhome, "s-3", "p-3")
        os.kill(daemon.pid(), signal.SIGSTOP)
        try:
            for path in sorted((staging_uhome / "spool").glob("*.event")):
                os.rename(path, uhome / "spool" / path.name)
            # A read-only bind mount over the disk: the daemon's open files stay open (a plain
            # remount is refused while they are), every new write fails with EROFS.
            subprocess.run(["mount", "--bind", str(tiny_disk), str(tiny_disk)], check=True)
            subprocess.run(["mount", "-o", "remount,bind,ro", str(tiny_disk)], check=True)
        finally:
            os.kill(daemon.pid(), signal.SIGCONT)
        try:
            status = daemon.wait_for(lambda: (s := daemon.status())["health"]["problem"] and s, 30,
                                     "status to say read-only")
            assert "read-only" in status["health"]["problem"]
            time.sleep(3)
            log = (uhome / "logs" / "daemon.log").read_text(errors="replace")[-3000:]
            assert daemon.alive(), f"a read-only disk must not kill the daemon; its log:\n{log}"
        finally:
            subprocess.run(["umount", str(tiny_disk)], check=True)  # the read-only layer only
        daemon.wait_for(lambda: daemon.trace_for("p-3"), 90, "the trace after the disk is writable again")
        assert daemon.alive()
    # p-0 … p-3, and the poisoned prompt: a trace holding only the stand-in for its lost Stop.
    traces = {t["prompt_id"]: t for t in daemon.traces()}
    assert sorted(traces) == ["p", "p-0", "p-1", "p-2", "p-3"]
    assert [loss["event"] for loss in traces["p"]["capture_losses"]] == ["Stop"] and not traces["p"]["quality"]["accepted"]


def test_an_agent_call_with_oddly_typed_fields_keeps_its_trace(understudy_home):
    """An Agent call whose agentId is a number, or whose subagent_type / description / prompt is
    not a string, failed the trace's validation, and every event of the prompt went to
    quarantine after four tries. The trace is kept: a number as its digits, any other field that
    cannot be text left out."""
    uhome = understudy_home
    odd = {"p-id": ({}, 12345), "p-type": ({"subagent_type": {"k": 1}}, "a1"), "p-desc": ({"description": ["x"]}, "a2"),
           "p-prompt": ({"prompt": 7}, "a3")}
    for prompt_id, (fields, agent_id) in odd.items():
        common = {"session_id": "s-odd", "prompt_id": prompt_id, "cwd": "/home/dev/project",
                  "transcript_path": "/nonexistent/s-odd.jsonl"}
        hook(uhome, "UserPromptSubmit", dict(common, prompt="look around the repo"))
        given = dict({"description": "look", "prompt": "look around", "subagent_type": "general-purpose"}, **fields)
        call = dict(common, tool_name="Agent", tool_use_id=f"toolu_{prompt_id}", tool_input=given)
        hook(uhome, "PreToolUse", call)
        hook(uhome, "PostToolUse", dict(call, tool_response={"agentId": agent_id, "content": [{"type": "text", "text": "ok"}]}))
        hook(uhome, "Stop", dict(common, last_assistant_message="Looked around.", background_tasks=[]))
    with RunningDaemon(uhome) as daemon:
        found = {p: daemon.wait_for(lambda p=p: daemon.trace_for(p), 30, f"the trace of {p}") for p in odd}
    assert quarantine_reasons(uhome) == {}
    runs = {p: trace["subagents"] for p, trace in found.items()}
    assert [r["agent_id"] for r in runs["p-id"]] == ["12345"]
    assert runs["p-type"][0]["agent_type"] is None and runs["p-desc"][0]["description"] is None
    assert runs["p-prompt"][0]["prompt"] == "7" and runs["p-prompt"][0]["agent_type"] == "general-purpose"


def test_a_transcript_path_no_file_can_have_is_read_as_a_missing_transcript(understudy_home):
    """A NUL in transcript_path (valid JSON, `\\u0000`) made opening it raise ValueError, and the
    whole prompt went to quarantine after four tries; it is a transcript that cannot be read."""
    uhome = understudy_home
    prompt_events(uhome, "s-nul", "p-nul", transcript_path="/tmp/x\u0000.jsonl")
    with RunningDaemon(uhome) as daemon:
        trace = daemon.wait_for(lambda: daemon.trace_for("p-nul"), 30, "the trace whose transcript path holds a NUL")
    assert [c["name"] for c in trace["tool_calls"]] == ["Bash"]
    assert quarantine_reasons(uhome) == {}


@pytest.mark.slow
def test_a_payload_the_hook_could_not_keep_is_recorded_as_lost_on_its_trace(understudy_home):
    """Stdin that never closes: the hook spools what it read with a marker at its deadline;
    the daemon salvages the ids and the trace says which event was lost and why."""
    from tests.daemon_harness import HOOK, env_for

    uhome = understudy_home
    common = {"session_id": "s-lost", "prompt_id": "p-lost", "cwd": "/home/dev/project",
              "transcript_path": "/nonexistent/s-lost.jsonl"}
    hook(uhome, "UserPromptSubmit", dict(common, prompt="print the big log"))
    call = dict(common, tool_name="Bash", tool_use_id="toolu_big", tool_input={"command": "cat big.log"})
    hook(uhome, "PreToolUse", call)
    head = json.dumps(dict(call, hook_event_name="PostToolUse"))[:-1].encode() + b', "tool_response": {"stdout": "'
    proc = subprocess.Popen([sys.executable, "-I", "-S", str(HOOK), "PostToolUse"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env_for(uhome))
    proc.stdin.write(head + b"x" * (3 << 20))
    proc.stdin.flush()
    started = time.monotonic()
    try:
        assert proc.wait(timeout=15) == 0 and proc.stdout.read() == b""
    finally:
        proc.stdin.close()
    assert time.monotonic() - started < 8
    hook(uhome, "Stop", dict(common, last_assistant_message="Done.", background_tasks=[]))
    with RunningDaemon(uhome) as daemon:
        trace = daemon.wait_for(lambda: daemon.trace_for("p-lost"), 30, "the trace with a lost event")
    [loss] = trace["capture_losses"]
    assert loss["event"] == "PostToolUse" and loss["tool_use_id"] == "toolu_big" and loss["reason"]
    assert loss["original_bytes"] >= 3 << 20
    assert [c["name"] for c in trace["tool_calls"]] == ["Bash"]
    assert not trace["quality"]["accepted"]
    assert "PostToolUse" in (uhome / "logs" / "hook-errors.log").read_text()


def test_retry_keeps_the_reason_of_an_event_the_daemon_quarantines_again_at_once(understudy_home, monkeypatch):
    """The daemon can read a retried event and set it aside again before `retry` returns: the new
    reason must survive (it once deleted the old reason after the move, and so the new one)."""
    from click.testing import CliRunner

    from capture_daemon import cli_quarantine, paths
    from capture_daemon.spool import REASON_SUFFIX

    quarantine_dir, spool = paths.ensure(paths.quarantine_dir()), paths.ensure(paths.spool_dir())
    name = "00000000000000000001-0000001-Stop.event"
    (quarantine_dir / name).write_bytes(b'{"event": "Stop"}')
    (quarantine_dir / (name + REASON_SUFFIX)).write_text("old reason")
    real_replace = os.replace

    def replace_then_daemon_requarantines(src, dst):
        real_replace(src, dst)
        real_replace(dst, quarantine_dir / name)  # the daemon, fast: straight back, with its reason
        (quarantine_dir / (name + REASON_SUFFIX)).write_text("new reason")

    monkeypatch.setattr(cli_quarantine.os, "replace", replace_then_daemon_requarantines)
    result = CliRunner().invoke(cli_quarantine.quarantine, ["retry", "--all"])
    assert result.exit_code == 0, result.output
    assert (quarantine_dir / (name + REASON_SUFFIX)).read_text() == "new reason"
    assert not (spool / name).exists()


def _cli(uhome: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    from tests.daemon_harness import CAPTURE_DAEMON, env_for

    return subprocess.run([*CAPTURE_DAEMON, *args], env=env_for(uhome), capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", [["start"], ["pause"], ["resume"], ["config", "init"], ["db", "recover"]],
                         ids=lambda c: " ".join(c))
@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_a_data_folder_that_is_a_file_is_one_line(tmp_path, command, where):
    """UNDERSTUDY_HOME naming a file (or a path under one) gave FileExistsError and
    NotADirectoryError tracebacks from these commands; `list` and `export` already said so in a line."""
    (tmp_path / "home").write_text("x")
    uhome = tmp_path / "home" if where == "file" else tmp_path / "home" / "sub"
    proc = _cli(uhome, *command)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("Error: ") and str(tmp_path / "home") in line


def test_a_fifo_as_config_toml_is_one_line_not_a_hang(understudy_home):
    """Reading config.toml with read_bytes() waited for a writer forever: `status`, `start` and
    `rescore` hung, and a running daemon stopped ingesting."""
    understudy_home.mkdir(parents=True, mode=0o700, exist_ok=True)
    os.mkfifo(understudy_home / "config.toml")
    for command in (["status"], ["rescore"], ["start"]):
        proc = _cli(understudy_home, *command, timeout=20)
        said = " ".join((proc.stdout + proc.stderr).split())  # status wraps its lines
        assert "not a regular file (fifo)" in said, (command, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
