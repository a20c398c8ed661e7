"""`trainer sft`: supervised fine-tuning of the student on the behavioural-cloning dataset.

    trainer sft --data runs/x/dataset --out runs/x/sft                       # defaults: Llama-3.2-1B-Instruct
    trainer sft --config understudy.toml --sft.base_model ./my-base --sft.max_steps 300
    trainer sft --out runs/x/sft --resume                                    # continue from the latest checkpoint

Method (`sft.method`): "qlora" loads the base in 4-bit NF4 through bitsandbytes and trains a LoRA
adapter; without CUDA it falls back to plain LoRA in float32 and says so in one line, unless
`sft.force_4bit` (`--force-4bit`) asks for NF4 on CPU (bitsandbytes runs it; used to test the
path). "lora" is plain LoRA; "full" trains every weight (the tiny demo model learns that way).

The loss is on assistant tokens only (TRL `assistant_only_loss`), through understudy's own chat
template (trainer/chat_template.py), which marks each assistant span including its `<|eot_id|>`.

Output directory:
    checkpoints/checkpoint-N/   Trainer checkpoints (save_steps), each with understudy_config.json
    adapter/                    the LoRA adapter and tokenizer (lora/qlora)
    model/                      the trained weights (full)
    final/                      a complete model to load with from_pretrained (merged for LoRA)
    loss.png, train_summary.json, understudy_config.json, README.md (model card)

Several GPUs: the same command runs under accelerate, which owns the distribution (data parallel,
FSDP or DeepSpeed ZeRO); nothing here is home-made. `-m trainer.cli` is the `trainer` command:

    accelerate config                                   # once: answers saved for later launches
    accelerate launch --num_processes 4 -m trainer.cli sft --config understudy.toml    # data parallel, QLoRA per GPU
    accelerate launch --num_processes 4 --use_fsdp --fsdp_sharding_strategy FULL_SHARD \
        --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP --fsdp_transformer_layer_cls_to_wrap LlamaDecoderLayer \
        --mixed_precision bf16 -m trainer.cli sft --config understudy.toml --sft.method lora
    accelerate launch --num_processes 4 --use_deepspeed --zero_stage 3 --mixed_precision bf16 \
        -m trainer.cli sft --config understudy.toml --sft.method full

Without a GPU, `accelerate launch --multi_gpu --num_processes 2 -m trainer.cli sft ...` runs two CPU
processes over gloo (`--cpu` alone starts one); tests/test_sft_multiprocess.py does. One process
prints and writes final/; train_summary.json records world_size and the backend.

Under a launcher each process loads its 4-bit base on its own GPU (LOCAL_RANK) and stores the NF4
weights in the compute dtype, which FSDP needs to shard them. Plain LoRA or full fine-tuning is the
simpler choice with FSDP or ZeRO-3; QLoRA suits data parallel.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import click

from trainer.config import (
    CONFIG_FILE_NAME,
    STAGE_CONTEXT,
    ConfigError,
    UnderstudyConfig,
    check_config,
    resolve_cli_config,
)

CPU_LORA_NOTE = "No CUDA GPU: training plain LoRA in float32 on CPU (QLoRA needs CUDA)."
EMBEDDING_MODULES = ["embed_tokens", "lm_head"]


@dataclass
class SFTResult:
    output_dir: Path
    final_dir: Path
    method: str
    global_step: int
    train_loss: Optional[float]
    train_runtime_s: float
    tokens_seen: int
    log_history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_seen / self.train_runtime_s if self.train_runtime_s > 0 else 0.0


def effective_method(cfg: UnderstudyConfig, cuda: bool) -> str:
    """qlora without CUDA becomes lora, unless force_4bit keeps the 4-bit path."""
    method = cfg.sft.method
    if method == "qlora" and not cuda and not cfg.sft.force_4bit:
        return "lora"
    return method


def uses_bf16(precision: str, cuda: bool) -> bool:
    """Whether SFT trains in bf16 mixed precision (sft.precision)."""
    import torch

    if precision == "fp32":
        return False
    if precision == "bf16":
        return not cuda or torch.cuda.is_bf16_supported()
    if precision == "native" and not cuda:
        return cpu_bf16_is_native()
    return cuda and torch.cuda.is_bf16_supported()


def uses_float32_attention(cfg: UnderstudyConfig, cuda: bool) -> bool:
    """Whether SFT runs attention in float32 inside bf16 autocast (sft.float32_attention, CPU only)."""
    return cfg.sft.float32_attention and not cuda and uses_bf16(cfg.sft.precision, cuda)


def cpu_bf16_is_native() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): only then is bf16 autocast fast."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def recorded_config(cfg: UnderstudyConfig, data_dir: Path) -> UnderstudyConfig:
    """The config to save beside a student trained on `data_dir`: with dataset.tool_set = "called"
    and no `dataset.tools`, a copy whose dataset.tools names the tools the examples showed (the
    dataset's stats.json), so `trainer serve` shows a live request's tools as training did."""
    if cfg.dataset.tool_set != "called" or cfg.dataset.tools:
        return cfg
    try:
        shown = json.loads((Path(data_dir) / "stats.json").read_text()).get("tools_shown")
    except (OSError, ValueError, AttributeError):
        shown = None
    if not shown:
        return cfg
    recorded = copy.deepcopy(cfg)
    recorded.dataset.tools = list(shown)
    recorded.sources["dataset.tools"] = "dataset"
    return recorded


def latest_checkpoint(checkpoint_dir: Path) -> Optional[Path]:
    """The newest complete checkpoint. A run killed while saving leaves a checkpoint folder
    with half its files (an empty trainer_state.json): the config written beside each one
    once it is complete (on_save) is what tells them apart."""
    if not checkpoint_dir.is_dir():
        return None
    ckpts = [p for p in checkpoint_dir.glob("checkpoint-*")
             if p.name.split("-")[-1].isdigit() and (p / CONFIG_FILE_NAME).is_file()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1]), default=None)


def base_path(cfg: UnderstudyConfig, log: Callable[[str], None] = click.echo) -> str:
    """What from_pretrained loads for sft.base_model: a GGUF or a named offline base ("smollm2-135m")
    is converted once into a regular checkpoint cached in run.out (trainer/bases.py)."""
    from trainer.bases import resolve_base

    return resolve_base(cfg.sft.base_model, Path(cfg.run.out), log)


def load_tokenizer(base_model: str):
    """The base's tokenizer with understudy's chat template; returns (tokenizer, tokens added)."""
    from transformers import AutoTokenizer

    from trainer.chat_template import apply_chat_template

    # A folder on disk never asks the hub (offline, a lookup waits ~50 s for its timeout).
    tokenizer = AutoTokenizer.from_pretrained(base_model, local_files_only=Path(base_model).expanduser().exists())
    added = apply_chat_template(tokenizer)
    if tokenizer.pad_token is None:
        # Llama 3 ships no pad token; padding positions are masked out of the loss anyway.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, added


def load_base_model(base_model: str, four_bit: bool, cuda: bool, tokenizer=None):
    """Load the base (NF4 when four_bit), resized to the tokenizer if the template added tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    compute_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    kwargs: dict[str, Any] = {"dtype": compute_dtype}
    if four_bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Under accelerate launch: FSDP can shard 4-bit weights only when stored in the compute dtype.
            kwargs["quantization_config"].bnb_4bit_quant_storage = compute_dtype
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))} if cuda else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(
        base_model, local_files_only=Path(base_model).expanduser().exists(), **kwargs
    )
    if tokenizer is not None and model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        # The template's new tokens (<tool_call>, <|eot_id|>, ...) start where the base already
        # means their text, not at an arbitrary row: see init_added_token_rows, which sets every
        # new row (so transformers' mean-and-covariance start, and its note about it, are skipped).
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        base_tokenizer = AutoTokenizer.from_pretrained(base_model, local_files_only=Path(base_model).expanduser().exists())
        init_added_token_rows(model, tokenizer, base_tokenizer)
    if tokenizer is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def init_added_token_rows(model, tokenizer, base_tokenizer) -> list[int]:
    """Start each token the template added (ids ≥ len(base_tokenizer)) at the mean of the base's
    embeddings of the pieces the base tokenizer splits its text into (`<tool_call>` → `<`, `tool`,
    `_`, `call`, `>`), in the input embeddings and, when untied, the output layer. The rows
    resize_token_embeddings leaves (sampled around the mean of all embeddings, one distribution for
    every new token) give a pretrained base no reason to predict the token: with them SmolLM2
    trained 30 LoRA steps and never wrote `<tool_call>`; with this start the same 30 steps do
    (docs/learning.md §3). Returns the ids initialised."""
    import torch

    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    out = None if out is None or out.weight is emb else out.weight
    done = []
    with torch.no_grad():
        for tid in range(len(base_tokenizer), min(len(tokenizer), emb.shape[0])):
            pieces = base_tokenizer.encode(tokenizer.convert_ids_to_tokens(tid), add_special_tokens=False)
            pieces = [p for p in pieces if p < len(base_tokenizer)]
            if not pieces:
                continue
            emb[tid] = emb[pieces].float().mean(0).to(emb.dtype)
            if out is not None and tid < out.shape[0]:
                out[tid] = out[pieces].float().mean(0).to(out.dtype)
            done.append(tid)
    return done


def _lora_config(cfg: UnderstudyConfig, tokens_added: int, tied_embeddings: bool = False):
    from peft import LoraConfig

    targets = cfg.sft.lora_target_modules
    modules_to_save = list(cfg.sft.modules_to_save)
    if tokens_added:
        # New token rows start at their pieces' mean (init_added_token_rows), not as the base knows
        # them; without training them the student can't emit <tool_call>.
        modules_to_save += [m for m in EMBEDDING_MODULES if m not in modules_to_save]
    return LoraConfig(
        r=cfg.sft.lora_r,
        lora_alpha=cfg.sft.lora_alpha,
        lora_dropout=cfg.sft.lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        modules_to_save=modules_to_save or None,
        # SmolLM2 ties lm_head to embed_tokens: one trained copy, or the merged model (saved tied)
        # would keep the embedding's copy only and lose what the output side learned.
        ensure_weight_tying=tied_embeddings,
        task_type="CAUSAL_LM",
    )


def prepare_model(cfg: UnderstudyConfig, method: str, cuda: bool, tokenizer, tokens_added: int):
    """The model the Trainer will train: full weights, or the base wrapped in a LoRA adapter."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    four_bit = method == "qlora"
    try:
        model = load_base_model(base_path(cfg), four_bit=four_bit, cuda=cuda, tokenizer=tokenizer)
    except (OSError, ValueError, KeyError) as e:  # a tokenizer without its model, a broken config, ...
        raise ConfigError(base_load_error(cfg.sft.base_model, e)) from None
    if method == "full":
        return model
    if four_bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cuda and cfg.sft.gradient_checkpointing)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    return get_peft_model(model, _lora_config(cfg, tokens_added, tied))


def cast_trainable_to_float32(model) -> None:
    """After training a 4-bit model, generate() fails on mixed float/bf16 parameters until the
    trainable ones are float32 again (measured with bitsandbytes 0.50 and peft 0.21)."""
    import torch

    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()


def _callbacks(cfg: UnderstudyConfig, log: Callable[[str], None]):
    from trainer.progress import ProgressLine, SaveConfigBesideCheckpoint

    return [SaveConfigBesideCheckpoint(cfg), ProgressLine(log, "loss", ["learning_rate", "epoch"])]


def write_loss_curve(log_history: list[dict[str, Any]], path: Path) -> Optional[Path]:
    from trainer.progress import history_points, plot_curves

    return plot_curves(path, "understudy SFT", "loss (assistant tokens)", [
        ("train loss", history_points(log_history, "loss"), "."),
        ("validation loss", history_points(log_history, "eval_loss"), "o"),
    ])


def _split_sizes(data_dir: Path) -> dict[str, int]:
    sizes = {}
    for split in ("train", "validation", "test"):
        f = data_dir / f"{split}.jsonl"
        if f.exists():
            with f.open() as fh:
                sizes[split] = sum(1 for line in fh if line.strip())
    return sizes


def write_model_card(output_dir: Path, eval_summary: Optional[dict[str, Any]] = None) -> Path:
    """README.md: base, data, hyperparameters, training result and (once known) the evaluation."""
    summary_path = output_dir / "train_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if eval_summary is None and (output_dir / "eval_summary.json").exists():
        eval_summary = json.loads((output_dir / "eval_summary.json").read_text())
    elif eval_summary is not None:
        (output_dir / "eval_summary.json").write_text(json.dumps(eval_summary, indent=2) + "\n")
    cfg = summary.get("config", {})
    lines = [
        "---",
        f"base_model: {cfg.get('base_model', 'unknown')}",
        "library_name: " + ("peft" if summary.get("method") in ("lora", "qlora") else "transformers"),
        "tags: [understudy, behavioural-cloning, tool-use, sft]",
        "---",
        "",
        "# understudy student",
        "",
        "A model fine-tuned to imitate a teacher's tool-use workflows, captured as understudy traces.",
        "",
        f"- Base model: `{cfg.get('base_model', 'unknown')}`",
        f"- Method: {summary.get('method', '?')}",
        f"- Steps: {summary.get('global_step', '?')}, last logged train loss: {summary.get('last_loss', '?')}"
        f" (mean over the run {summary.get('train_loss', '?')})",
        f"- Tokens seen: {summary.get('tokens_seen', '?')} ({summary.get('tokens_per_second', 0):.0f} tokens/s)",
        "",
        "## Data",
        "",
        f"Dataset: `{summary.get('data_dir', '?')}`",
        "",
    ]
    for split, n in summary.get("splits", {}).items():
        lines.append(f"- {split}: {n} examples")
    stats_path = Path(summary.get("data_dir", "")) / "stats.json"
    if summary.get("data_dir") and stats_path.exists():
        stats = json.loads(stats_path.read_text())
        lengths = stats.get("token_lengths", {}).get("all", {})
        if lengths.get("count"):
            lines.append(f"- tokens per example: median {lengths['median']}, max {lengths['max']}")
        if stats.get("patterns"):
            lines.append("- patterns: " + ", ".join(f"{k} {v}" for k, v in stats["patterns"].items()))
        if stats.get("tools"):
            lines.append("- tool calls: " + ", ".join(f"{k} {v}" for k, v in stats["tools"].items()))
    lines += ["", "## Hyperparameters", "", "| key | value |", "| --- | --- |"]
    for key, value in cfg.items():
        lines.append(f"| {key} | `{json.dumps(value)}` |")
    lines += ["", "## Evaluation", ""]
    if eval_summary:
        lines += ["Held-out prompts, the student's workflow generated step by step:", ""]
        systems = list(eval_summary)
        metrics = list(next(iter(eval_summary.values())).keys()) if eval_summary else []
        lines.append("| metric | " + " | ".join(systems) + " |")
        lines.append("| --- |" + " --- |" * len(systems))
        for m in metrics:
            vals = [eval_summary[s].get(m) for s in systems]
            lines.append(f"| {m} | " + " | ".join("" if v is None else f"{v:.3f}" for v in vals) + " |")
    else:
        lines.append("Not evaluated yet: run `trainer eval`.")
    lines += [
        "",
        "## Use",
        "",
        "Load `final/` with `AutoModelForCausalLM.from_pretrained`; its tokenizer carries understudy's",
        "chat template (tools, several tool calls per turn, `<tool_call>` lines).",
        "",
    ]
    path = output_dir / "README.md"
    path.write_text("\n".join(lines))
    return path


def _save_final(model, tokenizer, method: str, cfg: UnderstudyConfig, output_dir: Path, cuda: bool, log) -> Path:
    """adapter/ or model/, then final/: a complete model any stage loads with from_pretrained."""
    final = output_dir / "final"
    if final.is_symlink() or final.is_file():
        final.unlink()
    elif final.exists():
        shutil.rmtree(final)
    if method == "full":
        model_dir = output_dir / "model"
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        # One copy on disk: final/ points at model/.
        final.symlink_to("model", target_is_directory=True)
        return final
    adapter_dir = output_dir / "adapter"
    model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    if method == "qlora":
        # Merging into 4-bit weights would round the adapter away: merge into an unquantized base.
        from peft import PeftModel

        log("Merging the adapter into an unquantized copy of the base …")
        # On the CPU, in bf16 when training ran in bf16 (a 1B model merged in float32 would double its size).
        base = load_base_model(base_path(cfg), four_bit=False, cuda=cuda, tokenizer=tokenizer)
        merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    else:
        merged = model.merge_and_unload()
    merged.save_pretrained(final)
    tokenizer.save_pretrained(final)
    return final


def model_load_error(model: str, error: Exception, setting: str, fix: str) -> str:
    """One line for a model that does not load: what was asked (by `setting`), why, and `fix`."""
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    if len(first) > 200:
        first = first[:200] + "…"
    where = "a folder without a model in it" if Path(model).expanduser().is_dir() else (
        "not a file or folder here, and no Hugging Face model by that name could be loaded")
    if Path(model).expanduser().is_file():
        where = "a file, neither a model folder nor a .gguf file"
    return f"{setting} = {model!r} cannot be loaded ({where}; {type(error).__name__}: {first}): {fix}"


def base_load_error(base_model: str, error: Exception, setting: str = "sft.base_model", otherwise: str = "") -> str:
    """One line for a base that does not load: what was asked (by `setting`), why, and what to change."""
    return model_load_error(base_model, error, setting,
                            f"set {setting} to a Hugging Face id, a local model folder, a .gguf file or 'smollm2-135m'{otherwise}")


def check_student(model: Path, setting: str, missing_fix: str) -> None:
    """Before a stage's work: a student that is not there, or a path with no model's tokenizer in it (an
    empty folder, a file), as one ConfigError line rather than a traceback minutes later."""
    if not model.exists():
        raise ConfigError(f"no student at {model}: {missing_fix}")
    from transformers import AutoTokenizer

    try:
        AutoTokenizer.from_pretrained(model)  # what every stage loads first; the weights come after
    except (OSError, ValueError) as e:
        raise ConfigError(student_load_error(str(model), e, setting)) from None


def student_load_error(model: str, error: Exception, setting: str, flag: str = "--model") -> str:
    """One line for a student (`trainer serve`, `trainer export`) that does not load."""
    return model_load_error(model, error, setting, f"train one with `trainer run`, or set {setting} ({flag}) to a "
                            "trained student's folder (a run's sft/final) or a Hugging Face id")


def examples_cut_advice(lengths: dict) -> tuple[str, str]:
    """What a user reads when sft.max_length cuts examples before any assistant token: the lengths
    seen (`lengths` as dataset stats' token_lengths, or empty) and what to change."""
    seen, fix = "", "raise sft.max_length"
    if lengths.get("count"):
        seen = f" (examples are {lengths['min']}–{lengths['max']} tokens, median {int(lengths['median'])})"
        fix = f"raise sft.max_length (to {lengths['max']} keeps them all)"
    fix += " or shorten the examples (dataset.tool_schema, dataset.max_tool_result_tokens)"
    return seen, fix


def all_examples_cut_error(n_examples: int, max_length: int, lengths: dict) -> ConfigError:
    seen, fix = examples_cut_advice(lengths)
    return ConfigError(f"all {n_examples} training examples are cut by sft.max_length = {max_length} before any "
                       f"assistant token{seen}: {fix}")


def _check_examples_fit(trainer, n_examples: int, max_length: int, data_dir: Path, log: Callable[[str], None]) -> None:
    """TRL truncates each example to max_length and drops those left without an assistant token;
    when that is every one of them, training would die inside torch's sampler (num_samples=0)."""
    kept = len(trainer.train_dataset)
    if kept == n_examples:
        return
    lengths = {}
    try:
        lengths = json.loads((data_dir / "stats.json").read_text())["token_lengths"]["all"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if kept == 0:
        raise all_examples_cut_error(n_examples, max_length, lengths)
    seen, fix = examples_cut_advice(lengths)
    log(f"{n_examples - kept} of {n_examples} training examples dropped: cut by sft.max_length = {max_length} before "
        f"any assistant token{seen}; to keep them, {fix}")


def is_main_process() -> bool:
    """False in every process but the first under a launcher (accelerate launch, torchrun)."""
    return int(os.environ.get("RANK", "0")) == 0


def _quiet(_line: str) -> None:
    pass


def _distributed_backend() -> Optional[str]:
    """gloo, nccl, ... when torch.distributed is running (under a launcher); None alone."""
    import torch.distributed as dist

    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None


@dataclass
class TrainingSetup:
    """Everything train_sft trains with; tests use it to look at weights before and after."""

    trainer: Any
    tokenizer: Any
    method: str
    cuda: bool
    data_dir: Path
    output_dir: Path
    train_examples: int

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"


def build_trainer(
    cfg: UnderstudyConfig,
    data_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] = click.echo,
) -> TrainingSetup:
    """Load data, tokenizer and model for cfg.sft.method and wrap them in a TRL SFTTrainer."""
    import torch
    from trl import SFTConfig, SFTTrainer

    from trainer.dataset import SFT_COLUMNS, load_splits
    from trainer.prefix_batches import prefix_grouped, share_prefix_in_training
    from trainer.sft_speed import causal_mask_for_right_padding, score_labelled_positions_only

    cuda = torch.cuda.is_available()
    for note in check_config(cfg, cuda=cuda):
        log(note)
    method = effective_method(cfg, cuda)
    data_dir = Path(data_dir or cfg.sft.data_dir or Path(cfg.run.out) / "dataset")
    output_dir = Path(output_dir or cfg.sft.output_dir or Path(cfg.run.out) / "sft")
    if not (data_dir / "train.jsonl").exists():
        raise ConfigError(f"no training data at {data_dir}/train.jsonl: run `trainer build-dataset` or set sft.data_dir")
    output_dir.mkdir(parents=True, exist_ok=True)
    recorded = recorded_config(cfg, data_dir)
    if is_main_process():
        recorded.save(output_dir)

    try:
        splits = load_splits(data_dir)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None
    # Only messages and tools: TRL would read the metadata column `prompt` as prompt/completion data.
    train_ds = splits["train"].select_columns(SFT_COLUMNS)
    eval_ds = None
    if cfg.sft.eval_steps and "validation" in splits and len(splits["validation"]):
        eval_ds = splits["validation"].select_columns(SFT_COLUMNS)

    base = base_path(cfg, log)
    try:
        tokenizer, added = load_tokenizer(base)
    except (OSError, ValueError, KeyError) as e:  # a wrong name, a folder that is not a model, ...
        raise ConfigError(base_load_error(cfg.sft.base_model, e)) from None
    if added:
        log(f"The chat template added {added} token(s); embeddings resized.")
    model = prepare_model(cfg, method, cuda, tokenizer, added)
    if uses_float32_attention(cfg, cuda):
        from trainer.cpu_attention import float32_attention_under_cpu_autocast

        float32_attention_under_cpu_autocast()  # bf16 attention is the slow part of a CPU step
    if method != "full":
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        log(f"{method}: training {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%).")

    s = cfg.sft
    args = SFTConfig(
        output_dir=str(output_dir / "checkpoints"),
        max_steps=s.max_steps,
        num_train_epochs=s.num_train_epochs,
        learning_rate=s.learning_rate,
        lr_scheduler_type=s.lr_scheduler_type,
        warmup_steps=s.warmup_steps,
        weight_decay=s.weight_decay,
        per_device_train_batch_size=s.per_device_train_batch_size,
        per_device_eval_batch_size=s.per_device_train_batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        max_length=s.max_length,
        pad_to_multiple_of=s.pad_to_multiple_of or None,
        assistant_only_loss=True,
        packing=False,
        activation_checkpointing=cuda and s.gradient_checkpointing,
        use_cpu=not cuda,
        bf16=uses_bf16(s.precision, cuda),
        save_strategy="steps",
        save_steps=s.save_steps,
        save_total_limit=s.save_total_limit,
        logging_steps=s.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if eval_ds is not None else "no",
        eval_steps=s.eval_steps or None,
        seed=s.seed,
        data_seed=s.seed,
        report_to=[] if s.report_to == "none" else [s.report_to],
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
        dataloader_num_workers=0,
        # Under accelerate launch (DDP): every trainable weight is used in each forward, so the
        # extra autograd traversal that looks for unused ones is pure cost.
        ddp_find_unused_parameters=False,
    )
    score_labelled_positions_only()
    trainer_class = SFTTrainer
    # Under gradient checkpointing (CUDA's default) the layers drop the cache the rows would read:
    # grouping would change the batches and save nothing.
    if s.shared_prefix_batches and s.per_device_train_batch_size > 1 and not args.activation_checkpointing:
        trainer_class = prefix_grouped(SFTTrainer)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=_callbacks(recorded, log),
    )
    causal_mask_for_right_padding(trainer.model)
    if trainer_class is not SFTTrainer:
        share_prefix_in_training(trainer.model, gradient=s.shared_prefix_gradient)
    _check_examples_fit(trainer, len(train_ds), s.max_length, data_dir, log)
    # One concise line per log step (ProgressLine) instead of the raw dict transformers prints.
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return TrainingSetup(trainer, tokenizer, method, cuda, data_dir, output_dir, len(train_ds))


def train_sft(
    cfg: UnderstudyConfig,
    data_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] = click.echo,
) -> SFTResult:
    """Train the student; resumes from the latest checkpoint when cfg.sft.resume is set.

    Under `accelerate launch` every process trains its share of each batch; the first one alone
    prints and writes final/, the summary and the card, and the others wait for it."""
    if not is_main_process():
        log = _quiet
    setup = build_trainer(cfg, data_dir, output_dir, log)
    trainer, tokenizer, method, cuda = setup.trainer, setup.tokenizer, setup.method, setup.cuda
    data_dir, output_dir, checkpoint_dir = setup.data_dir, setup.output_dir, setup.checkpoint_dir
    s = cfg.sft
    resume_from = None
    if s.resume:
        ckpt = latest_checkpoint(checkpoint_dir)
        if ckpt is None:
            log(f"--resume: no checkpoint in {checkpoint_dir}, starting from step 0.")
        else:
            log(f"Resuming from {ckpt}.")
            resume_from = str(ckpt)
    world = trainer.args.world_size
    backend = _distributed_backend()
    where = f" in {world} processes ({backend})" if world > 1 else ""
    log(f"Training {method} on {setup.train_examples} examples from {data_dir} → {output_dir}{where}")
    t0 = time.monotonic()
    out = trainer.train(resume_from_checkpoint=resume_from)
    runtime = time.monotonic() - t0

    model = trainer.model
    cast_trainable_to_float32(model)
    history = list(trainer.state.log_history)
    final = output_dir / "final"
    if not trainer.is_world_process_zero():
        trainer.accelerator.wait_for_everyone()
        return SFTResult(output_dir, final, method, trainer.state.global_step, out.training_loss, runtime, 0, history)
    final = _save_final(model, tokenizer, method, cfg, output_dir, cuda, log)
    write_loss_curve(history, output_dir / "loss.png")
    tokens = int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)
    result = SFTResult(
        output_dir=output_dir,
        final_dir=final,
        method=method,
        global_step=trainer.state.global_step,
        train_loss=out.training_loss if out.training_loss == out.training_loss else None,
        train_runtime_s=runtime,
        tokens_seen=tokens,
        log_history=history,
    )
    summary = {
        "method": method,
        "global_step": result.global_step,
        "train_loss": None if result.train_loss is None else round(result.train_loss, 4),
        "last_loss": next((round(h["loss"], 4) for h in reversed(history) if "loss" in h), None),
        "train_runtime_s": round(runtime, 2),
        "tokens_seen": tokens,
        "tokens_per_second": result.tokens_per_second,
        "data_dir": str(data_dir),
        "splits": _split_sizes(data_dir),
        "config": cfg.to_dict()["sft"],
        "cuda": cuda,
        "world_size": world,
        "distributed_backend": backend,
    }
    (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    write_model_card(output_dir)
    log(
        f"Done: step {result.global_step}, train loss {result.train_loss if result.train_loss is None else round(result.train_loss, 4)}, "
        f"{result.tokens_per_second:.0f} tokens/s → {final}"
    )
    trainer.accelerator.wait_for_everyone()
    return result


# ----------------------------------------------------------------------------------------------
# CLI




@click.command("sft", context_settings=STAGE_CONTEXT)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="understudy.toml or YAML.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), help="Dataset directory (sft.data_dir).")
@click.option("--out", "output_dir", type=click.Path(file_okay=False), help="Output directory (sft.output_dir).")
@click.option("--base-model", help="HF id or local path (sft.base_model).")
@click.option("--method", type=click.Choice(["qlora", "lora", "full"]), help="sft.method")
@click.option("--max-steps", type=int, help="sft.max_steps")
@click.option("--resume", is_flag=True, default=None, help="Continue from the latest checkpoint.")
@click.option("--force-4bit", is_flag=True, default=None, help="Load NF4 even without CUDA (sft.force_4bit).")
@click.pass_context
def command(ctx, config_path, data_dir, output_dir, base_model, method, max_steps, resume, force_4bit):
    """Fine-tune the student on the dataset (QLoRA on CUDA, LoRA on CPU, or full).

    Any config value can be set as --SECTION.KEY VALUE or -o SECTION.KEY=VALUE,
    e.g. --sft.learning_rate 1e-4.
    """
    cfg = resolve_cli_config(
        config_path,
        ctx.args,
        [
            ("sft.data_dir", data_dir),
            ("sft.output_dir", output_dir),
            ("sft.base_model", base_model),
            ("sft.method", method),
            ("sft.max_steps", max_steps),
            ("sft.resume", resume),
            ("sft.force_4bit", force_4bit),
        ],
    )
    if is_main_process():
        click.echo("Resolved config [sft]:")
        click.echo(cfg.describe(["sft"]))
    try:
        train_sft(cfg)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
