"""One config for the whole pipeline: a section per stage, from `understudy.toml` (or YAML), flags win.

    # understudy.toml
    [run]
    out = "runs/my-student"
    traces = "store"                  # or a JSONL file of traces, or "demo"

    [sft]
    base_model = "meta-llama/Llama-3.2-1B-Instruct"
    max_steps = 300

    [eval]
    max_examples = 100

Flags override the file: `trainer run --sft.max_steps 50` or `trainer run -o sft.max_steps=50`.
Every value is printed at start-up with where it came from (default, file or flag), and the same
record is saved as JSON beside each checkpoint (`understudy_config.json`).

Adding a stage's section is one dataclass plus one field line in `UnderstudyConfig`; nothing else
here needs to know about it. Unknown keys are errors that name the key and the section, so a typo
never silently trains with a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import click

from trainer.dataset import DatasetConfig

CONFIG_FILE_NAME = "understudy_config.json"
DEFAULT_BASE_MODEL = "meta-llama/Llama-3.2-1B-Instruct"

# "preset": set by a mode such as `trainer run --demo`, under the file and the flags.
Source = Literal["default", "preset", "file", "flag"]


class ConfigError(ValueError):
    """A config problem the user fixes by editing one named field."""


def trained_config_path(model: Path) -> Optional[Path]:
    """understudy_config.json of the run that trained `model` (sft/final → sft/, or the run folder)."""
    for folder in (model, model.parent, model.parent.parent):
        if (folder / CONFIG_FILE_NAME).is_file():
            return folder / CONFIG_FILE_NAME
    return None


@dataclass
class RunConfig:
    # Where every stage writes: {out}/dataset, {out}/sft, {out}/eval.
    out: str = "runs/understudy"
    # "store" (the capture store's accepted traces), a JSONL file of traces, or "demo"
    # (the built-in scripted-teacher corpus).
    traces: str = "store"
    # Demo corpus size when traces = "demo", and the size of the tiny random LLaMA the demo trains
    # (used only when sft.base_model is left at its default).
    demo_traces: int = 300
    # The demo corpus's names (trainer/teacher_corpus.py NamePools): "fixed", a handful of modules,
    # tables and databases; "varied", hundreds of each, so held-out prompts name things training
    # rarely saw and only copying them from the prompt gets the arguments right.
    demo_names: Literal["fixed", "varied"] = "fixed"
    demo_hidden: int = 128
    demo_layers: int = 2
    demo_heads: int = 4
    demo_vocab: int = 1500
    # One matrix for input and output embeddings. Copying a name from the prompt into a call is
    # then "attend to it and pass it through" (the output row is the input row), which a random
    # tiny model learns far sooner than two unrelated matrices; untied is Llama-3-8B's layout.
    demo_tied_embeddings: bool = False
    # Steps of copying before SFT (trainer/copy_warmup.py): a random model learns the copy circuit
    # a pretrained base already has, so SFT can spend its steps on the workflow. Form "span": a
    # span and its repeat (the output half of copying); "respell": span rows plus the corpus's names
    # written as prose and again as code joins them (" carts and orders" -> "carts|orders");
    # "recall": sub-spans of random windows, which grows induction heads. Respell and recall stop
    # once a probe says they are learned (demo_copy_warmup_steps is then a ceiling).
    demo_copy_warmup_steps: int = 0
    demo_copy_warmup_form: Literal["span", "recall", "respell"] = "span"
    # The warm-up's AdamW learning rate; unset: the form's own (trainer/copy_warmup.py).
    demo_copy_warmup_learning_rate: Optional[float] = None
    seed: int = 0


@dataclass
class SFTSection:
    # A Hugging Face id or a local directory (anything `from_pretrained` accepts), a .gguf file,
    # "smollm2-135m" (offline, trainer/bases.py), or "tiny" (`trainer run` builds a random tiny
    # LLaMA and tokenizer on the run's traces, sized by run.demo_*).
    base_model: str = DEFAULT_BASE_MODEL
    # qlora: 4-bit NF4 base + LoRA (CUDA); lora: plain LoRA; full: every weight trains.
    # qlora falls back to lora on a machine without CUDA unless force_4bit is set.
    method: Literal["qlora", "lora", "full"] = "qlora"
    # Load the base in NF4 even without CUDA (bitsandbytes runs it on CPU): tests the QLoRA path.
    force_4bit: bool = False
    # Where the dataset is read from and the model written to; empty means {run.out}/dataset, {run.out}/sft.
    data_dir: str = ""
    output_dir: str = ""
    max_steps: int = -1
    num_train_epochs: float = 3.0
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "cosine"
    # < 1 is a fraction of the training steps.
    warmup_steps: float = 0.03
    weight_decay: float = 0.0
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 4
    max_length: int = 4096
    # Each batch is padded to a multiple of this many tokens (0: to its longest example only). With
    # a handful of tensor shapes instead of one per batch, the memory `trainer` keeps between steps
    # (trainer/allocator.py) is reused whole instead of fragmenting: on a 10-layer model of
    # SmolLM2's shape over 30 steps of 580-1,090 tokens, peak memory 5.2 GB against 9.2 GB and
    # still climbing unpadded, at the same speed (docs/learning.md §6).
    pad_to_multiple_of: int = 128
    # Draw each batch from examples with one system turn (one project's system prompt, working
    # directory and tool list) and compute that turn once per batch (trainer/prefix_batches.py):
    # the same loss on the same positions, each example still seen once an epoch, only which
    # examples share a batch changes. A `--demo` example is 43% system turn, a real Claude Code
    # capture's mostly (docs/learning.md §6). Needs batches of 2 or more per device, and is off
    # under gradient checkpointing (CUDA's default), whose layers drop the cache the rows read.
    shared_prefix_batches: bool = True
    # false: that shared turn also runs without gradient (never past a label), saving its backward
    # pass; the loss is the same number, its gradient leaves out how the system turn is encoded.
    # Measured for speed and held-out accuracy in docs/learning.md §6.
    shared_prefix_gradient: bool = True
    gradient_checkpointing: bool = True
    # "auto": bf16 mixed precision on a CUDA GPU that supports it, float32 elsewhere. "bf16" also
    # on a CPU (torch.autocast): about 2x faster SmolLM2 steps on a CPU with AVX512-BF16 or AMX,
    # measured in docs/learning.md; slower where the CPU lacks them. "native": bf16 wherever the
    # hardware computes it natively (such a GPU, or such a CPU), float32 elsewhere (the presets').
    # "fp32": never.
    precision: Literal["auto", "native", "bf16", "fp32"] = "auto"
    # Under CPU bf16 autocast, run attention in float32 (trainer/cpu_attention.py): PyTorch's CPU
    # attention is slower in bf16. The demo's SFT 1.2x faster (208 -> 173 s, seed 0, idle 2 cores),
    # but its students differ by rounding and seed 1's missed the argument-match goal (0.843 against
    # 0.921), so it is off by default (docs/learning.md §6).
    float32_attention: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    # Trained in full beside the adapter; embed_tokens and lm_head are added when the chat
    # template adds tokens (their new rows must learn).
    modules_to_save: list[str] = field(default_factory=list)
    save_steps: int = 50
    save_total_limit: int = 3
    logging_steps: int = 10
    eval_steps: int = 0  # 0: no validation-loss evaluation during training
    seed: int = 0
    resume: bool = False
    # "none" or a reporter transformers knows ("tensorboard", "wandb", ...).
    report_to: str = "none"


@dataclass
class EvalSection:
    # The student to evaluate; empty means {sft.output_dir}/final.
    model: str = ""
    # The untrained baseline; empty means the base the student was trained from (its run's
    # understudy_config.json records it), else sft.base_model.
    base_model: str = ""
    data_dir: str = ""
    output_dir: str = ""
    split: str = "test"
    max_examples: int = 0  # 0: all
    # The untrained base is scored on the first N of those examples only (0: all of them). Its
    # numbers sit near zero, and a random base rarely stops before max_new_tokens, so every one of
    # its batches runs the cap out (the --demo sets 32 of its 168).
    base_max_examples: int = 0
    max_new_tokens: int = 256
    # Examples generated together (left-padded); lower it if memory is short.
    batch_size: int = 16
    # The most assistant turns the student may take per example (a student that never answers
    # must still stop).
    max_turns: int = 16
    baselines: list[str] = field(default_factory=lambda: ["majority", "base"])
    # The weights the student and the untrained base generate with, as sft.precision names them:
    # "fp32"; "bf16"; "native", bf16 on a CPU that computes it (AVX512-BF16, AMX) or a CUDA GPU
    # with bf16, float32 elsewhere; "auto", bf16 on such a GPU only. Generation on a CPU reads
    # every weight and the whole key/value cache at each token: in bf16 that is half the bytes.
    # Measured on SmolLM2-135M, 64 real-CLI workflows, 2 AMD cores with AVX512-BF16: 6m20s
    # against 11m32s, the same scores to ±0.007 (docs/learning.md §6).
    precision: Literal["auto", "native", "bf16", "fp32"] = "fp32"


@dataclass
class ExportSection:
    # A full model (HF id, local dir, or an sft output dir); empty means {sft.output_dir}/final.
    model: str = ""
    # A LoRA adapter directory merged into `model` before export; empty: `model` is complete.
    adapter: str = ""
    output_dir: str = ""  # empty means {run.out}/export
    # f32, f16, q8_0 are written here; K-quants (q4_k_m, ...) need llama.cpp's llama-quantize.
    quantizations: list[str] = field(default_factory=lambda: ["f16", "q8_0"])
    # Path to llama-quantize; empty means look it up on PATH.
    llama_quantize: str = ""
    name: str = "understudy-student"
    modelfile: bool = True
    num_ctx: int = 4096


@dataclass
class ServeSection:
    # The student: a HF model dir (transformers backend) or a .gguf file (llamacpp backend);
    # empty means {sft.output_dir}/final.
    model: str = ""
    backend: Literal["transformers", "llamacpp"] = "transformers"
    host: str = "127.0.0.1"
    port: int = 8765
    # Required as x-api-key or "Authorization: Bearer" when set; UNDERSTUDY_SERVE_TOKEN also sets it.
    token: str = ""
    # "compact": Claude Code's system prompt is replaced by dataset.system_prompt and its tool
    # schemas compacted as the dataset builder does, so serving matches training.
    # "passthrough": the request's system prompt is kept.
    context: Literal["compact", "passthrough"] = "compact"
    # Only these tools are shown to the student (empty: every tool the request offers).
    tools: list[str] = field(default_factory=list)
    # Cap on output tokens per request. 0: a request's max_tokens, up to what the context
    # (n_ctx) leaves after its prompt; the response's x-understudy-max-tokens header says
    # what applied. A prompt that leaves no room is a 400 "prompt is too long".
    max_new_tokens: int = 0
    # Requests that may wait while the student generates; past that, 529 overloaded_error.
    max_queue: int = 16
    # Sampling temperature; unset means the request's (greedy when the request has none).
    temperature: Optional[float] = None
    # When sampling, every token of a tool call is the likeliest one and only the words around the
    # calls are sampled (trainer/decoding.py; as reward.prose_temperature judges the student).
    # Both backends (llama.cpp writes such a turn in phases: trainer/serve_backends.py).
    greedy_tool_calls: bool = True
    max_body_mb: float = 32.0
    # A/B rollout, e.g. "upstream=https://api.anthropic.com,student=0.1"; empty: every session to the student.
    ab: str = ""
    # The environment variable holding the upstream API key when the server has its own token.
    upstream_api_key_env: str = "ANTHROPIC_API_KEY"
    # Extra salt for the session hash: change it to draw a fresh assignment.
    ab_salt: str = ""
    # The student's context: prompt + output tokens (for transformers, at most the model's
    # max_position_embeddings). A longer prompt is a 400, decided without tokenizing it whole.
    n_ctx: int = 4096


@dataclass
class RewardSection:
    """`trainer reward` (trainer/reward.py) and the discriminator it trains (trainer/discriminator.py)."""

    # The student scored; empty means {sft.output_dir}/final.
    model: str = ""
    data_dir: str = ""
    output_dir: str = ""  # empty: {run.out}/reward
    split: str = "test"
    max_examples: int = 0  # 0: all
    max_new_tokens: int = 256
    max_turns: int = 16
    batch_size: int = 16
    # Per-term weights of the workflow similarity, merged over reward.DEFAULT_WEIGHTS:
    # tool_choice, order, arguments, validity, style, length.
    weights: dict[str, float] = field(default_factory=dict)
    # Share of the discriminator's p(teacher) in the combined reward (0: similarity only).
    discriminator_weight: float = 0.3
    discriminator_dir: str = ""  # empty: {run.out}/discriminator
    # The classifier's starting weights: "student" (the model being judged), "base" (sft.base_model) or a path.
    discriminator_init: str = "student"
    discriminator_method: Literal["full", "lora"] = "full"
    discriminator_max_steps: int = 60
    discriminator_learning_rate: float = 1e-4
    discriminator_batch_size: int = 8
    discriminator_max_length: int = 1024
    # Training prompts the discriminator sees (student rollouts are generated for each); 0: all.
    discriminator_examples: int = 0
    # How the judged student is decoded, in the rollouts the discriminator learns from and in
    # `trainer ab-test`: 0 is greedy (as `trainer serve` answers a request that names no
    # temperature); above 0 its words are sampled at this temperature within prose_top_p while
    # every tool call stays the likeliest one (trainer/decoding.py). A greedy student writes its
    # likeliest narration every time, which is how the discriminator tells it from a sampled teacher.
    prose_temperature: float = 0.0
    prose_top_p: float = 1.0


@dataclass
class RLSection:
    """`trainer rl` (trainer/rl.py): GRPO from the SFT student with the behavioural reward, or
    student-centred SFT on the student's own rollouts (trainer/student_centred.py)."""

    # `trainer run` continues past eval into RL (and `mine` when mine.enabled).
    enabled: bool = False
    # "grpo" (TRL GRPOTrainer); "student_centred": the student's own train rollouts up to their first
    # divergence from the teacher, the teacher's step as the target, SFT on those (SCoRe/DAgger; the
    # sc_* keys below). "ppo" only where the installed TRL still ships it (removed in TRL 1.13).
    algorithm: Literal["grpo", "student_centred", "ppo"] = "grpo"
    model: str = ""  # the starting student; empty: {sft.output_dir}/final
    data_dir: str = ""
    output_dir: str = ""  # empty: {run.out}/rl
    # Which teacher turns become prompts: "all" (each assistant turn given the teacher's prefix) or "first".
    turns: Literal["all", "first"] = "all"
    max_steps: int = 50
    learning_rate: float = 1e-5
    num_generations: int = 4
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_completion_length: int = 128
    temperature: float = 1.0
    beta: float = 0.0  # KL penalty to the starting student (0: no reference model kept)
    save_steps: int = 25
    save_total_limit: int = 2
    logging_steps: int = 5
    seed: int = 0
    resume: bool = False
    # Held-out examples rolled out before and after RL to report the mean reward (0: skip). Measured
    # twice: greedy (how `trainer serve` answers by default) and sampled at rl.temperature with
    # eval_samples draws per example (the policy GRPO optimizes; 0 skips this one).
    eval_examples: int = 32
    eval_split: str = "test"
    eval_samples: int = 4
    # Which student `trainer run` carries on with (the A/B test, the one it names at the end): the
    # RL student only when its greedy reward on select_examples of select_split is above the SFT
    # student's, else the SFT one. Not the test split, which reports the result; "" keeps the RL
    # student whatever it scores. No setting raises the greedy reward on every seed (docs/rl.md).
    # select_examples 0: the whole split.
    select_split: str = "validation"
    select_examples: int = 64
    # Per-prompt sampling weights from `trainer mine` ({trace_id: weight}); empty: {run.out}/mine/weights.json if present.
    mined_weights: str = ""
    report_to: str = "none"
    # student_centred only (max_steps, save_steps, logging_steps, seed, temperature are shared):
    # the share of the SFT data that are teacher examples (teacher prefix -> teacher turn), in [0, 1).
    sc_teacher_share: float = 0.5
    # A final answer whose text similarity (difflib) to the teacher's is below this counts as a divergence.
    sc_answer_similarity: float = 0.5
    # Sampled rollouts (at rl.temperature) per train row besides the greedy one: more mistakes to learn from.
    sc_samples: int = 0
    # Roll out, collect, train; > 1 rolls the new student out again and adds its divergences (DAgger).
    sc_rounds: int = 1
    # Full fine-tuning of the student, as GRPO does: 1e-5 suits a 1B model (like rl.learning_rate); the
    # tiny test-world model was measured at 1e-3 (docs/rl.md).
    sc_learning_rate: float = 1e-5
    sc_batch_size: int = 8
    # Learning-rate warm-up of each round (a fresh AdamW restarting from a student whose schedule
    # ended at 0); < 1 is a fraction of the round's steps.
    sc_warmup_steps: float = 0.0


@dataclass
class MineSection:
    """`trainer mine` (trainer/mine.py): the prompts where the student is easiest to tell from the teacher."""

    enabled: bool = False  # `trainer run` mines after RL (or after eval when RL is off)
    model: str = ""  # empty: the latest student ({run.out}/rl/final, else {sft.output_dir}/final)
    data_dir: str = ""
    output_dir: str = ""  # empty: {run.out}/mine
    split: str = "train"
    max_examples: int = 0  # 0: all
    # The top fraction of the ranking is over-sampled `oversample` times in the next SFT/RL round.
    top_fraction: float = 0.25
    oversample: int = 3
    # How the ranking mixes the reward gap (1 - similarity) and the discriminator's confidence.
    gap_weight: float = 0.5
    discriminator_weight: float = 0.5


@dataclass
class ABTestSection:
    """`trainer ab-test` (trainer/abtest.py): blind teacher-vs-student pairs, judged by machines and people."""

    enabled: bool = False  # `trainer run` ends with the automatic judges' report
    model: str = ""  # the student; empty: the latest student
    data_dir: str = ""
    output_dir: str = ""  # empty: {run.out}/abtest
    split: str = "test"
    max_pairs: int = 0  # 0: every held-out prompt
    seed: int = 0
    # "discriminator" and/or "llm"; people judge through `trainer ab-test --serve`.
    judges: list[str] = field(default_factory=lambda: ["discriminator"])
    # An Anthropic-compatible Messages API (base URL, e.g. https://api.anthropic.com) for the LLM judge.
    llm_url: str = ""
    llm_model: str = "claude-sonnet-4-5"
    llm_api_key_env: str = "ANTHROPIC_API_KEY"
    # Promised: people can't tell, i.e. they are wrong more than this often (0.5 is chance).
    goal: float = 0.45
    confidence: float = 0.95
    host: str = "127.0.0.1"
    port: int = 8766


@dataclass
class UnderstudyConfig:
    run: RunConfig = field(default_factory=RunConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    sft: SFTSection = field(default_factory=SFTSection)
    eval: EvalSection = field(default_factory=EvalSection)
    export: ExportSection = field(default_factory=ExportSection)
    serve: ServeSection = field(default_factory=ServeSection)
    reward: RewardSection = field(default_factory=RewardSection)
    rl: RLSection = field(default_factory=RLSection)
    mine: MineSection = field(default_factory=MineSection)
    abtest: ABTestSection = field(default_factory=ABTestSection)
    # Provenance of each value: {"sft.learning_rate": "flag", ...}; not a config section.
    sources: dict[str, str] = field(default_factory=dict, repr=False)

    def sections(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sources"}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: _section_dict(sec) for name, sec in self.sections().items()}

    def source(self, dotted: str) -> str:
        return self.sources.get(dotted, "default")

    def record(self) -> dict[str, Any]:
        """What is saved beside checkpoints: every value with its source."""
        return {
            "config": self.to_dict(),
            "sources": {
                name: {k: self.source(f"{name}.{k}") for k in vals}
                for name, vals in self.to_dict().items()
            },
        }

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / CONFIG_FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.record(), indent=2, default=str) + "\n")
        return path

    def describe(self, sections: Optional[list[str]] = None) -> str:
        """The resolved config, one `section.key = value  (source)` line each."""
        lines = []
        for name, vals in self.to_dict().items():
            if sections and name not in sections:
                continue
            for key, value in vals.items():
                src = self.source(f"{name}.{key}")
                lines.append(f"  {name}.{key} = {json.dumps(value, default=str)}  ({src})")
        return "\n".join(lines)


def _section_dict(section: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(section):
        return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
    return dict(vars(section))


def _section_types(section_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(section_cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(section_cls)}


def _unknown(kind: str, name: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(sorted(known))}"
    return ConfigError(f"unknown {kind} '{name}' in {where}{hint}")


def _coerce(value: Any, tp: Any, where: str, from_string: bool) -> Any:
    """Check (file) or convert (flag strings) `value` to the annotated type `tp`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None or (from_string and str(value).lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where, from_string)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{where} must be one of {', '.join(repr(a) for a in args)}, got {value!r}")
    if origin in (list, tuple):
        item_tp = args[0] if args else Any
        if from_string and isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{where}: not a JSON list: {value!r} ({e})") from None
            else:
                value = [v.strip() for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_coerce(v, item_tp, where, from_string) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_string and str(value).lower() in ("true", "1", "yes", "on"):
            return True
        if from_string and str(value).lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_string:
            try:
                return int(str(value))
            except ValueError:
                pass
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_string:
            try:
                return float(str(value))
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{where} must be a path (a string), got {value!r}")
    if origin is dict or tp is dict:
        if isinstance(value, dict):
            return value
        if from_string:
            try:
                parsed = json.loads(value)
                if isinstance(parsed, dict):
                    return parsed
            except (TypeError, json.JSONDecodeError):
                pass
        raise ConfigError(f"{where} must be a table, got {value!r}")
    return value


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                f"{path} is YAML but PyYAML is not installed: pip install pyyaml, or use understudy.toml"
            ) from None
        data = yaml.safe_load(path.read_text()) or {}
    else:
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table of sections")
    return data


def parse_overrides(args: list[str]) -> list[tuple[str, str]]:
    """`--sft.max_steps 50`, `--sft.max_steps=50`, `-o sft.max_steps=50` → [("sft.max_steps", "50")]."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-o", "--override", "--set"):
            if i + 1 >= len(args) or "=" not in args[i + 1]:
                raise ConfigError(f"{arg} needs SECTION.KEY=VALUE, e.g. -o sft.max_steps=50")
            key, value = args[i + 1].split("=", 1)
            out.append((key.strip(), value))
            i += 2
            continue
        if arg.startswith("--") and "." in arg.split("=", 1)[0]:
            body = arg[2:]
            if "=" in body:
                key, value = body.split("=", 1)
                i += 1
            elif i + 1 < len(args):
                key, value = body, args[i + 1]
                i += 2
            else:
                raise ConfigError(f"{arg} needs a value")
            out.append((key.replace("-", "_"), value))
            continue
        raise ConfigError(f"unexpected argument '{arg}' (overrides look like --sft.max_steps 50 or -o sft.max_steps=50)")
    return out


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[tuple[str, Any]] | list[str] | None = None,
    data: dict[str, Any] | None = None,
    preset: dict[str, Any] | None = None,
) -> UnderstudyConfig:
    """Defaults ← preset ← file (or `data`) ← overrides. Unknown sections and keys are errors.

    `overrides` are (dotted key, value) pairs; string values are converted to the field's type,
    as they come from the command line. Strings "section.key=value" are accepted too.
    """
    cfg = UnderstudyConfig()
    section_names = list(cfg.sections())
    if path is not None:
        data = read_config_file(path)
    where_file = str(path) if path is not None else "config"

    def apply(section: str, key: str, value: Any, source: Source, from_string: bool) -> None:
        if section not in section_names:
            raise _unknown("section", f"[{section}]", [f"[{s}]" for s in section_names], where_file)
        sec_obj = getattr(cfg, section)
        hints = _section_types(type(sec_obj))
        if key not in hints:
            raise _unknown("key", key, list(hints), f"[{section}]")
        setattr(sec_obj, key, _coerce(value, hints[key], f"{section}.{key}", from_string))
        cfg.sources[f"{section}.{key}"] = source

    for dotted, value in (preset or {}).items():
        section, key = dotted.split(".", 1)
        apply(section, key, value, "preset", from_string=False)

    for section, table in (data or {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where_file}: '{section}' must be a [section] table, got {table!r}")
        for key, value in table.items():
            apply(section, key, value, "file", from_string=False)

    for item in overrides or []:
        if isinstance(item, str):
            if "=" not in item:
                raise ConfigError(f"override '{item}' must look like section.key=value")
            dotted, value = item.split("=", 1)
        else:
            dotted, value = item
        if "." not in dotted:
            raise ConfigError(f"override '{dotted}' must name its section, e.g. sft.{dotted}")
        section, key = dotted.split(".", 1)
        apply(section, key, value, "flag", from_string=isinstance(value, str))

    # Sections that validate themselves (DatasetConfig.__post_init__) see the final values.
    for name, sec in cfg.sections().items():
        post_init = getattr(sec, "__post_init__", None)
        if post_init is not None:
            try:
                post_init()
            except (ValueError, TypeError) as e:
                raise ConfigError(f"[{name}] {e}") from None
    return cfg


def default_config_path() -> Optional[Path]:
    """`understudy.toml` (or .yaml/.yml) in the current directory, if any."""
    for name in ("understudy.toml", "understudy.yaml", "understudy.yml"):
        if Path(name).exists():
            return Path(name)
    return None


def check_config(cfg: UnderstudyConfig, cuda: Optional[bool] = None) -> list[str]:
    """Start-up checks of combinations. Raises ConfigError naming the field to change; returns notes."""
    notes: list[str] = []
    sft, ev = cfg.sft, cfg.eval
    if cuda is None:
        try:
            import torch

            cuda = torch.cuda.is_available()
        except ImportError:
            cuda = False
    if sft.max_steps <= 0 and sft.num_train_epochs <= 0:
        raise ConfigError("sft.max_steps and sft.num_train_epochs are both <= 0: set one of them > 0")
    if sft.learning_rate <= 0:
        raise ConfigError(f"sft.learning_rate must be > 0, got {sft.learning_rate}")
    warmup_lr = cfg.run.demo_copy_warmup_learning_rate
    if warmup_lr is not None and warmup_lr <= 0:
        raise ConfigError(f"run.demo_copy_warmup_learning_rate must be > 0 (or unset: the form's own), got {warmup_lr}")
    if sft.per_device_train_batch_size < 1 or sft.gradient_accumulation_steps < 1:
        raise ConfigError("sft.per_device_train_batch_size and sft.gradient_accumulation_steps must be >= 1")
    if sft.save_steps < 1:
        raise ConfigError(f"sft.save_steps must be >= 1, got {sft.save_steps}")
    if sft.pad_to_multiple_of < 0:
        raise ConfigError(f"sft.pad_to_multiple_of must be >= 0 (0: no extra padding), got {sft.pad_to_multiple_of}")
    if sft.logging_steps < 1:
        raise ConfigError(f"sft.logging_steps must be >= 1, got {sft.logging_steps}")
    if sft.method == "full" and sft.force_4bit:
        raise ConfigError(
            "4-bit weights can't be fully fine-tuned: set sft.force_4bit = false or sft.method = \"qlora\""
        )
    if sft.method in ("lora", "qlora"):
        if sft.lora_r < 1:
            raise ConfigError(f"sft.lora_r must be >= 1 for LoRA, got {sft.lora_r}")
        if not sft.lora_target_modules:
            raise ConfigError("sft.lora_target_modules is empty: name the modules LoRA adapts, or 'all-linear'")
    if sft.force_4bit and sft.method == "lora":
        raise ConfigError("sft.force_4bit loads the base in 4 bits, which is QLoRA: set sft.method = \"qlora\"")
    if not (0 <= sft.lora_dropout < 1):
        raise ConfigError(f"sft.lora_dropout must be in [0, 1), got {sft.lora_dropout}")
    if sft.method == "qlora" and not cuda and not sft.force_4bit:
        from trainer.sft import uses_bf16

        precision = "bf16 mixed precision" if uses_bf16(sft.precision, cuda=False) else "float32"
        notes.append(f"No CUDA GPU: training plain LoRA in {precision} on CPU (QLoRA needs CUDA).")
    if cuda and sft.precision == "bf16":
        import torch

        if not torch.cuda.is_bf16_supported():
            raise ConfigError("this GPU has no bf16: set sft.precision = \"auto\" (float32 here)")
    if not cuda and sft.precision == "bf16":
        from trainer.sft import cpu_bf16_is_native

        if not cpu_bf16_is_native():
            notes.append("This CPU has no native bf16 (AVX512-BF16 or AMX): bf16 autocast may be slower than "
                         "float32 here; set sft.precision = \"fp32\" if it is.")
    if not cuda and sft.gradient_checkpointing and cfg.source("sft.gradient_checkpointing") != "default":
        raise ConfigError("gradient checkpointing is not used on CPU here: set sft.gradient_checkpointing = false")
    if not sft.shared_prefix_gradient and not (sft.shared_prefix_batches and sft.per_device_train_batch_size > 1):
        notes.append("sft.shared_prefix_gradient = false does nothing without shared prefix batches: set "
                     "sft.shared_prefix_batches = true and sft.per_device_train_batch_size >= 2.")
    if ev.max_new_tokens < 1:
        raise ConfigError(f"eval.max_new_tokens must be >= 1, got {ev.max_new_tokens}")
    if ev.batch_size < 1:
        raise ConfigError(f"eval.batch_size must be >= 1, got {ev.batch_size}")
    if ev.max_turns < 1:
        raise ConfigError(f"eval.max_turns must be >= 1, got {ev.max_turns}")
    if ev.base_max_examples < 0:
        raise ConfigError(f"eval.base_max_examples must be >= 0 (0: every example), got {ev.base_max_examples}")
    for b in ev.baselines:
        if b not in ("majority", "base"):
            raise ConfigError(f"eval.baselines: unknown baseline '{b}'; use 'majority' and/or 'base'")
    return notes


# Shared by the stage commands: `--SECTION.KEY VALUE` flags arrive as extra arguments.
def resolve_cli_config(
    config_path: Optional[str],
    extra_args: list[str],
    flags: list[tuple[str, Any]],
    preset: dict[str, Any] | None = None,
) -> UnderstudyConfig:
    """The config a command runs with: preset, file (or ./understudy.toml), then flags."""
    path = config_path or default_config_path()
    try:
        overrides = parse_overrides(list(extra_args)) + [(k, v) for k, v in flags if v is not None]
        return load_config(path, overrides, preset=preset)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


STAGE_CONTEXT = dict(ignore_unknown_options=True, allow_extra_args=True)
