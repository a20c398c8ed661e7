"""What a user sees from `trainer run` / `trainer sft` / `trainer build-dataset`, through the real
CLI entry point: the few settings that matter at the start, progress with an ETA, and every
failure a user can cause as one line naming what to change (exit 1, no traceback)."""

from __future__ import annotations

import json
import socket

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from click.testing import CliRunner  # noqa: E402

from trainer.cli import main  # noqa: E402


def _invoke(args: list[str]):
    return CliRunner().invoke(main, args)


def assert_one_line_error(result, *needles: str) -> str:
    """Exit 1, one `Error:` line holding every needle, no traceback; returns that line."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    assert result.output.rstrip().endswith(errors[0]), result.output  # nothing after it
    return errors[0]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """A tiny base and a dataset built from the scripted-teacher corpus with the project's code."""
    from tests.tiny_sft_world import build_tiny_sft_world

    root = tmp_path_factory.mktemp("user_world")
    base, data = build_tiny_sft_world(root, traces=24, seed=2)
    return root, base, data


def test_run_prints_the_settings_that_matter_then_one_line_when_every_example_exceeds_max_length(tmp_path):
    out = tmp_path / "run"
    result = _invoke(["run", "--demo", "--out", str(out), "--run.demo_traces", "20", "--sft.max_length", "40"])
    line = assert_one_line_error(result, "training examples are cut by sft.max_length = 40", "raise sft.max_length")
    assert "num_samples" not in line
    # Said before the demo's copy warm-up (minutes), once its tokenizer can count the examples.
    assert "copy warm-up step" not in result.output
    head = result.output.splitlines()[:5]
    assert head[0].startswith(f"trainer run → {out}") and "understudy_config.json" in head[0], head
    assert "demo: 20 built-in scripted-teacher traces (fixed names)" in head[1]
    assert "tiny random LLaMA" in head[2] and "full fine-tuning" in head[3]
    assert "600 steps × batch 4" in head[4] and "lr 0.002" in head[4] and "max_length 40 tokens" in head[4]
    assert "Resolved config" not in result.output  # the full record is a file, or --show-config
    record = json.loads((out / "understudy_config.json").read_text())
    assert json.dumps(record).count("40") >= 1


def test_run_names_varied_corpus_and_non_default_precision_in_its_settings(tmp_path):
    result = _invoke(["run", "--demo", "--out", str(tmp_path / "run"), "--run.demo_traces", "20",
                      "--run.demo_names", "varied", "--sft.precision", "fp32", "--sft.max_length", "40",
                      "--run.demo_copy_warmup_steps", "0"])
    head = result.output.splitlines()[:5]
    assert "(varied names)" in head[1] and "full fine-tuning, fp32" in head[3], head


def test_run_show_config_prints_every_value_with_its_source(tmp_path):
    result = _invoke(["run", "--demo", "--out", str(tmp_path / "r"), "--run.traces", str(tmp_path / "none.jsonl"),
                      "--show-config"])
    assert "sft.max_length = 1536  (preset)" in result.output
    assert_one_line_error(result, "fix run.traces")


def test_run_without_a_store_or_accepted_traces_says_what_to_do(tmp_path, understudy_home):
    result = _invoke(["run", "--out", str(tmp_path / "r")])
    assert_one_line_error(result, "no capture store", "trainer run --demo")

    from capture_daemon.store import TraceStore

    with TraceStore.open():
        pass
    result = _invoke(["run", "--out", str(tmp_path / "r")])
    assert_one_line_error(result, "no accepted traces", "trainer run --demo")


@pytest.mark.parametrize("kind", ["missing path", "empty folder", "a file", "unknown hub id"])
def test_run_with_a_base_that_cannot_load_is_one_line(tmp_path, kind):
    bad = {
        "missing path": str(tmp_path / "no" / "such-model"),
        "empty folder": str(tmp_path / "empty"),
        "a file": str(tmp_path / "notes.txt"),
        "unknown hub id": "no-such-org/no-such-model",
    }[kind]
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a model\n")
    result = _invoke(["run", "--demo", "--out", str(tmp_path / "r"), "--run.demo_traces", "12", "--sft.base_model", bad])
    assert_one_line_error(result, f"sft.base_model = {bad!r} cannot be loaded", "set sft.base_model to")


def test_sft_with_a_base_that_cannot_load_is_one_line(tiny_world, tmp_path):
    from transformers import AutoTokenizer

    _, base, data = tiny_world
    result = _invoke(["sft", "--data", str(data), "--out", str(tmp_path / "o"), "--base-model", str(tmp_path)])
    assert_one_line_error(result, "cannot be loaded (a folder without a model in it", "set sft.base_model to")
    # A tokenizer without its model: the tokenizer loads, the weights do not.
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path / "tokenizer-only")
    result = _invoke(["sft", "--data", str(data), "--out", str(tmp_path / "o"), "--base-model",
                      str(tmp_path / "tokenizer-only"), "--method", "full"])
    assert_one_line_error(result, f"sft.base_model = '{tmp_path / 'tokenizer-only'}' cannot be loaded", "set sft.base_model to")


def test_sft_with_every_example_cut_by_max_length_is_one_line(tiny_world, tmp_path):
    # `trainer sft` on a built dataset: SFT's own check (`trainer run` on the demo says it earlier).
    _, base, data = tiny_world
    result = _invoke(["sft", "--data", str(data), "--out", str(tmp_path / "o"), "--base-model", str(base),
                      "--method", "full", "--max-steps", "1", "--sft.max_length", "16"])
    line = assert_one_line_error(result, "training examples are cut by sft.max_length = 16", "raise sft.max_length (to ")
    assert "num_samples" not in line


def test_sft_on_a_corrupt_dataset_is_one_line(tiny_world, tmp_path):
    _, base, data = tiny_world
    broken = tmp_path / "dataset"
    broken.mkdir()
    for split in ("train", "validation", "test"):
        (broken / f"{split}.jsonl").write_text((data / f"{split}.jsonl").read_text())
    (broken / "train.jsonl").write_text('{"messages": [tor\n')
    result = _invoke(["sft", "--data", str(broken), "--out", str(tmp_path / "o"), "--base-model", str(base),
                      "--method", "full", "--max-steps", "1"])
    assert_one_line_error(result, f"The dataset at '{broken}' cannot be read", "trainer build-dataset")


def test_sft_progress_lines_carry_an_eta(tiny_world, tmp_path):
    _, base, data = tiny_world
    result = _invoke(["sft", "--data", str(data), "--out", str(tmp_path / "o"), "--base-model", str(base),
                      "--method", "full", "--max-steps", "3", "--sft.logging_steps", "1",
                      "--sft.per_device_train_batch_size", "2", "--sft.gradient_accumulation_steps", "1",
                      "--sft.save_steps", "100", "--sft.max_length", "1024"])
    assert result.exit_code == 0, result.output
    steps = [line for line in result.output.splitlines() if line.strip().startswith("step ")]
    assert len(steps) == 3, result.output
    assert " · ETA " in steps[0] and " · ETA " in steps[1] and "ETA" not in steps[2], steps


def test_build_dataset_with_local_bases_never_asks_the_network(tiny_world, tmp_path, monkeypatch):
    _, base, _ = tiny_world
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    lookups: list[tuple] = []

    def no_network(*args, **kwargs):
        lookups.append(args[:2])
        raise socket.gaierror("this test is offline")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    common = ["build-dataset", "--traces", "demo", "--run.demo_traces", "12", "--run.out", str(tmp_path / "r")]
    result = _invoke([*common, "--output", str(tmp_path / "ds1"), "--tokenizer", str(base)])
    assert result.exit_code == 0, result.output
    assert "unavailable" not in result.output  # counted with the base's own tokenizer
    result = _invoke([*common, "--output", str(tmp_path / "ds2"), "--sft.base_model", str(base)])
    assert result.exit_code == 0, result.output
    assert "unavailable" not in result.output
    # A GGUF base that is not there: its one line, not a hub lookup for the file name.
    result = _invoke([*common, "--output", str(tmp_path / "ds3"), "--sft.base_model", str(tmp_path / "m.Q8_0.gguf")])
    assert_one_line_error(result, "no GGUF file at", "fix sft.base_model")
    assert lookups == []


def test_eval_with_a_base_that_cannot_load_is_one_line(tiny_world, tmp_path):
    """The untrained baseline's base, like training's, fails as one line: what to set, or how to skip it."""
    _, base, data = tiny_world
    (tmp_path / "empty").mkdir()
    result = _invoke(["eval", "--model", str(base), "--data", str(data), "--out", str(tmp_path / "e"),
                      "--max-examples", "1", "-o", f"eval.base_model={tmp_path / 'empty'}"])
    assert_one_line_error(result, f"eval.base_model = '{tmp_path / 'empty'}' cannot be loaded",
                          "set eval.base_model to", 'leave "base" out of eval.baselines')


@pytest.mark.parametrize("bad_line, why", [
    (b"{garbage", "Invalid JSON"),
    (b'{"prompt": "hi"}', "session_id: Field required"),
    (b'{"x": "\xff\xfe"}', "Invalid JSON"),  # not UTF-8
], ids=["not-json", "not-a-trace", "not-utf8"])
def test_a_traces_file_with_a_bad_line_is_one_line_naming_the_line(tmp_path, bad_line, why):
    """A hand-edited or cut-off export: `trainer run` and `build-dataset` name the file, the line and
    why, and build nothing (no line of the file is skipped quietly)."""
    from trainer.teacher_corpus import write_corpus_jsonl

    traces = write_corpus_jsonl(tmp_path / "traces.jsonl", n=4, seed=1)
    with open(traces, "ab") as fh:
        fh.write(b"\n" + bad_line + b"\n")  # line 6, after a blank one (allowed)
    for args in (["run", "--preset", "tiny", "--out", str(tmp_path / "run"), "-o", f"run.traces={traces}"],
                 ["build-dataset", "--traces", str(traces), "--output", str(tmp_path / "ds"),
                  "--sft.base_model", str(tmp_path / "none")]):
        line = assert_one_line_error(_invoke(args), f"{traces}, line 6: not a trace (", why, "capture-daemon export")
        assert len(line) < 400, line
    assert not (tmp_path / "ds" / "train.jsonl").exists() and not (tmp_path / "run" / "sft").exists()


@pytest.mark.parametrize("kind", ["missing path", "empty folder", "a file", "never trained"])
def test_every_stage_given_a_student_that_cannot_load_says_so_in_one_line(tiny_world, tmp_path, monkeypatch, kind):
    """`trainer serve` / `export` / `eval` / `rl` / `mine` / `ab-test` / `reward` before any `trainer
    run`, or pointed at the wrong thing."""
    pytest.importorskip("fastapi")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a model\n")
    model = {"missing path": str(tmp_path / "no" / "student"), "empty folder": "empty", "a file": "notes.txt",
             "never trained": None}[kind]
    flag = ["--model", model] if model else []
    shown = model or "runs/understudy/sft/final"  # the default: `trainer run`'s student
    commands = [(["serve", "--port", "0"], "serve.model"), (["export", "--out", str(tmp_path / "x")], "export.model")]
    if model:  # (the stages below check their data before their default student)
        data = ["--data", str(tiny_world[2])]
        commands += [(["eval", *data, "--out", str(tmp_path / "e")], "eval.model"), (["rl", *data], "rl.model"),
                     (["mine", *data], "mine.model"), (["ab-test", *data], "abtest.model"),
                     (["reward", *data], "reward.model")]
    for command, setting in commands:
        needles = (f"{setting} = {shown!r} cannot be loaded", "train one with `trainer run`", f"set {setting} (--model)")
        if kind == "missing path" and setting not in ("serve.model", "export.model", "eval.model"):
            needles = (f"no student at {shown}: run `trainer sft`", f"set {setting}")  # (these take no hub id)
        line = assert_one_line_error(_invoke([*command, *flag]), *needles)
        assert len(line) < 600, line
    assert not (tmp_path / "x" / "hf").exists()


def test_export_with_an_adapter_that_cannot_load_names_the_adapter(tiny_world, tmp_path):
    _, base, _ = tiny_world
    result = _invoke(["export", "--model", str(base), "--adapter", str(tmp_path / "no-adapter"), "--out", str(tmp_path / "x")])
    assert_one_line_error(result, f"export.adapter = '{tmp_path / 'no-adapter'}' cannot be loaded", "(--adapter)")


def test_run_with_too_few_sessions_to_hold_one_out_says_so_before_training(tmp_path):
    """`trainer run` scores its student on held-out sessions: with two sessions (or test_fraction 0)
    it used to warm up and train, then fail at evaluation. Now it stops before the base is built."""
    from trainer.teacher_corpus import write_corpus_jsonl

    traces = write_corpus_jsonl(tmp_path / "traces.jsonl", n=2, seed=1)
    args = ["run", "--preset", "tiny", "--out", str(tmp_path / "run"), "-o", f"run.traces={traces}"]
    assert_one_line_error(_invoke(args), f"only 2 session(s) in {traces}: too few to hold one out", "capture more sessions")
    assert not (tmp_path / "run" / "base").exists() and not (tmp_path / "run" / "dataset").exists()
    more = write_corpus_jsonl(tmp_path / "more.jsonl", n=12, seed=1)
    args = ["run", "--preset", "tiny", "--out", str(tmp_path / "run"), "-o", f"run.traces={more}", "-o", "dataset.test_fraction=0"]
    assert_one_line_error(_invoke(args), "dataset.test_fraction = 0 holds no session out", "raise dataset.test_fraction")
    assert not (tmp_path / "run" / "base").exists()
