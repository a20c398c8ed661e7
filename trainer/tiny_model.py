"""A tiny random LLaMA, saved like a real checkpoint, for offline tests and `trainer run --demo`.

    python -c "from trainer.tiny_model import make_tiny_base; make_tiny_base('runs/tiny-base', ['hello'])"

Nothing is downloaded: the tokenizer is trained on the given texts (trainer/tokenizer_tools.py) and
the model is a randomly initialised `LlamaForCausalLM` sized to it. Both are written with
`save_pretrained`, so every later stage loads them through the same code path as a real model
(`AutoModelForCausalLM.from_pretrained(path)`, `AutoTokenizer.from_pretrained(path)`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Optional


def build_tiny_model(
    tokenizer,
    out_dir: str | os.PathLike,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int | None = None,
    intermediate: int | None = None,
    max_position_embeddings: int = 4096,
    seed: int = 0,
    tie_word_embeddings: bool = False,
) -> Path:
    """Write a random LlamaForCausalLM sized to `tokenizer`, and the tokenizer, to `out_dir`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        # Separate input and output embeddings by default, like the Llama 3 8B checkpoints (LoRA's
        # modules_to_save trains them independently, GGUF export sees both tensors); tied like
        # Llama 3.2 1B/3B and SmolLM2 when asked (run.demo_tied_embeddings).
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(out)
    return out


def make_tiny_base(
    out_dir: str | os.PathLike,
    corpus_texts: Iterable[str],
    vocab_size: int = 2000,
    copy_warmup_steps: int = 0,
    copy_warmup_form: str = "span",
    copy_warmup_learning_rate: Optional[float] = None,
    log: Callable[[str], None] = lambda _: None,
    check_tokenizer: Optional[Callable[[Any], None]] = None,
    **model_kwargs,
) -> Path:
    """Train a tokenizer on `corpus_texts` and save it with a random tiny LLaMA in `out_dir`.

    With `copy_warmup_steps`, the model first learns to copy (trainer/copy_warmup.py, in
    `copy_warmup_form`): what pretraining gives a real base. `check_tokenizer` sees the tokenizer
    before the model is built: a setting that cannot work with it fails before minutes of warm-up."""
    from trainer.tokenizer_tools import train_tiny_tokenizer

    texts = list(corpus_texts)
    tokenizer = train_tiny_tokenizer(texts, vocab_size=vocab_size)
    if check_tokenizer is not None:
        check_tokenizer(tokenizer)
    out = build_tiny_model(tokenizer, out_dir, **model_kwargs)
    if copy_warmup_steps > 0:
        from transformers import LlamaForCausalLM

        from trainer.copy_warmup import DONE_AT, copy_warmup

        model = LlamaForCausalLM.from_pretrained(out)
        report = copy_warmup(model, tokenizer, texts, copy_warmup_steps, seed=model_kwargs.get("seed", 0),
                             form=copy_warmup_form, learning_rate=copy_warmup_learning_rate, log=log)
        model.save_pretrained(out)
        probe = (f", {report.form} accuracy {report.probe_before:.2f} → {report.probe_after:.2f}"
                 if report.probe_after is not None else "")
        log(f"  copy warm-up ({report.form}): {report.steps} steps, loss {report.first_loss:.2f} → "
            f"{report.last_loss:.3f}{probe}, {report.seconds:.0f}s")
        if report.probe_after is not None and report.probe_after < DONE_AT[report.form]:
            log(f"  note: the copy warm-up ended before the model learned its form ({report.form} accuracy "
                f"{report.probe_after:.3f} < {DONE_AT[report.form]}); raise run.demo_copy_warmup_steps")
    return out
