"""Attention runs in float32 under CPU bf16 autocast, and nowhere else changes (trainer/cpu_attention.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture
def wrapped_sdpa():
    """The "sdpa" attention as installed, the process's original put back afterwards."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from trainer.cpu_attention import float32_attention_under_cpu_autocast

    had_local = "sdpa" in ALL_ATTENTION_FUNCTIONS._local_mapping
    before = ALL_ATTENTION_FUNCTIONS["sdpa"]
    float32_attention_under_cpu_autocast()
    float32_attention_under_cpu_autocast()  # a second call must not wrap it twice
    yield before, ALL_ATTENTION_FUNCTIONS["sdpa"]
    if had_local:
        ALL_ATTENTION_FUNCTIONS["sdpa"] = before
    else:
        del ALL_ATTENTION_FUNCTIONS["sdpa"]


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 4, 24, 16, generator=g) for _ in range(3))
    module = torch.nn.Module()
    module.is_causal = True
    module.training = False
    return module, q, k, v


def test_under_cpu_autocast_the_attention_sees_float32(wrapped_sdpa) -> None:
    original, wrapped = wrapped_sdpa
    seen = []

    def spy(module, query, key, value, attention_mask, **kwargs):
        seen.append((query.dtype, key.dtype, value.dtype, torch.is_autocast_enabled("cpu")))
        return original(module, query, key, value, attention_mask, **kwargs)

    from trainer.cpu_attention import _float32_on_cpu_autocast

    module, q, k, v = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = _float32_on_cpu_autocast(spy)(module, q.bfloat16(), k, v.bfloat16(), None)
    assert seen == [(torch.float32, torch.float32, torch.float32, False)]
    # The float32 attention of the bf16-rounded inputs, not bf16 attention's rounding of it.
    expected, _ = original(module, q.bfloat16().float(), k, v.bfloat16().float(), None)
    assert out.dtype == torch.float32
    assert torch.allclose(out, expected, atol=1e-6)


def test_without_autocast_nothing_changes(wrapped_sdpa) -> None:
    original, wrapped = wrapped_sdpa
    assert wrapped is not original
    module, q, k, v = _inputs(1)
    for dtype in (torch.float32, torch.bfloat16):
        got, _ = wrapped(module, q.to(dtype), k.to(dtype), v.to(dtype), None)
        want, _ = original(module, q.to(dtype), k.to(dtype), v.to(dtype), None)
        assert got.dtype == want.dtype == dtype and torch.equal(got, want)


def test_a_tiny_llama_trains_the_same_in_bf16_with_float32_attention(wrapped_sdpa) -> None:
    """A training step of a tiny LLaMA under autocast: the loss within bf16's rounding of float32's,
    and every gradient there (the rotary query is float32 and the values bf16: both must pass)."""
    import tempfile

    from transformers import LlamaForCausalLM

    from trainer.copy_warmup import labelled_loss
    from trainer.teacher_corpus import generate_corpus
    from trainer.tiny_model import build_tiny_model
    from trainer.tokenizer_tools import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer([t.prompt for t in generate_corpus(30, seed=1)], vocab_size=300)
    with tempfile.TemporaryDirectory() as tmp:
        model = LlamaForCausalLM.from_pretrained(build_tiny_model(tokenizer, tmp, hidden=64, layers=2, heads=4))
    ids = torch.randint(5, 250, (4, 40), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :20] = -100

    def loss_and_grads(autocast: bool):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = labelled_loss(model, ids, labels)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    loss32, grads32 = loss_and_grads(False)
    loss16, grads16 = loss_and_grads(True)
    assert abs(loss16 - loss32) < 0.02 * loss32
    assert all(g is not None and torch.isfinite(g).all() for g in grads16)
    cosine = torch.nn.functional.cosine_similarity(torch.cat([g.flatten() for g in grads16]),
                                                   torch.cat([g.flatten() for g in grads32]), dim=0)
    assert cosine > 0.99



@pytest.mark.parametrize(("asked", "precision", "cuda", "used"), [
    (True, "bf16", False, True), (False, "bf16", False, False), (True, "fp32", False, False), (True, "bf16", True, False)])
def test_sft_uses_it_only_when_asked_and_training_in_bf16_on_a_cpu(asked, precision, cuda, used) -> None:
    from trainer.config import load_config
    from trainer.sft import uses_float32_attention

    cfg = load_config(overrides=[("sft.float32_attention", str(asked).lower()), ("sft.precision", precision)])
    assert uses_float32_attention(cfg, cuda=cuda) is used
