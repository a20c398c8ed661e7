"""The learned discriminator: a sequence classifier that scores teacher workflows above student ones.

    trainer reward --train-discriminator            # retrain on the current student's rollouts
    from trainer.discriminator import Discriminator
    d = Discriminator.load("runs/x/discriminator"); d.p_teacher([text, ...])

Training data are pairs for the same prompt: the teacher's workflow (chosen) and the student's
rollout (rejected), both rendered by trainer/reward.py's `workflow_text` (the prompt, each step
with the observations the teacher recorded, the answer). TRL's `RewardTrainer` fits a
Bradley-Terry model on them: a `AutoModelForSequenceClassification` with one output, started from
the student itself (`reward.discriminator_init = "student"`, so it already reads the format), the
SFT base, or any path. `reward.discriminator_method = "lora"` trains a LoRA adapter (merged on save)
for a 1B-class base.

A Bradley-Terry score only means something relative to another score, so training also records a
calibration: the midpoint between the mean teacher score and the mean student score on the
training pairs. `p_teacher(x) = sigmoid(score(x) - midpoint)` is then the judge's confidence that a
single workflow is the teacher's; for a pair, the side with the higher score is its guess.

Retrain it whenever the student changes (each RL round in `trainer run` does): a fixed judge is
something RL learns to exploit, a judge retrained on the newest student is not.

Output directory: the classifier and tokenizer (save_pretrained), calibration.json, pairs.jsonl.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

import click

from trainer.config import ConfigError, UnderstudyConfig


def discriminator_dir(cfg: UnderstudyConfig) -> Path:
    return Path(cfg.reward.discriminator_dir or Path(cfg.run.out) / "discriminator")


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x > -60 else 0.0


class Discriminator:
    """A trained classifier plus its calibration; scores workflow texts."""

    def __init__(self, model, tokenizer, midpoint: float = 0.0, max_length: int = 1024, info: Optional[dict] = None):
        import torch

        self.model, self.tokenizer, self.midpoint, self.max_length = model, tokenizer, midpoint, max_length
        self.info = info or {}
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()

    @classmethod
    def load(cls, directory: str | Path) -> "Discriminator":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        directory = Path(directory)
        cal_path = directory / "calibration.json"
        if not cal_path.exists():
            raise ConfigError(f"no discriminator at {directory}: train one with `trainer reward --train-discriminator`")
        cal = json.loads(cal_path.read_text())
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForSequenceClassification.from_pretrained(directory, num_labels=1)
        return cls(model, tokenizer, cal["midpoint"], cal.get("max_length", 1024), cal)

    def scores(self, texts: list[str], batch_size: int = 16) -> list[float]:
        import torch

        eos = self.tokenizer.eos_token or ""
        out: list[float] = []
        self.tokenizer.padding_side = "right"
        for i in range(0, len(texts), batch_size):
            # As RewardTrainer tokenized them in training: the text ends with EOS.
            chunk = [t if t.endswith(eos) else t + eos for t in texts[i:i + batch_size]]
            batch = self.tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length).to(self.device)
            with torch.no_grad():
                logits = self.model(**batch).logits[:, 0]
            out.extend(float(x) for x in logits.float().cpu())
        return out

    def p_teacher(self, texts: list[str]) -> list[float]:
        """Confidence, per workflow, that the teacher produced it."""
        return [_sigmoid(s - self.midpoint) for s in self.scores(texts)]


def pair_accuracy(disc: Discriminator, teacher_texts: list[str], student_texts: list[str]) -> float:
    """How often the teacher's workflow scores above the student's for the same prompt (0.5 is chance)."""
    t, s = disc.scores(teacher_texts), disc.scores(student_texts)
    if not t:
        return float("nan")
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(t, s)) / len(t)


def _load_init(init: str, method: str):
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from trainer.sft import load_tokenizer

    tokenizer, _ = load_tokenizer(init)
    # The score head is new by design; transformers' "score.weight MISSING" load report is not news.
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(init, num_labels=1, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(level)
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def train_discriminator(
    teacher_texts: list[str],
    student_texts: list[str],
    init: str,
    out_dir: str | Path,
    max_steps: int = 60,
    learning_rate: float = 1e-4,
    batch_size: int = 8,
    max_length: int = 1024,
    pad_to_multiple_of: int = 128,
    method: str = "full",
    seed: int = 0,
    log: Callable[[str], None] = click.echo,
    extra_info: Optional[dict[str, Any]] = None,
) -> Discriminator:
    """Fit teacher-over-student on the pairs with TRL's RewardTrainer; save model, tokenizer, calibration."""
    import torch
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import RewardConfig, RewardTrainer

    if len(teacher_texts) != len(student_texts) or not teacher_texts:
        raise ConfigError("the discriminator needs the same, non-zero number of teacher and student workflows")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer = _load_init(init, method)
    peft_config = None
    if method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="SEQ_CLS", r=16, lora_alpha=32, lora_dropout=0.0,
                                 target_modules="all-linear", modules_to_save=["score"])
    cuda = torch.cuda.is_available()
    args = RewardConfig(
        output_dir=str(out_dir / "checkpoints"),
        max_steps=max_steps,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        max_length=max_length,
        # A few recurring batch shapes keep the memory trainer retains reusable (trainer/allocator.py).
        pad_to_multiple_of=pad_to_multiple_of or None,
        use_cpu=not cuda,
        # Recomputing activations saves GPU memory; on CPU it only costs time (TRL defaults it on).
        activation_checkpointing=cuda,
        bf16=False,
        save_strategy="no",
        logging_steps=max(1, max_steps // 5),
        report_to=[],
        disable_tqdm=True,
        seed=seed,
        dataloader_num_workers=0,
    )
    dataset = Dataset.from_dict({"chosen": teacher_texts, "rejected": student_texts})
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)
    trainer.remove_callback(PrinterCallback)
    t0 = time.monotonic()
    trainer.train()
    model = trainer.model
    if method == "lora":
        model = model.merge_and_unload()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    disc = Discriminator(model, tokenizer, 0.0, max_length)
    t_scores, s_scores = disc.scores(teacher_texts), disc.scores(student_texts)
    disc.midpoint = (sum(t_scores) / len(t_scores) + sum(s_scores) / len(s_scores)) / 2
    acc = sum(a > b for a, b in zip(t_scores, s_scores)) / len(t_scores)
    info = {
        "midpoint": disc.midpoint,
        "max_length": max_length,
        "init": init,
        "method": method,
        "steps": max_steps,
        "pairs": len(teacher_texts),
        "train_pair_accuracy": acc,
        "train_seconds": round(time.monotonic() - t0, 2),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra_info or {}),
    }
    disc.info = info
    (out_dir / "calibration.json").write_text(json.dumps(info, indent=2) + "\n")
    with open(out_dir / "pairs.jsonl", "w") as fh:
        for t, s in zip(teacher_texts, student_texts):
            fh.write(json.dumps({"chosen": t, "rejected": s}) + "\n")
    log(f"[discriminator] {len(teacher_texts)} pairs, {max_steps} steps: teacher above student on {acc:.0%} of training pairs → {out_dir}")
    return disc


def resolve_init(cfg: UnderstudyConfig, student_model: str) -> str:
    init = cfg.reward.discriminator_init
    if init == "student":
        return student_model
    if init == "base":
        from trainer.bases import resolve_base

        return resolve_base(cfg.sft.base_model, Path(cfg.run.out))
    return init


def train_discriminator_for(cfg: UnderstudyConfig, student_model: str, data_dir: Path, out_dir: Path,
                            log: Callable[[str], None] = click.echo, rows: Optional[list[dict]] = None) -> Discriminator:
    """(Re)train on the student's rollouts for the train split's prompts; report held-out pair accuracy."""
    from trainer.reward import _read_rows, judged_rollouts, teacher_workflow, workflow_text

    r = cfg.reward
    if rows is None:
        train_file = Path(data_dir) / "train.jsonl"
        if not train_file.exists():
            raise ConfigError(f"no train split at {train_file}: run `trainer build-dataset`")
        rows = _read_rows(train_file, r.discriminator_examples)
    decoding = f" (prose sampled at temperature {r.prose_temperature:g})" if r.prose_temperature > 0 else ""
    log(f"[discriminator] rolling out {student_model} on {len(rows)} training prompts{decoding} …")
    student = judged_rollouts(cfg, student_model, rows)
    teacher_texts = [workflow_text(row, teacher_workflow(row)) for row in rows]
    student_texts = [workflow_text(row, wf) for row, wf in zip(rows, student)]
    return train_discriminator(
        teacher_texts, student_texts, resolve_init(cfg, student_model), out_dir,
        max_steps=r.discriminator_max_steps, learning_rate=r.discriminator_learning_rate,
        batch_size=r.discriminator_batch_size, max_length=r.discriminator_max_length,
        pad_to_multiple_of=cfg.sft.pad_to_multiple_of,
        method=r.discriminator_method, seed=cfg.run.seed, log=log, extra_info={"student": str(student_model)},
    )
