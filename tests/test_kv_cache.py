"""The in-place key/value cache (trainer/kv_cache.py) generates what transformers' own cache does,
token for token, without copying the cache at every step."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.random_llama import random_llama  # noqa: E402
from trainer.kv_cache import GrowingLayer, growing_cache  # noqa: E402


def _tiny_llama():
    return random_llama(vocab_size=200, kv_heads=2).eval()


def _cache_kwarg(model) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _greedy(model, ids, mask, cache=None, new_tokens=40):
    kwargs = {_cache_kwarg(model): cache} if cache is not None else {}
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, pad_token_id=0, **kwargs)


def test_generation_is_the_same_token_for_token_as_with_transformers_cache():
    model = _tiny_llama()
    ids = torch.randint(3, 200, (3, 30))
    mask = torch.ones_like(ids)
    mask[1, :7] = 0  # left padding, as batched generation pads
    ids[1, :7] = 0
    theirs = _greedy(model, ids, mask)
    cache = growing_cache(model.config)
    ours = _greedy(model, ids, mask, cache)
    assert torch.equal(theirs, ours)
    # generate used this cache: its layers hold the prompt and every new token but the last.
    assert all(isinstance(layer, GrowingLayer) for layer in cache.layers)
    assert cache.get_seq_length() == 30 + 40 - 1


def test_a_prefilled_cache_continues_as_transformers_cache_does():
    """The shared-prefix path: a cache filled with a prompt's first tokens, generation from there."""
    model = _tiny_llama()
    ids = torch.randint(3, 200, (2, 24))
    with torch.no_grad():
        prefix = model(input_ids=ids[:, :16], use_cache=True)
    cache = getattr(prefix, "cache", None) or prefix.past_key_values
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    from transformers import DynamicCache

    theirs = _greedy(model, ids, torch.ones_like(ids), DynamicCache(ddp_cache_data=layers, config=model.config))
    ours = _greedy(model, ids, torch.ones_like(ids), growing_cache(model.config, layers))
    assert torch.equal(theirs, ours)


def test_a_decoding_step_writes_in_place_and_the_buffer_grows_rarely():
    layer = GrowingLayer()
    buffers = set()
    layer.update(torch.randn(2, 2, 100, 8), torch.randn(2, 2, 100, 8))
    for _ in range(400):
        before = layer.get_seq_length()
        keys, values = layer.update(torch.randn(2, 2, 1, 8), torch.randn(2, 2, 1, 8))
        assert keys.shape == (2, 2, before + 1, 8) and values.shape == keys.shape
        buffers.add(layer._key_buffer.data_ptr())
    # 100 positions get room for 356, then 534: two buffers over 400 steps, not 400 copies.
    assert len(buffers) == 2


def test_crop_and_batch_selection_keep_the_cache_right():
    layer = GrowingLayer()
    first = torch.randn(3, 2, 10, 4)
    layer.update(first, first + 1)
    layer.crop(-4)  # drop the last 4 positions: the next update overwrites them in the buffer
    step = torch.randn(3, 2, 1, 4)
    keys, values = layer.update(step, step + 1)
    assert torch.equal(keys, torch.cat([first[:, :, :6], step], dim=2))
    assert torch.equal(values, torch.cat([first[:, :, :6], step], dim=2) + 1)

    layer.batch_select_indices(torch.tensor([2, 0]))  # a copy: the next update moves to a new buffer
    step2 = torch.randn(2, 2, 1, 4)
    keys, _ = layer.update(step2, step2)
    assert torch.equal(keys, torch.cat([first[[2, 0], :, :6], step[[2, 0]], step2], dim=2))
