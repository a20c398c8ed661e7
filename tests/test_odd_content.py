"""What real sessions hold every day, through the real CLI (2.1.328), live and imported: MCP
tools (structured content, an error, an image), images (a Read PNG, a large one, one sent with
the prompt), thinking (interleaved, redacted), API trouble (500/529 then success, max_tokens
mid tool call, a refusal), a call Claude Code's input validation rejects, other built-in tools,
and odd bytes (NUL, invalid UTF-8, ANSI escapes, a very long line, emoji/RTL in a path, a
100k-character prompt).

Each session runs while the daemon is down, then the daemon ingests the spool; the same
transcripts are imported into a fresh store. The tests compare both with what the scripted API
saw the CLI send the model, and build a training example of every trace.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from capture_daemon.schema import Trace
from tests.claude_harness import StreamSession, claude_bin, claude_env, run_claude, write_settings_with_hooks
from tests.daemon_harness import traces_by_prompt, wait_for
from tests.scripted_api import Script, ScriptedAPI, redacted_thinking, text, thinking, tool
from trainer.dataset import DatasetConfig, trace_to_example

pytestmark = pytest.mark.e2e

CAPTURE_DAEMON = [sys.executable, "-m", "capture_daemon.cli"]
MCP_SERVER = Path(__file__).with_name("mcp_stdio_server.py")
LONG_PROMPT = "LONGPROMPT " + ("lorem ipsum dolor sit amet " * 4000)[:100_000]
EMOJI_PROMPT = "emoji prompt 😀 שלום עולם"
REFUSED = ("REFUSED-THOUGHT", "REFUSED-TEXT", "REFUSED-CALL")
# Claude Code gives up on these prompts: a 400 it does not retry for long, a second refusal in a row.
ENDED_BY_AN_ERROR = ("bad request", "refused twice")


def _png(width: int, height: int, noise: bool = False) -> bytes:
    rows = b"".join(b"\x00" + (os.urandom(width * 3) if noise else b"\x80" * width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _scripts(project: Path) -> list[tuple[str, Script, str, tuple]]:
    """(prompt, script, allowed tools, extra CLI arguments) of each -p session."""
    p = str(project)
    odd_bytes = "printf 'NUL[\\000]BAD[\\377\\376]ANSI[\\033[31mred\\033[0m]\\n'"
    return [
        ("mcp probe", Script("mcp probe", [
            [text("Asking the grid server."), tool("mcp__grid__lookup", {"name": "north"}, id="toolu_mcp_1")],
            [tool("mcp__grid__explode", {}, id="toolu_mcp_2")],
            [tool("mcp__grid__snapshot", {}, id="toolu_mcp_3")],
            [text("North is 33kV with 4 feeders.")]]),
         "mcp__grid__lookup mcp__grid__explode mcp__grid__snapshot", ("--mcp-config", str(project / "mcp.json"))),
        ("read the pngs", Script("read the pngs", [
            [tool("Read", {"file_path": p + "/small.png"}, id="toolu_img_1")],
            [tool("Read", {"file_path": p + "/big.png"}, id="toolu_img_2")],
            [text("Both images are read.")]]), "Read", ()),
        ("thinking probe", Script("thinking probe", [
            [thinking("THINK-ONE first I plan."), redacted_thinking(), text("Plan: echo twice."),
             tool("Bash", {"command": "echo one", "description": "one"}, id="toolu_th_1")],
            [thinking("THINK-TWO interleaved."), tool("Bash", {"command": "echo two", "description": "two"}, id="toolu_th_2")],
            [thinking("THINK-THREE wrap up."), text("Echoed one and two.")]]), "Bash", ()),
        ("api trouble", Script("api trouble", [
            [tool("Bash", {"command": "echo retried", "description": "r"}, id="toolu_api_1")],
            [text("Worked after retries.")]], failures={0: [500, 529]}), "Bash", ()),
        ("max tokens mid tool", Script("max tokens mid tool", [
            [text("Starting a long call"), tool("Bash", {"command": "echo cut", "description": "cut"}, id="toolu_mt_1")],
            [text("After the cut.")]], stop_reasons={0: "max_tokens"}), "Bash", ()),
        ("refusal probe", Script("refusal probe", [
            [thinking("REFUSED-THOUGHT"), text("REFUSED-TEXT partial"),
             tool("Bash", {"command": "echo REFUSED-CALL", "description": "x"}, id="toolu_rf_1")],
            [text("I will not do that; here is a safe summary instead.")]], stop_reasons={0: "refusal"}), "Bash", ()),
        ("refused twice", Script("refused twice", [[text("REFUSED-TEXT one")], [text("REFUSED-TEXT two")]],
                                 stop_reasons={0: "refusal", 1: "refusal"}), "Bash", ()),
        ("bad request", Script("bad request", [[text("never")]], failures={0: [400] * 20}), "Bash", ()),
        ("invalid input", Script("invalid input", [
            [tool("Bash", {"cmd": "ls"}, id="toolu_inv_1")],
            [tool("Bash", {"command": "ls", "description": "ls"}, id="toolu_inv_2")],
            [text("Listed after fixing the input.")]]), "Bash", ()),
        ("builtin tools", Script("builtin tools", [
            [tool("TodoWrite", {"todos": [{"content": "check grid", "status": "in_progress", "activeForm": "Checking"}]},
                  id="toolu_bi_1")],
            [tool("NotebookEdit", {"notebook_path": p + "/nb.ipynb", "cell_id": "c1", "new_source": "print(2)"}, id="toolu_bi_2")],
            [tool("WebFetch", {"url": "http://127.0.0.1:9/page", "prompt": "what frequency?"}, id="toolu_bi_3")],
            [tool("Edit", {"file_path": p + "/app.py", "old_string": "NOT-THERE", "new_string": "x"}, id="toolu_bi_4")],
            [tool("Glob", {"pattern": "**/*.nomatch"}, id="toolu_bi_5")],
            [tool("Grep", {"pattern": "ZZZNOMATCH", "path": p}, id="toolu_bi_6")],
            [text("Done with the built-in tools.")]]), "TodoWrite NotebookEdit WebFetch Edit Read Glob Grep", ()),
        ("content probe", Script("content probe", [
            [tool("Bash", {"command": odd_bytes, "description": "odd bytes"}, id="toolu_ct_1")],
            [tool("Bash", {"command": "python3 -c \"print('L'*200000)\"", "description": "long line"}, id="toolu_ct_2")],
            [tool("Read", {"file_path": p + "/données-😀-שלום.txt"}, id="toolu_ct_3")],
            [text("Odd bytes seen 😀 שלום.")]]), "Bash Read", ()),
        ("edit a long file", Script("edit a long file", [
            [tool("Read", {"file_path": p + "/long.py", "limit": 5}, id="toolu_lf_1")],
            [tool("Edit", {"file_path": p + "/long.py", "old_string": "LINE-00001 ", "new_string": "LINE-ONE "}, id="toolu_lf_2")],
            [text("Renamed the first line.")]]), "Read Edit", ()),
        (EMOJI_PROMPT, Script("emoji prompt", [[text("Emoji answer 😀.")]]), "Bash", ()),
        (LONG_PROMPT, Script("LONGPROMPT", [[tool("Bash", {"command": "echo long", "description": "l"}, id="toolu_lp_1")],
                                            [text("Long prompt read.")]]), "Bash", ()),
    ]


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    claude_bin()
    root = tmp_path_factory.mktemp("odd")
    home, uhome, project = root / "home", root / "understudy", root / "project"
    home.mkdir()
    project.mkdir()
    uhome.mkdir(mode=0o700)
    (uhome / "config.toml").write_text("[capture]\nidle_timeout_seconds = 3\n")
    (project / "small.png").write_bytes(_png(4, 4))
    (project / "big.png").write_bytes(_png(1500, 1500, noise=True))  # ~6.7 MB: Claude Code sends it shrunk, as JPEG
    (project / "nb.ipynb").write_text(json.dumps({"cells": [{"cell_type": "code", "id": "c1", "metadata": {}, "source": ["print(1)"],
                                                             "outputs": [], "execution_count": None}],
                                                  "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    (project / "app.py").write_text("print('hi')\n")
    (project / "long.py").write_text("".join(f"LINE-{i:05} = {i}\n" for i in range(1, 20_000)) + "UNSEEN-TAIL = 1\n")
    (project / "données-😀-שלום.txt").write_text("RTL-CONTENT שלום עולם 😀\n")
    (project / "mcp.json").write_text(json.dumps({"mcpServers": {"grid": {"command": sys.executable, "args": [str(MCP_SERVER)]}}}))
    write_settings_with_hooks(home)
    env = dict(os.environ, UNDERSTUDY_HOME=str(uhome), HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    runs = _scripts(project)
    image_prompt = Script("describe this image", [[text("It is a grey square.")]])
    with ScriptedAPI([script for _, script, _, _ in runs] + [image_prompt]) as api:
        for prompt, _, tools, extra in runs:
            proc = run_claude(prompt, home=home, understudy_home=uhome, cwd=project, base_url=api.base_url,
                              allowed_tools=tools, extra_args=extra, timeout=180)
            assert proc.returncode == (1 if prompt in ENDED_BY_AN_ERROR else 0), (prompt[:40], proc.stderr[-2000:])
        # An image sent with the prompt (stream-json input, as an SDK or IDE sends one).
        session = StreamSession(claude_bin(), cwd=project, env=claude_env(home, uhome, api.base_url))
        picture = base64.b64encode((project / "small.png").read_bytes()).decode()
        session.proc.stdin.write(json.dumps({"type": "user", "message": {"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": picture}},
            {"type": "text", "text": "describe this image"}]}}) + "\n")
        session.proc.stdin.flush()
        for line in session.proc.stdout:
            if json.loads(line).get("type") == "result":
                break
        session.proc.stdin.close()
        session.proc.wait(60)
        requests = list(api.requests)
    subprocess.run([*CAPTURE_DAEMON, "start"], env=env, capture_output=True, timeout=60, check=True)
    try:
        wait_for(lambda: not list((uhome / "spool").glob("*.event")), 90, "the spool to drain")
        status = json.loads(subprocess.run([*CAPTURE_DAEMON, "status", "--json"], env=env, capture_output=True,
                                           text=True, timeout=60, check=True).stdout)
    finally:
        subprocess.run([*CAPTURE_DAEMON, "stop"], env=env, capture_output=True, timeout=60)
    fresh = dict(env, UNDERSTUDY_HOME=str(root / "imported"))
    subprocess.run([*CAPTURE_DAEMON, "import", str(home / ".claude" / "projects")], env=fresh, capture_output=True,
                   timeout=120, check=True)
    return {"live": traces_by_prompt(env), "import": traces_by_prompt(fresh), "status": status, "requests": requests,
            "project": project, "raw": (uhome / "traces.db").read_bytes()}


def _seen_results(requests: list[dict]) -> dict[str, dict]:
    """Each tool_result block the CLI sent the model, by tool_use_id."""
    seen: dict[str, dict] = {}
    for request in requests:
        for message in request.get("messages", []):
            if isinstance(message.get("content"), list):
                for block in message["content"]:
                    if block.get("type") == "tool_result":
                        seen.setdefault(block["tool_use_id"], block)
    return seen


def _comparable(trace: dict) -> dict:
    keys = ("prompt", "final_response", "assistant_text", "thinking", "mid_turn_messages", "complete", "incomplete_reason",
            "capture_losses")
    calls = [{k: c[k] for k in ("tool_use_id", "name", "input", "output", "success", "error", "parallel_group",
                                 "output_original_chars")} for c in trace["tool_calls"]]
    return {**{k: trace[k] for k in keys}, "tool_calls": calls}


def test_every_session_is_one_trace_and_nothing_is_quarantined(sessions):
    prompts = {prompt for prompt, _, _, _ in _scripts(sessions["project"])}
    assert set(sessions["live"]) == prompts | {"[image]\ndescribe this image"}
    assert sessions["status"]["spool"] == {"pending_events": 0, "quarantined": 0, "quarantine": []}
    assert set(sessions["import"]) == set(sessions["live"])


def test_live_and_import_agree_on_what_the_model_saw(sessions):
    for prompt, live in sessions["live"].items():
        assert _comparable(sessions["import"][prompt]) == _comparable(live), prompt[:40]


def test_a_refused_reply_is_no_behaviour_to_learn(sessions):
    """stop_reason "refusal": a safety classifier stopped the reply; Claude Code withheld the
    rest, ran none of its calls ("Not run" results) and told the model not to say it again.
    Neither its thinking, its words nor its call reach the trace; the trace says a reply was
    left out, and quality rejects it."""
    for source in ("live", "import"):
        t = sessions[source]["refusal probe"]
        dumped = json.dumps(t)
        assert not any(word in dumped for word in REFUSED), source
        assert t["tool_calls"] == [] and t["assistant_text"] == [] and t["thinking"] == []
        assert t["final_response"] == "I will not do that; here is a safe summary instead."
        assert [loss["event"] for loss in t["capture_losses"]] == ["Refusal"]
        assert t["quality"]["accepted"] is False and any("Refusal" in r for r in t["quality"]["reasons"])
    assert not any(word.encode() in sessions["raw"] for word in REFUSED)


def test_a_prompt_an_api_error_ended_is_unfinished_for_that_reason_live_as_imported(sessions):
    """Claude Code runs no Stop hook after a failed request it gave up on (or a second refusal),
    so live capture closed the trace only when the session ended; the reason is the error."""
    for prompt in ENDED_BY_AN_ERROR:
        for source in ("live", "import"):
            t = sessions[source][prompt]
            assert t["complete"] is False and t["incomplete_reason"] == "api_error", (prompt, source)
            assert "REFUSED" not in json.dumps(t) and not t["final_response"]
    assert [loss["event"] for loss in sessions["live"]["refused twice"]["capture_losses"]] == ["Refusal", "Refusal"]


def test_an_api_error_under_2_1_42_which_runs_stop_after_it_is_unfinished_live_as_imported(tmp_path, monkeypatch):
    """Claude Code 2.1.42 runs the Stop hook after a request it gave up on: live capture took
    that stop for a finished prompt (complete, no answer) where an import says api_error."""
    binary = Path(__file__).resolve().parent.parent / ".tools" / "claude-code-2.1.42" / "node_modules" / ".bin" / "claude"
    if not os.access(binary, os.X_OK):
        pytest.skip(f"Claude Code 2.1.42 not installed at {binary}; ./test.sh installs it")
    monkeypatch.setenv("UNDERSTUDY_CLAUDE_BIN", str(binary))  # run_claude runs claude_bin()
    home, uhome, project = tmp_path / "home", tmp_path / "understudy", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    uhome.mkdir(mode=0o700)
    (uhome / "config.toml").write_text("[capture]\nidle_timeout_seconds = 3\n")
    write_settings_with_hooks(home)
    env = dict(os.environ, UNDERSTUDY_HOME=str(uhome), HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    with ScriptedAPI([Script("bad request", [[text("never")]], failures={0: [400] * 20})]) as api:
        proc = run_claude("bad request", home=home, understudy_home=uhome, cwd=project, base_url=api.base_url,
                          allowed_tools="Bash", timeout=180)
    assert proc.returncode == 1, proc.stdout[-2000:]
    subprocess.run([*CAPTURE_DAEMON, "start"], env=env, capture_output=True, timeout=60, check=True)
    try:
        wait_for(lambda: not list((uhome / "spool").glob("*.event")), 90, "the spool to drain")
    finally:
        subprocess.run([*CAPTURE_DAEMON, "stop"], env=env, capture_output=True, timeout=60)
    fresh = dict(env, UNDERSTUDY_HOME=str(tmp_path / "imported"))
    subprocess.run([*CAPTURE_DAEMON, "import", str(home / ".claude" / "projects")], env=fresh, capture_output=True,
                   timeout=120, check=True)
    for source in (env, fresh):
        [trace] = traces_by_prompt(source).values()
        assert (trace["complete"], trace["incomplete_reason"]) == (False, "api_error"), trace["source"]


def test_an_image_sent_with_the_prompt_is_marked_in_it_live_and_imported(sessions):
    assert "[image]\ndescribe this image" in sessions["live"]
    assert "[image]\ndescribe this image" in sessions["import"]


def test_mcp_calls_record_what_the_model_read(sessions):
    seen = _seen_results(sessions["requests"])
    for source in ("live", "import"):
        lookup, explode, snapshot = sessions[source]["mcp probe"]["tool_calls"]
        # Claude Code sends an MCP tool's structuredContent, not its text, when it has one.
        assert lookup["name"] == "mcp__grid__lookup" and lookup["input"] == {"name": "north"}
        assert lookup["output"] == seen["toolu_mcp_1"]["content"] and json.loads(lookup["output"])["voltage_kv"] == 33
        # An isError result: the model read Claude Code's note on the tool's schema after the error.
        assert explode["success"] is False and explode["error"] == explode["output"] == seen["toolu_mcp_2"]["content"]
        assert "EXPLODE-FAILED" in explode["error"] and "input schema" in explode["error"]
        # An image result: a marker, never the base64.
        assert snapshot["success"] is True and snapshot["output"].startswith("PANEL-SNAPSHOT taken\n[image]\n[Image: source: ")


def test_read_images_are_markers_and_a_large_one_does_not_bloat_the_trace(sessions):
    seen = _seen_results(sessions["requests"])
    assert seen["toolu_img_2"]["content"][0]["type"] == "image"
    assert len(seen["toolu_img_2"]["content"][0]["source"]["data"]) > 100_000  # what the model got
    for source in ("live", "import"):
        t = sessions[source]["read the pngs"]
        assert [(c["output"], c["success"]) for c in t["tool_calls"]] == [("[image]", True), ("[image]", True)]
        assert len(json.dumps(t)) < 50_000


def test_an_edit_stores_no_copy_of_the_file_it_changed(sessions):
    """Claude Code's Edit reports the whole file as it was (`originalFile`) to the PostToolUse
    hook; the model read five lines of it and a one-line result. Nothing of the rest is stored."""
    assert b"UNSEEN-TAIL" in (sessions["project"] / "long.py").read_bytes()
    assert b"UNSEEN-TAIL" not in sessions["raw"] and b"LINE-00500" not in sessions["raw"]
    for source in ("live", "import"):
        read, edit = sessions[source]["edit a long file"]["tool_calls"]
        assert "LINE-00005" in read["output"] and "LINE-00006" not in read["output"]
        assert edit["success"] is True and "has been updated" in edit["output"]


def test_thinking_between_calls_keeps_its_place_and_redacted_thinking_adds_nothing(sessions):
    t = sessions["live"]["thinking probe"]
    assert [(s["text"], s["position"]) for s in t["thinking"]] == [
        ("THINK-ONE first I plan.", 0), ("THINK-TWO interleaved.", 1), ("THINK-THREE wrap up.", 2)]
    assert t["assistant_text"] == [{"text": "Plan: echo twice.", "position": 0, "agent_id": None}]
    assert "ZW5jcnlwdGVk" not in json.dumps(t)  # the redacted block's opaque data


def test_api_trouble_and_validation_errors(sessions):
    live = sessions["live"]
    retried = live["api trouble"]  # 500, then 529 overloaded, then the turn: Claude Code retried
    assert retried["complete"] and [c["output"] for c in retried["tool_calls"]] == ["retried"]
    assert retried["final_response"] == "Worked after retries."
    # max_tokens after a whole tool_use block: Claude Code ran the call all the same.
    cut = live["max tokens mid tool"]
    assert [(c["output"], c["success"]) for c in cut["tool_calls"]] == [("cut", True)]
    assert cut["assistant_text"][0]["text"] == "Starting a long call" and cut["final_response"] == "After the cut."
    invalid = live["invalid input"]["tool_calls"]
    assert invalid[0]["input"] == {"cmd": "ls"} and invalid[0]["success"] is False
    assert "InputValidationError" in invalid[0]["output"] and invalid[1]["success"] is True


def test_other_built_in_tools(sessions):
    calls = {c["name"]: c for c in sessions["live"]["builtin tools"]["tool_calls"]}
    seen = _seen_results(sessions["requests"])
    for call in calls.values():
        assert call["output"] == seen[call["tool_use_id"]]["content"], call["name"]
        assert call["success"] is not bool(seen[call["tool_use_id"]].get("is_error")), call["name"]
    # -p 2.1.328 has TodoWrite off; NotebookEdit wants a Read first; WebFetch checks the domain online.
    assert "No such tool available: TodoWrite" in calls["TodoWrite"]["output"]
    assert calls["Edit"]["success"] is False and "String to replace not found" in calls["Edit"]["output"]
    assert calls["Glob"]["output"] == calls["Grep"]["output"] == "No files found"


def test_odd_bytes_long_lines_and_unicode_paths(sessions):
    seen = _seen_results(sessions["requests"])
    odd, long_line, unicode_read = sessions["live"]["content probe"]["tool_calls"]
    # NUL, U+FFFD for the invalid bytes and ANSI escapes: kept as the model read them.
    assert odd["output"] == seen["toolu_ct_1"]["content"] == "NUL[\x00]BAD[\ufffd\ufffd]ANSI[\x1b[31mred\x1b[0m]"
    assert long_line["output"].startswith("<persisted-output>") and long_line["output_original_chars"] == 200_001
    assert unicode_read["input"]["file_path"].endswith("données-😀-שלום.txt") and "שלום עולם 😀" in unicode_read["output"]
    assert sessions["live"][EMOJI_PROMPT]["final_response"] == "Emoji answer 😀."
    assert sessions["live"][LONG_PROMPT]["prompt"] == LONG_PROMPT  # 100k characters, whole


def test_every_trace_builds_a_training_example(sessions):
    for prompt, raw in sessions["live"].items():
        example = trace_to_example(Trace.model_validate(raw), DatasetConfig())
        rendered = json.dumps(example["messages"], ensure_ascii=False)
        if raw["final_response"]:
            assert example["messages"][-1]["role"] == "assistant", prompt[:40]
        assert "REFUSED" not in rendered and "base64" not in rendered


def test_images_and_pdfs_without_a_transcript_are_markers_and_no_base64_is_stored(tmp_path):
    """Where no transcript has the results (Claude Code killed before writing it, a transcript
    deleted), the calls come from the hooks alone, whose tool_response holds each image and PDF
    as base64 (a Read PNG, ~650k characters of it here; an MCP image). The trace reads them as
    an import of a transcript would ("[image]", "[document]"), and no base64 reaches the store."""
    claude_bin()
    home, uhome, project = tmp_path / "home", tmp_path / "understudy", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    uhome.mkdir(mode=0o700)
    (uhome / "config.toml").write_text("[capture]\nidle_timeout_seconds = 3\n")
    (project / "big.png").write_bytes(_png(1500, 1500, noise=True))
    (project / "doc.pdf").write_bytes(b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[3 0 R]"
                                      b"/Count 1>>endobj 3 0 obj<</Type/Page/MediaBox[0 0 200 200]/Parent 2 0 R>>endobj\n"
                                      b"trailer<</Root 1 0 R>>\n%%EOF\n")
    (project / "mcp.json").write_text(json.dumps({"mcpServers": {"grid": {"command": sys.executable, "args": [str(MCP_SERVER)]}}}))
    write_settings_with_hooks(home)
    env = dict(os.environ, UNDERSTUDY_HOME=str(uhome), HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    script = Script("look at the pictures", [
        [tool("Read", {"file_path": str(project / "big.png")}, id="toolu_nt_1")],
        [tool("Read", {"file_path": str(project / "doc.pdf")}, id="toolu_nt_2")],
        [tool("mcp__grid__snapshot", {}, id="toolu_nt_3")],
        [text("A noisy square, an empty page and the panel.")]])
    with ScriptedAPI([script]) as api:
        proc = run_claude("look at the pictures", home=home, understudy_home=uhome, cwd=project, base_url=api.base_url,
                          allowed_tools="Read mcp__grid__snapshot", extra_args=("--mcp-config", str(project / "mcp.json")),
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for transcript in (home / ".claude" / "projects").rglob("*.jsonl"):
        transcript.unlink()
    subprocess.run([*CAPTURE_DAEMON, "start"], env=env, capture_output=True, timeout=60, check=True)
    try:
        wait_for(lambda: not list((uhome / "spool").glob("*.event")), 90, "the spool to drain")
    finally:
        subprocess.run([*CAPTURE_DAEMON, "stop"], env=env, capture_output=True, timeout=60)
    [trace] = traces_by_prompt(env).values()
    image, pdf, snapshot = trace["tool_calls"]
    assert (image["output"], image["success"]) == ("[image]", True)
    assert (pdf["output"], pdf["success"]) == ("[document]", True)
    assert snapshot["output"].startswith("PANEL-SNAPSHOT taken\n[image]\n[Image: source: ")
    store = (uhome / "traces.db").read_bytes()
    assert len(store) < 1_000_000
    assert b"iVBORw0KGgo" not in store and b"JVBERi0" not in store  # a PNG's and a PDF's base64 opening
