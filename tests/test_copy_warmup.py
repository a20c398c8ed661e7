"""The tiny base's copy warm-up really teaches copying, not the corpus's frequent tokens."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

STEPS = 300


def copy_accuracy(model, vocab: list[int], bos: int, rows: int = 16) -> float:
    """Greedy accuracy on the repeat of fresh random spans (chance: 1 / len(vocab)), from the
    repeat's first token on: the warm-up's rows, with tokens it never drew together."""
    from trainer.copy_warmup import SPAN_TOKENS

    rng = random.Random(123)
    spans = [[rng.choice(vocab) for _ in range(SPAN_TOKENS)] for _ in range(rows)]
    ids = torch.tensor([[bos] + s + s for s in spans])
    with torch.no_grad():
        predicted = model(input_ids=ids).logits[:, SPAN_TOKENS:-1].argmax(-1)
    return (predicted == ids[:, SPAN_TOKENS + 1:]).float().mean().item()


def test_copy_warmup_teaches_a_random_tiny_llama_to_copy():
    from transformers import LlamaForCausalLM

    from trainer.copy_warmup import copy_warmup
    from trainer.teacher_corpus import generate_corpus
    from trainer.tiny_model import build_tiny_model
    from trainer.tokenizer_tools import train_tiny_tokenizer

    texts = [t.prompt + "\n" + t.final_response for t in generate_corpus(60, seed=2)]
    tokenizer = train_tiny_tokenizer(texts, vocab_size=400)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_model(tokenizer, tmp, hidden=64, layers=2, heads=4, seed=0)
        model = LlamaForCausalLM.from_pretrained(path)
    special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    vocab = [i for i in range(len(tokenizer)) if i not in special]
    before = copy_accuracy(model, vocab, tokenizer.bos_token_id)
    report = copy_warmup(model, tokenizer, texts, steps=STEPS, seed=0)
    after = copy_accuracy(model, vocab, tokenizer.bos_token_id)
    assert before < 0.05
    # Random tokens can only be predicted by copying them from the first half.
    assert after > 0.5, (before, after, report)
    assert report.last_loss < report.first_loss / 2
