"""The real Claude Code CLI running on the student through `trainer serve`, captured by our hooks.

The student is tests/student.py's tiny model: a short full fine-tune (plain PyTorch loop,
assistant-only loss, the one chat template) on a small corpus in which one conversation, "List
the files in this directory.", is rendered exactly as `trainer serve` renders Claude Code's
request (compact system prompt, Claude Code's own Bash schema compacted). Greedy decoding
reproduces that conversation's workflow. So this test shows the plumbing end to end with a
student whose behaviour is known: Claude Code sends its long request, the server maps it to the
training context, the student's `<tool_call>` becomes a `tool_use` block, Claude Code runs `ls`
for real, sends the result back, the student answers, and the capture hooks record a trace whose
tool calls are the student's. It does not show that a tiny model generalizes.

Run for both backends: transformers (the HF checkpoint) and llama.cpp (the exported GGUF). A third
test runs the real CLI through `trainer serve --ab` with the scripted API as the upstream.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.claude_harness import run_claude
from tests.student import FINAL_ANSWER, LISTING, NARRATION, TARGET_CALL, TARGET_PROMPT, shared_gguf, shared_student

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_trainer_serve(model: Path, port: int, env: dict, log: Path, extra: tuple = ()) -> subprocess.Popen:
    argv = [
        sys.executable, "-m", "trainer.cli", "serve", "--model", str(model), "--port", str(port),
        # The student was taught with Claude Code's Bash tool only, and greedy decoding, on a
        # context without the working-directory line (tests/student.py trains one fixed
        # conversation; the CLI here runs in a fresh temp dir): serve maps requests the same way.
        "-o", "serve.tools=Bash", "-o", "serve.temperature=0", "-o", "serve.max_new_tokens=64",
        "-o", "dataset.working_directory=false", *extra,
    ]
    proc = subprocess.Popen(argv, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"trainer serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"trainer serve did not come up: {log.read_text()[-2000:]}")


def ingest_and_export(understudy_home: Path) -> list[dict]:
    from capture_daemon import paths
    from capture_daemon.ingest import IngestSettings, Ingestor
    from capture_daemon.store import TraceStore

    with TraceStore.open() as store:
        ingestor = Ingestor(store, paths.spool_dir(), paths.quarantine_dir(), IngestSettings(settle_seconds=0))
        ingestor.scan()
        ingestor.finalize_ready(force=True)
    out = subprocess.run(
        [sys.executable, "-m", "capture_daemon.cli", "export", "--format", "jsonl"],
        env=dict(os.environ, UNDERSTUDY_HOME=str(understudy_home)), capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def gguf_student(tmp_path_factory):
    return shared_gguf(tmp_path_factory)  # shared with tests/test_serve_conformance.py


@pytest.mark.parametrize("backend", ["transformers", "llamacpp"])
def test_claude_code_runs_on_the_student(backend, claude_home, understudy_home, tmp_path, tmp_path_factory, request):
    model_dir, _ = shared_student(tmp_path_factory)
    model = request.getfixturevalue("gguf_student") if backend == "llamacpp" else model_dir
    project = tmp_path / "project"
    project.mkdir()
    for name in LISTING.split("\n"):
        (project / name).write_text(f"{name}\n")

    port = free_port()
    env = dict(os.environ, UNDERSTUDY_HOME=str(understudy_home))
    server = start_trainer_serve(model, port, env, tmp_path / "serve.log")
    try:
        proc = run_claude(
            TARGET_PROMPT, home=claude_home, understudy_home=understudy_home, cwd=project,
            base_url=f"http://127.0.0.1:{port}", allowed_tools="Bash", timeout=180,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr[-3000:] + (tmp_path / "serve.log").read_text()[-3000:]
    result = json.loads(proc.stdout)
    assert result["result"] == FINAL_ANSWER, result
    assert result["num_turns"] >= 2

    traces = ingest_and_export(understudy_home)
    trace = next(t for t in traces if t["prompt"] == TARGET_PROMPT)
    assert trace["session_id"] == result["session_id"]
    # The workflow in the trace is the student's: its tool call, run for real by Claude Code.
    calls = trace["tool_calls"]
    assert [(c["name"], c["input"]) for c in calls] == [(TARGET_CALL["name"], TARGET_CALL["arguments"])]
    assert calls[0]["success"] and "alpha.txt" in calls[0]["output"] and "beta.txt" in calls[0]["output"]
    assert trace["final_response"].strip() == FINAL_ANSWER
    assert any(NARRATION in step["text"] for step in trace["assistant_text"])


def test_ab_rollout_with_the_real_cli(claude_home, understudy_home, tmp_path, tmp_path_factory):
    """`--ab upstream=URL,student=0`: Claude Code's session goes to the upstream (the scripted API)
    through the proxy, streaming passed through; the arm log keys it by the session id Claude
    Code sends, which is also the captured trace's session id, so traces can be split by arm."""
    from tests.scripted_api import Script, ScriptedAPI, text, tool

    model_dir, _ = shared_student(tmp_path_factory)
    project = tmp_path / "project"
    project.mkdir()
    (project / "gamma.txt").write_text("gamma\n")
    scripts = [Script("List the files", [[text("Teacher lists."), tool("Bash", {"command": "ls"})], [text("One file: gamma.txt.")]])]
    port = free_port()
    with ScriptedAPI(scripts) as upstream:
        env = dict(os.environ, UNDERSTUDY_HOME=str(understudy_home))
        argv_extra = ["--ab", f"upstream={upstream.base_url},student=0"]
        server = start_trainer_serve(model_dir, port, env, tmp_path / "serve.log", extra=argv_extra)
        try:
            proc = run_claude(TARGET_PROMPT, home=claude_home, understudy_home=understudy_home, cwd=project,
                              base_url=f"http://127.0.0.1:{port}", allowed_tools="Bash", timeout=180)
        finally:
            server.terminate()
            server.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["result"] == "One file: gamma.txt."
    assert len(upstream.requests) >= 2  # both turns went upstream

    arms = subprocess.run([sys.executable, "-m", "trainer.cli", "serve", "arms", "--json"], env=env,
                          capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [json.loads(line) for line in arms.splitlines()]
    assert [(r["session_id"], r["arm"]) for r in rows] == [(result["session_id"], "upstream")]
    assert rows[0]["requests"] >= 2
    trace = next(t for t in ingest_and_export(understudy_home) if t["prompt"] == TARGET_PROMPT)
    assert trace["session_id"] == rows[0]["session_id"]
    assert [c["name"] for c in trace["tool_calls"]] == ["Bash"] and "gamma.txt" in trace["tool_calls"][0]["output"]
