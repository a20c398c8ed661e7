"""`trainer run`: stage fingerprints, and the demo end to end, which is also the learning test.

The learning test is the demo itself: a few hundred scripted-teacher traces (six task kinds, each
with its own workflow), a tiny random LLaMA fully fine-tuned for a few CPU minutes, evaluated on
held-out sessions. It must beat "always the most common workflow" by a clear margin on first-tool
accuracy and on sequence similarity. One session-scoped run serves every test that needs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from trainer.cli import main
from trainer.config import load_config
from trainer.pipeline import Stage, fingerprint

MARGIN = 0.2


def test_stage_fingerprint_marks_done_and_detects_changes(tmp_path):
    lines = []
    cfg = load_config()
    fp = fingerprint("sft", "data-1", cfg.sft)
    stage = Stage("sft", tmp_path / "sft", fp, lines.append)
    assert not stage.up_to_date()
    stage.start()
    assert stage.interrupted_same_inputs() and not stage.up_to_date()
    stage.done()
    assert Stage("sft", tmp_path / "sft", fp, lines.append).up_to_date()
    assert lines[-1] == f"[sft] up to date, skipping ({tmp_path / 'sft'})"
    # Paths, logging and resume don't change what a stage produces; hyperparameters do.
    cfg2 = load_config(overrides=["sft.output_dir=/elsewhere", "sft.logging_steps=1", "sft.resume=true"])
    assert fingerprint("sft", "data-1", cfg2.sft) == fp
    assert fingerprint("sft", "data-1", load_config(overrides=["sft.learning_rate=0.1"]).sft) != fp
    assert fingerprint("sft", "data-2", cfg.sft) != fp


def test_missing_traces_file_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["run", "--out", str(tmp_path), "--run.traces", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 1
    assert "run.traces" in result.output and "Traceback" not in result.output


def test_build_dataset_command(tmp_path):
    from trainer.teacher_corpus import write_corpus_jsonl

    traces = write_corpus_jsonl(tmp_path / "traces.jsonl", n=20, seed=2)
    out = tmp_path / "ds"
    result = CliRunner().invoke(
        main, ["build-dataset", "--traces", str(traces), "--output", str(out), "--sft.base_model", str(tmp_path / "none")]
    )
    assert result.exit_code == 0, result.output
    assert "counting ~4 characters per token" in result.output
    for split in ("train", "validation", "test"):
        assert (out / f"{split}.jsonl").is_file()
    assert sum(1 for _ in open(out / "train.jsonl")) > 0


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`trainer run --demo` once for the session: (output dir, CLI output)."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("demo") / "run"
    result = CliRunner().invoke(main, ["run", "--demo", "--out", str(out)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output[-5000:]
    return out, result.output


# The demo takes a few minutes on an idle 2-core machine; on a busy one the session fixture that
# runs it (counted in the first test's time) needs more than test.sh's default 600 s.
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_demo_runs_end_to_end(demo_run):
    out, output = demo_run
    assert "  method      full fine-tuning" in output  # the few settings that matter (full record: --show-config)
    for stage in ("base", "dataset", "sft", "eval"):
        assert json.loads((out / stage / "stage.json").read_text())["status"] == "done", stage
    assert (out / "sft" / "final" / "config.json").exists()
    assert (out / "sft" / "loss.png").stat().st_size > 0
    assert "## Evaluation" in (out / "sft" / "README.md").read_text()
    assert "| first_tool_accuracy |" in (out / "eval" / "eval.md").read_text()
    assert "Held-out workflow evaluation" in output and "student" in output


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_student_beats_the_majority_workflow_baseline(demo_run, capsys):
    """The learning test: held-out prompts, the student against the baselines."""
    out, _ = demo_run
    report = json.loads((out / "eval" / "eval.json").read_text())
    s, m, b = (report["summary"][k] for k in ("student", "majority", "base"))
    fmt = lambda v: "    —" if v is None else f"{v:.3f}"  # noqa: E731
    with capsys.disabled():  # the numbers go to the test log even when the test passes
        print(f"\nlearning test, {report['n_examples']} held-out examples:")
        for metric in s:
            print(f"  {metric:22s} student {fmt(s[metric])}  majority {fmt(m[metric])}  base {fmt(b[metric])}")
    assert s["first_tool_accuracy"] >= m["first_tool_accuracy"] + MARGIN
    assert s["sequence_similarity"] >= m["sequence_similarity"] + MARGIN
    assert s["first_tool_accuracy"] > b["first_tool_accuracy"] + MARGIN
    assert s["valid_call_rate"] > 0.5, "the student writes calls that parse and fit the tools' schemas"
    assert s["answered_rate"] > 0.5, "the student learned to stop"


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_rerun_skips_what_is_up_to_date(demo_run):
    out, _ = demo_run
    result = CliRunner().invoke(main, ["run", "--demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for stage in ("base", "dataset", "sft", "eval"):
        assert f"[{stage}] up to date, skipping" in result.output
    # A changed eval setting reruns only the evaluation.
    result = CliRunner().invoke(main, ["run", "--demo", "--out", str(out), "-o", "eval.max_examples=3", "--eval.baselines", "majority"])
    assert result.exit_code == 0, result.output
    assert "[sft] up to date, skipping" in result.output
    assert "[eval] running" in result.output
    assert json.loads((out / "eval" / "eval.json").read_text())["n_examples"] == 3


def test_traces_from_the_capture_store(tmp_path, understudy_home):
    """run.traces = "store": the accepted traces of the store (UNDERSTUDY_HOME) become traces.jsonl."""
    from capture_daemon.store import TraceStore
    from trainer.pipeline import stage_traces
    from trainer.teacher_corpus import generate_corpus

    cfg = load_config()
    result = CliRunner().invoke(main, ["run", "--out", str(tmp_path / "none")])
    assert result.exit_code == 1 and "no capture store" in result.output
    traces = generate_corpus(n=5, seed=4)
    traces[0].quality.accepted = False
    with TraceStore.open() as store:
        for t in traces:
            store.put(t)
    path = stage_traces(cfg, tmp_path, lambda _: None)
    ids = [json.loads(line)["trace_id"] for line in path.read_text().splitlines()]
    assert sorted(ids) == sorted(t.trace_id for t in traces[1:])


# What a trace stored or exported before a redaction rule existed can hold: the tail the old
# assignment rule left, and a value it read as code.
OLD_LEAKS = ("DB_PASSWORD=[REDACTED:assignment]&Kp9qW3", "API_KEY=Zq8<9xYv>Lm2Rt")


def _with_old_leaks(trace):
    call = trace.tool_calls[0]
    call.output = (call.output or "") + "\n" + "\n".join(OLD_LEAKS)
    return trace


def test_traces_are_redacted_again_on_their_way_to_training(tmp_path, understudy_home):
    """A store (or an export) from before a redaction rule keeps what the rule now removes: what
    `trainer run` / `build-dataset` take, and what `capture-daemon export` writes, are redacted by
    this version's rules, and the run says how many traces that changed."""
    from capture_daemon.cli import main as capture_main
    from capture_daemon.store import TraceStore
    from trainer.pipeline import stage_traces
    from trainer.teacher_corpus import generate_corpus

    traces = generate_corpus(n=6, seed=4)
    _with_old_leaks(traces[1])
    with TraceStore.open() as store:
        for t in traces:
            store.put(t)  # (put stores what it is given: redaction happens before, at capture)
    logged: list[str] = []
    path = stage_traces(load_config(), tmp_path / "run", logged.append)
    assert "Kp9qW3" not in path.read_text() and "Lm2Rt" not in path.read_text()
    assert "(1 redacted again by this version's rules)" in logged[-1], logged
    exported = CliRunner().invoke(capture_main, ["export", "-o", str(tmp_path / "export.jsonl")])
    assert exported.exit_code == 0, exported.output
    assert "Kp9qW3" not in (tmp_path / "export.jsonl").read_text() and "Lm2Rt" not in (tmp_path / "export.jsonl").read_text()

    # A traces file from elsewhere (an older export): build-dataset's examples hold none of it either.
    old_export = tmp_path / "old.jsonl"
    old_export.write_text("".join(_with_old_leaks(t).model_dump_json() + "\n" for t in generate_corpus(n=12, seed=5)))
    out = tmp_path / "ds"
    result = CliRunner().invoke(main, ["build-dataset", "--traces", str(old_export), "--output", str(out),
                                       "--sft.base_model", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    assert "(12 redacted again by this version's rules)" in result.output
    written = "".join(p.read_text() for p in out.glob("*.jsonl"))
    assert "Kp9qW3" not in written and "Lm2Rt" not in written and "[REDACTED:assignment]" in written


def _tiny_run_args(traces: Path, out: Path, *overrides: str) -> list[str]:
    """`trainer run` on a traces file with a one-layer tiny base, one SFT step and one evaluated example."""
    settings = [
        f"run.traces={traces}", "sft.base_model=tiny", "sft.method=full", "run.demo_hidden=32", "run.demo_layers=1",
        "run.demo_heads=2", "run.demo_vocab=400", "sft.max_steps=1", "sft.max_length=4096", *overrides,
        "eval.max_examples=1", "eval.max_new_tokens=8", "eval.baselines=[]",
    ]
    return ["run", "--out", str(out), *(part for setting in settings for part in ("-o", setting))]


def test_a_tiny_base_built_on_a_captured_corpus(tmp_path):
    """sft.base_model = "tiny" on a traces file (not the demo): the tiny LLaMA and its tokenizer are
    built on those traces, sized by run.demo_*, tied when asked."""
    pytest.importorskip("torch")
    from trainer.teacher_corpus import write_corpus_jsonl

    traces = write_corpus_jsonl(tmp_path / "captured.jsonl", 24, seed=3)
    out = tmp_path / "run"
    args = _tiny_run_args(traces, out, "run.demo_tied_embeddings=true")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output[-3000:]
    assert "base model  a tiny random LLaMA built on the corpus (hidden 32, 1 layers, vocab 400, tied embeddings)" in result.output
    config = json.loads((out / "base" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["tie_word_embeddings"]) == (32, 1, True)
    assert json.loads((out / "understudy_config.json").read_text())["config"]["sft"]["base_model"] == str(out / "base")
    assert (out / "sft" / "final" / "config.json").exists()

    # The tokenizer learned from the texts as rendered: rendered otherwise, the base is built again.
    assert "[base] up to date, skipping" in CliRunner().invoke(main, args).output
    rerendered = CliRunner().invoke(main, [*args, "-o", "dataset.tool_schema=full"])
    assert rerendered.exit_code == 0, rerendered.output[-3000:]
    assert "[base] running" in rerendered.output
    # So is the warm-up's learning rate (a base warmed up at another rate is another base).
    relearned = CliRunner().invoke(main, [*args, "-o", "dataset.tool_schema=full", "-o", "run.demo_copy_warmup_learning_rate=1e-3"])
    assert relearned.exit_code == 0, relearned.output[-3000:]
    assert "[base] running" in relearned.output


def test_the_tiny_preset_on_captured_traces_shows_called_tools_in_their_shortest_form_and_serve_matches(tmp_path):
    """`trainer run --preset tiny` on a traces file: every example shows only the tools training
    calls, each as its name and required parameters with no description, and `trainer serve`
    (adopting the student's recorded context) maps Claude Code's real 14-tool request to exactly
    what the examples showed."""
    pytest.importorskip("torch")
    from trainer.config import load_config
    from trainer.serve import adopt_trained_context
    from trainer.teacher_corpus import write_corpus_jsonl
    from trainer.tool_context import tools_for

    traces = write_corpus_jsonl(tmp_path / "captured.jsonl", 24, seed=3)
    out = tmp_path / "run"
    run, *rest = _tiny_run_args(traces, out, "run.demo_copy_warmup_steps=0")
    result = CliRunner().invoke(main, [run, "--preset", "tiny", *rest])
    assert result.exit_code == 0, result.output[-3000:]
    assert "as name and required parameters (dataset.tool_schema); no descriptions" in result.output
    shown = json.loads((out / "dataset" / "stats.json").read_text())["tools_shown"]
    examples = [json.loads(line) for line in (out / "dataset" / "train.jsonl").read_text().splitlines()]
    example_tools = json.loads(examples[0]["tools"])
    assert all(json.loads(e["tools"]) == example_tools for e in examples)
    by_name = {t["function"]["name"]: t["function"] for t in example_tools}
    assert sorted(by_name) == sorted(shown)
    assert by_name["Read"]["parameters"] == {"file_path": "string"}, "only the required parameters"
    assert all(len(f["description"]) <= 1 for f in by_name.values()), "no description"

    cfg = load_config(None)
    adopt_trained_context(cfg, str(out / "sft" / "final"), lambda line: None)
    real_request = json.loads((Path(__file__).parent / "data" / "claude_code_tools.json").read_text())
    served = {t["function"]["name"]: t["function"] for t in tools_for(real_request, cfg.dataset)}
    assert served == by_name, "the same tools in the same form (in the request's order, which is the offered one)"


def test_a_run_on_called_tools_records_them_where_serve_reads_them(tmp_path):
    """dataset.tool_set = "called" through `trainer run`: a tool the traces offer but the teacher
    never calls is in no example, and both records `trainer serve` may read (sft/ for sft/final,
    the run folder for a GGUF exported under it) name the tools the examples showed."""
    pytest.importorskip("torch")
    from trainer.teacher_corpus import write_corpus_jsonl

    traces = write_corpus_jsonl(tmp_path / "captured.jsonl", 24, seed=3)
    never_called = {"name": "WebFetch", "description": "Fetch a URL.",
                    "input_schema": {"type": "object", "properties": {"url": {"type": "string"}}}}
    rows = [json.loads(line) for line in traces.read_text().splitlines()]
    traces.write_text("".join(json.dumps({**r, "tools_offered": [*r["tools_offered"], never_called]}) + "\n" for r in rows))
    out = tmp_path / "run"
    args = _tiny_run_args(traces, out, "dataset.tool_set=called")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output[-3000:]
    assert "only those the teacher calls in the training split" in result.output
    shown = json.loads((out / "dataset" / "stats.json").read_text())["tools_shown"]
    assert shown and "WebFetch" not in shown and set(shown) <= {t["name"] for t in rows[0]["tools_offered"]}
    examples = [json.loads(line) for line in (out / "dataset" / "train.jsonl").read_text().splitlines()]
    assert all({t.get("name") or t["function"]["name"] for t in json.loads(e["tools"])} == set(shown) for e in examples)
    for record in (out / "sft" / "understudy_config.json", out / "understudy_config.json"):
        dataset = json.loads(record.read_text())["config"]["dataset"]
        assert (dataset["tool_set"], sorted(dataset["tools"])) == ("called", sorted(shown)), record
    assert "[dataset] up to date, skipping" in CliRunner().invoke(main, args).output
