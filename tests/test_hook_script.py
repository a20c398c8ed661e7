"""hooks/capture_hook.py run as Claude Code runs it: the registered command, through a shell."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from capture_daemon import hooks_config
from tests.claude_harness import spool_events

NAME = re.compile(r"^\d{20}-\d{7}-[A-Za-z]+\.event$")


def run_hook(event: str, stdin: bytes, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the command `hooks install` registers for this event, with stdin, via `sh -c`."""
    return subprocess.run(
        hooks_config.hook_command(event), shell=True, input=stdin, capture_output=True, timeout=timeout
    )


def event_payload(event: str, **fields) -> dict:
    payload = {
        "session_id": "c9a30350-1aa6-4cf7-b5b8-b925479311b4",
        "transcript_path": "/home/dev/.claude/projects/-home-dev-project/c9a30350.jsonl",
        "cwd": "/home/dev/project",
        "hook_event_name": event,
        "prompt_id": "5d1a5f96-a02d-4fdf-a23d-1d571079093d",
    }
    payload.update(fields)
    return payload


def spool_files(understudy_home: Path) -> list[Path]:
    return sorted((understudy_home / "spool").glob("*.event"))


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def assert_quiet_success(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""


@pytest.mark.parametrize("event", hooks_config.EVENTS)
def test_every_event_writes_one_spool_file_byte_for_byte(event, understudy_home):
    raw = json.dumps(event_payload(event, tool_name="Bash")).encode()
    proc = run_hook(event, raw)
    assert_quiet_success(proc)
    [path] = spool_files(understudy_home)
    assert NAME.match(path.name) and path.name.endswith(f"-{event}.event")
    head, _, body = path.read_bytes().partition(b"\n")
    header = json.loads(head)
    assert header["v"] == 1 and header["event"] == event and header["bytes"] == len(raw)
    assert "truncated" not in header
    assert body == raw
    assert list((understudy_home / "spool" / "tmp").iterdir()) == []  # nothing left half-written


def test_permissions_private(understudy_home):
    assert_quiet_success(run_hook("Stop", b'{"session_id": "s"}'))
    spool = understudy_home / "spool"
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    assert stat.S_IMODE((spool / "tmp").stat().st_mode) == 0o700
    assert stat.S_IMODE(understudy_home.stat().st_mode) == 0o700
    [path] = spool_files(understudy_home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_names_sort_by_arrival_and_hold_nothing_from_the_payload(understudy_home):
    order = ["SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop", "SessionEnd"]
    for event in order:
        raw = json.dumps(event_payload(event, session_id="SECRETSESSION", tool_name="Bash")).encode()
        assert_quiet_success(run_hook(event, raw))
    paths = spool_files(understudy_home)
    assert [p.name.rsplit("-", 1)[1][: -len(".event")] for p in paths] == order
    assert [h["event"] for h, _ in spool_events(understudy_home)] == order
    for path in paths:
        assert NAME.match(path.name)
        assert "SECRET" not in path.name and "Bash" not in path.name


def test_concurrent_hooks_each_get_their_own_file(understudy_home):
    raws = [json.dumps(event_payload("PreToolUse", tool_use_id=f"toolu_{i}")).encode() for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        procs = list(pool.map(lambda raw: run_hook("PreToolUse", raw), raws))
    for proc in procs:
        assert_quiet_success(proc)
    bodies = sorted(p.read_bytes().partition(b"\n")[2] for p in spool_files(understudy_home))
    assert bodies == sorted(raws)


@pytest.mark.parametrize(
    "stdin",
    [b"", b"this is not json {", bytes(range(256)) * 64, b"\xff\xfe\x00garbage\x00" * 1000],
    ids=["empty", "not-json", "binary", "binary-nul"],
)
def test_garbage_stdin_exits_0_silently_and_stays_in_the_data_dir(stdin, understudy_home):
    proc = run_hook("PostToolUse", stdin)
    assert_quiet_success(proc)
    for path in all_files(understudy_home.parent):
        rel = path.relative_to(understudy_home.parent)
        assert rel.parts[0] == "understudy" and rel.parts[1] in ("spool", "logs"), rel
    if stdin:
        # Small payloads are spooled as they came; the daemon decides (and quarantines garbage).
        [path] = spool_files(understudy_home)
        assert path.read_bytes().partition(b"\n")[2] == stdin
    else:
        assert spool_files(understudy_home) == []
        assert "empty stdin" in (understudy_home / "logs" / "hook-errors.log").read_text()


def test_session_id_cannot_steer_where_files_go(understudy_home):
    for sid in ("../../x", "/etc/passwd", "a/../../b", "x" * 5000, "\x00nul"):
        raw = json.dumps(event_payload("SessionStart", session_id=sid)).encode()
        assert_quiet_success(run_hook("SessionStart", raw))
    # A path built from "../../x" would land beside the data dir, in this test's own tmp root.
    outside = [p for p in all_files(understudy_home.parent) if understudy_home not in p.parents]
    assert outside == []
    assert len(spool_files(understudy_home)) == 5
    assert not (understudy_home.parent / "x").exists() and not (understudy_home / "x").exists()


def test_odd_event_argument_is_not_used_in_the_name(understudy_home):
    proc = subprocess.run(
        hooks_config.hook_command("PostToolUse").rsplit(" ", 1)[0] + " '../../evil name'",
        shell=True, input=b'{"a": 1}', capture_output=True, timeout=60,
    )
    assert_quiet_success(proc)
    [path] = spool_files(understudy_home)
    assert path.name.endswith("-Unknown.event")
    assert json.loads(path.read_bytes().partition(b"\n")[0])["event"] == "../../evil name"


def read_spooled(understudy_home: Path) -> tuple[dict, bytes]:
    [path] = spool_files(understudy_home)
    head, _, body = path.read_bytes().partition(b"\n")
    return json.loads(head), body


def hook_errors(understudy_home: Path) -> list[str]:
    log = understudy_home / "logs" / "hook-errors.log"
    return log.read_text().splitlines() if log.exists() else []


def assert_kept_head_and_tail(header: dict, body: bytes, raw: bytes, reason: str) -> None:
    """The marker contract with capture_daemon/spool.py: first 1 MiB, then the last tail_bytes."""
    assert header["unparsed"] is True and header["truncated"] is True
    assert header["original_bytes"] == len(raw) and header["lost_reason"] == reason
    tail = header.get("tail_bytes", 0)
    assert 0 <= tail <= 64 << 10
    assert body == raw[: 1 << 20] + (raw[-tail:] if tail else b"")


@pytest.mark.timeout(60)
def test_100_mb_of_stdin_is_drained_in_bounded_time_and_kept_as_head_and_tail(understudy_home):
    raw = b'{"session_id": "sess-100mb", "tool_response": "' + b"x" * (100 << 20) + b'", "tool_use_id": "toolu_end"}'
    start = time.monotonic()
    proc = run_hook("PostToolUse", raw, timeout=50)
    elapsed = time.monotonic() - start
    assert_quiet_success(proc)
    assert elapsed < 30
    header, body = read_spooled(understudy_home)
    assert header["bytes"] == len(raw) and header["tail_bytes"] == 64 << 10
    assert_kept_head_and_tail(header, body, raw, "too_big_to_reduce")
    assert body.endswith(b'"tool_use_id": "toolu_end"}')  # ids written last survive for the daemon
    [line] = hook_errors(understudy_home)
    assert "hook PostToolUse:" in line and "too_big_to_reduce" in line and str(len(raw)) in line
    assert "xxxx" not in line and "sess-100mb" not in line  # never payload content


@pytest.mark.timeout(60)
def test_60_mb_payload_too_slow_to_reduce_is_spooled_with_a_marker_within_the_deadline(understudy_home):
    # Like the 55-59 MB payload that was lost: parsing it takes longer than the deadline
    # (~10 s unbounded, here), so the hook stops at its reduce budget and keeps head and tail.
    values = ",".join(["1.25e-300"] * (6_000_000))
    raw = (f'{{"session_id": "sess-60mb", "prompt_id": "p-60mb", "hook_event_name": "PostToolUse", '
           f'"tool_name": "mcp__db__query", "tool_response": {{"values": [{values}]}}, '
           f'"tool_use_id": "toolu_60mb"}}').encode()
    assert 55 << 20 < len(raw) < 64 << 20
    start = time.monotonic()
    proc = run_hook("PostToolUse", raw, timeout=50)
    elapsed = time.monotonic() - start
    assert_quiet_success(proc)
    assert elapsed < 5.5, "the hook must finish inside its own deadline"
    header, body = read_spooled(understudy_home)
    assert_kept_head_and_tail(header, body, raw, "too_big_to_reduce")
    assert b'"session_id": "sess-60mb"' in body and body.endswith(b'"tool_use_id": "toolu_60mb"}')
    [line] = hook_errors(understudy_home)
    assert "hook PostToolUse:" in line and "too_big_to_reduce" in line and "1.25e" not in line
    assert list((understudy_home / "spool" / "tmp").iterdir()) == []  # the killed reducer left nothing


@pytest.mark.timeout(30)
def test_stdin_never_closed_is_spooled_and_logged_at_the_deadline(understudy_home):
    partial = b'{"session_id": "sess-open", "prompt_id": "p-open", "hook_event_name": "PreToolUse", "tool_input": {'
    proc = subprocess.Popen(hooks_config.hook_command("PreToolUse"), shell=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    start = time.monotonic()
    try:
        proc.stdin.write(partial)
        proc.stdin.flush()
        proc.wait(timeout=20)  # stdin stays open all along
        elapsed = time.monotonic() - start
    finally:
        proc.kill()
        proc.stdin.close()
    assert proc.returncode == 0 and proc.stdout.read() == b""
    assert elapsed < 6, elapsed
    header, body = read_spooled(understudy_home)
    assert header["event"] == "PreToolUse" and header["bytes"] == len(partial)
    assert_kept_head_and_tail(header, body, partial, "stdin_not_closed")
    [line] = hook_errors(understudy_home)
    assert "hook PreToolUse: stdin not closed after 5s" in line and "sess-open" not in line


@pytest.mark.timeout(30)
def test_stdin_never_closed_and_empty_is_logged(understudy_home):
    proc = subprocess.Popen(hooks_config.hook_command("Stop"), shell=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.wait(timeout=20)
    finally:
        proc.kill()
        proc.stdin.close()
    assert proc.returncode == 0 and proc.stdout.read() == b""
    assert spool_files(understudy_home) == []
    assert "hook Stop: stdin not closed after 5s and nothing read" in hook_errors(understudy_home)[0]


def deeply_nested(levels: int, pad: int = 0) -> bytes:
    return (b'{"session_id": "sess-deep", "pad": "' + b"p" * pad + b'", "tool_input": '
            + b"[" * levels + b"]" * levels + b', "tool_use_id": "toolu_deep"}')


def test_deeply_nested_payload_over_1_mib_is_kept_with_a_marker(understudy_home):
    raw = deeply_nested(100_000, pad=1 << 20)
    proc = run_hook("PostToolUse", raw)
    assert_quiet_success(proc)
    header, body = read_spooled(understudy_home)
    assert_kept_head_and_tail(header, body, raw, "too_deep")
    assert "too_deep" in hook_errors(understudy_home)[0]


def test_deeply_nested_small_payload_is_spooled_as_it_came(understudy_home):
    raw = deeply_nested(100_000)  # ~200 KB: never parsed by the hook; the daemon judges it
    assert_quiet_success(run_hook("PostToolUse", raw))
    header, body = read_spooled(understudy_home)
    assert body == raw and "unparsed" not in header
    assert hook_errors(understudy_home) == []


def test_oversized_payload_that_is_not_json_is_kept_with_a_marker(understudy_home):
    raw = b'{"session_id": "sess-bad", "out": "' + b"y" * (2 << 20) + b'", "tool_use_id": "toolu_bad"'  # no }
    assert_quiet_success(run_hook("PostToolUse", raw))
    header, body = read_spooled(understudy_home)
    assert_kept_head_and_tail(header, body, raw, "not_json")


def test_2_mb_post_tool_use_is_reduced_with_a_marker(understudy_home):
    big = "line of build output\n" * 100_000  # ~2.1 MB
    raw = json.dumps(
        event_payload("PostToolUse", tool_name="Bash", tool_use_id="toolu_big",
                      tool_input={"command": "make"}, tool_response={"stdout": big, "stderr": ""})
    ).encode()
    assert len(raw) > 2_000_000
    assert_quiet_success(run_hook("PostToolUse", raw))
    [(header, payload)] = spool_events(understudy_home)
    assert header["truncated"] is True and header["original_bytes"] == len(raw)
    assert payload is not None, "a reduced payload is still valid JSON"
    assert payload["tool_use_id"] == "toolu_big" and payload["tool_input"] == {"command": "make"}
    stdout = payload["tool_response"]["stdout"]
    assert len(stdout) < len(big) and stdout.startswith(big[:1000])
    assert stdout.endswith(f"[understudy: truncated, original {len(big)} chars]")
    assert spool_files(understudy_home)[0].stat().st_size < 1 << 20


def test_unwritable_spool_exits_0_and_logs_the_error(understudy_home):
    # Tests run as root in CI, so permissions cannot block us: make the spool a regular file.
    understudy_home.mkdir(mode=0o700)
    (understudy_home / "spool").write_text("not a folder")
    proc = run_hook("PreToolUse", json.dumps(event_payload("PreToolUse")).encode())
    assert_quiet_success(proc)
    log = (understudy_home / "logs" / "hook-errors.log").read_text()
    assert "hook PreToolUse:" in log and "Error" in log
    assert (understudy_home / "spool").read_text() == "not a folder"


def test_data_dir_under_a_file_exits_0(tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("UNDERSTUDY_HOME", str(blocker / "understudy"))
    proc = run_hook("Stop", b'{"session_id": "s"}')
    assert_quiet_success(proc)
    assert blocker.read_text() == ""


def test_paused_flag_spools_nothing(understudy_home):
    understudy_home.mkdir(mode=0o700)
    (understudy_home / "paused").touch()
    proc = run_hook("UserPromptSubmit", json.dumps(event_payload("UserPromptSubmit", prompt="hi")).encode())
    assert_quiet_success(proc)
    assert spool_files(understudy_home) == []


def test_default_data_dir_follows_xdg(isolated_env, monkeypatch):
    monkeypatch.delenv("UNDERSTUDY_HOME")
    assert_quiet_success(run_hook("Stop", b'{"session_id": "s"}'))
    assert len(list((isolated_env.xdg_data_home / "understudy" / "spool").glob("*.event"))) == 1
    assert os.environ.get("UNDERSTUDY_HOME") is None


def test_hand_written_header_is_what_json_dumps_gives():
    from hooks import capture_core

    for header in (
        {"v": 1, "event": "PostToolUse", "received_ns": time.time_ns(), "bytes": 12},
        {"v": 1, "event": "Stop", "received_ns": 1, "bytes": 3 << 30, "truncated": True, "original_bytes": 9, "cut_strings": 0},
        {"v": 1, "event": "x/../y \"q\"", "received_ns": 1, "bytes": 0, "unparsed": False},
        {"v": 1, "event": "Événement", "received_ns": 1, "bytes": 0},
        {"v": 1, "event": "Stop", "received_ns": 1, "bytes": 9, "unparsed": True, "truncated": True,
         "original_bytes": 9, "lost_reason": "stdin_not_closed", "tail_bytes": 0},
        {"v": 1, "event": "Stop_", "received_ns": 1, "bytes": 9, "lost_reason": "a\\b_c"},
    ):
        assert capture_core.encode_header(header) == json.dumps(header).encode()


def test_hook_benchmark_runs():
    bench = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_hook.py"
    proc = subprocess.run([sys.executable, str(bench), "-n", "3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"ratio hook / bare start\s+: \d+\.\d\dx", proc.stdout), proc.stdout


def test_usual_path_imports_nothing_but_capture_core(understudy_home):
    # The hook's cost is interpreter start plus what it imports: os alone would add ~1 ms.
    raw = json.dumps(event_payload("PostToolUse", tool_name="Bash")).encode()
    assert_quiet_success(run_hook("PostToolUse", raw))  # the first event makes the spool folders
    argv = shlex.split(hooks_config.hook_command("PostToolUse"))

    def imports(*args: str, stdin: bytes = b"") -> list[str]:
        proc = subprocess.run([argv[0], "-X", "importtime", *args], input=stdin, capture_output=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout == b""
        return [line.rsplit("|", 1)[1].strip() for line in proc.stderr.decode().splitlines() if "|" in line]

    at_start = set(imports("-I", "-S", "-c", "pass"))
    assert [m for m in imports(*argv[1:], stdin=raw) if m not in at_start] == ["capture_core"]
    assert len(spool_files(understudy_home)) == 2


def _gone_within(pid: int, seconds: float) -> bool:
    """True once `pid` has exited: a killed child whose parent is gone may linger a moment
    as a zombie until init reaps it, which counts as gone."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.timeout(60)
def test_deadline_while_reducing_kills_the_reducer_and_spools_a_marker(understudy_home):
    values = ",".join(["1.25e-300"] * 6_000_000)  # ~10 s to reduce unbounded
    raw = f'{{"session_id": "sess-dl", "tool_response": [{values}], "tool_use_id": "toolu_dl"}}'.encode()
    # Run the interpreter itself (no shell) so that SIGALRM, the deadline, can be sent early.
    proc = subprocess.Popen(shlex.split(hooks_config.hook_command("PostToolUse")), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(raw)
        proc.stdin.close()
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        deadline = time.monotonic() + 10
        while not children.read_text().split():  # the reducer is forked: the hook is reducing
            assert time.monotonic() < deadline, "the hook never started reducing"
            time.sleep(0.01)
        [reducer] = map(int, children.read_text().split())
        proc.send_signal(signal.SIGALRM)
        assert proc.wait(timeout=10) == 0 and proc.stdout.read() == b""
    finally:
        proc.kill()
    assert _gone_within(reducer, 5), "the reducer outlived the hook"
    header, body = read_spooled(understudy_home)
    assert_kept_head_and_tail(header, body, raw, "deadline")
    assert "still reducing after the 5s deadline" in hook_errors(understudy_home)[0]
    assert list((understudy_home / "spool" / "tmp").iterdir()) == []
