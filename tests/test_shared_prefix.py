"""Generation with the shared prompt prefix computed once gives what plain batched generation gives."""

from __future__ import annotations

import pytest

from trainer.shared_prefix import SharedPrefixGenerator, shared_prefix_length


def test_shared_prefix_length_leaves_every_row_a_token_of_its_own():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == 3
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2, "the shorter row keeps its last token"
    assert shared_prefix_length([[1, 2, 3]]) == 2
    assert shared_prefix_length([[7, 2], [1, 2]]) == 0
    assert shared_prefix_length([[1], [1]]) == 0
    assert shared_prefix_length([]) == 0


@pytest.fixture(scope="module")
def model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    m = LlamaForCausalLM(config).eval()
    # Larger weights than the default init: confident next tokens, so greedy choices are not ties
    # that rounding could flip, and the comparison below is about the method, not the noise.
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(8.0)
    return m


EOS = 2  # LlamaConfig's default eos_token_id: a row that writes it stops, padded after


def _turn(ids) -> list[int]:
    """A row's new tokens up to and including the end of its turn (the rest is padding)."""
    ids = list(ids)
    return ids[: ids.index(EOS) + 1] if EOS in ids else ids


def _plain(model, rows, **kw):
    """Left-padded batched generation, as trainer eval did it before."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (width - len(r)) + list(r) for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, **kw)
    return out, width


def test_rows_from_different_prefixes_get_what_left_padding_and_each_row_alone_give(model):
    import torch

    a = [(i * 7) % 90 + 3 for i in range(48)]
    b = a[:40] + [(i * 5) % 90 + 3 for i in range(20)]  # shares 40 tokens with `a`, then its own 20
    rows = [a + [5, 9, 11], b + [4], a + [8, 8, 8, 8, 8, 2, 6], [3, 4, 5, 6, 7]]
    lengths = [len(a), len(b), len(a), 0]
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    gen = SharedPrefixGenerator(model, pad_token_id=0)

    seen = []
    hook = model.model.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        ours, width = gen.generate(rows, lengths, **kw)
    finally:
        hook.remove()
    # Each distinct prefix once, alone; then the batch runs only what follows the longest prefix.
    assert seen[:3] == [(1, len(a)), (1, len(b)), (len(rows), width - len(b))]
    assert gen.prefills == 2
    theirs, plain_width = _plain(model, rows, **kw)
    assert [_turn(r) for r in ours.sequences[:, width:]] == [_turn(r) for r in theirs.sequences[:, plain_width:]]
    for x, y in zip(ours.scores, theirs.scores):
        assert torch.allclose(x, y, atol=1e-3, rtol=1e-4)
    for i, row in enumerate(rows):
        alone, w = _plain(model, [row], **kw)
        assert _turn(alone.sequences[0, w:]) == _turn(ours.sequences[i, width:])


def test_prefixes_are_kept_between_calls_unchanged_and_the_oldest_dropped(model):
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    prefixes = [[(i * k) % 90 + 3 for i in range(40)] for k in (3, 5, 7)]
    gen = SharedPrefixGenerator(model, pad_token_id=0, max_prefixes=2)

    gen.generate([prefixes[0] + [1, 2], prefixes[1] + [3]], [40, 40], **kw)
    kept = {p: [k.clone() for k, _ in kv] for p, kv in gen._caches.items()}
    again, width = gen.generate([prefixes[1] + [9], prefixes[0] + [4, 4]], [40, 40], **kw)
    assert gen.prefills == 2, "a prefix seen before is not run again"
    for p, keys in kept.items():
        assert all(k.equal(now) for k, (now, _) in zip(keys, gen._caches[p])), "generate wrote into a kept prefix"
    alone, w = _plain(model, [prefixes[0] + [4, 4]], **kw)
    assert _turn(again[1, width:]) == _turn(alone[0, w:])

    gen.generate([prefixes[2] + [5]], [40], **kw)  # a third prefix: the least recently used goes
    assert gen.prefills == 3 and list(gen._caches) == [tuple(prefixes[0]), tuple(prefixes[2])]


def test_without_a_prefix_worth_caching_rows_are_left_padded(model):
    rows = [[3, 4, 5, 6], [9, 4, 5]]
    gen = SharedPrefixGenerator(model, pad_token_id=0)
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    ours, width = gen.generate(rows, **kw)  # no lengths: the rows' common prefix, here none
    theirs, plain_width = _plain(model, rows, **kw)
    assert gen.prefills == 0 and not gen._caches
    assert (ours == theirs).all() and width == plain_width


def test_a_row_that_continues_its_last_prompt_prefills_only_what_was_appended(model):
    """Turn by turn, a workflow's prompt is the last one with the teacher's turn and results added."""
    import torch

    system = [(i * 7) % 90 + 3 for i in range(40)]
    first = [system + [5, 9, 11, 13], system + [4, 6], system + [8, 8, 8]]
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    gen = SharedPrefixGenerator(model, pad_token_id=0)
    gen.generate(first, [40] * 3, **kw)
    assert gen.continued == 0
    # The next turn: rows 0 and 1 continue with what the teacher did; a new conversation joins.
    second = [first[0] + [21, 22, 23, 24, 25], first[1] + [30, 31], system + [7, 7]]
    seen = []
    hook = model.model.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        ours, width = gen.generate(second, [40] * 3, **kw)
    finally:
        hook.remove()
    assert gen.continued == 2 and gen.prefills == 1
    # The batch runs the longest appended part (5 tokens), not the 9 after the system turn.
    assert seen[0] == (3, 5)
    theirs, plain_width = _plain(model, second, **kw)
    assert [_turn(r) for r in ours.sequences[:, width:]] == [_turn(r) for r in theirs.sequences[:, plain_width:]]
    for x, y in zip(ours.scores, theirs.scores):
        assert torch.allclose(x, y, atol=1e-3, rtol=1e-4)
    # A third turn continues the second's prompts, not the first's (which are gone).
    third = [second[0] + [40, 41], first[1] + [50]]
    again, width = gen.generate(third, [40] * 2, **kw)
    assert gen.continued == 3, "row 0 continues its second prompt; row 1 went back to the first turn's"
    alone, plain_width = _plain(model, third, **kw)
    assert [_turn(r) for r in again.sequences[:, width:]] == [_turn(r) for r in alone.sequences[:, plain_width:]]


def test_prompts_past_the_memory_budget_are_prefilled_whole(model):
    system = [(i * 7) % 90 + 3 for i in range(40)]
    gen = SharedPrefixGenerator(model, pad_token_id=0, max_remembered_bytes=1)
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    gen.generate([system + [5, 9]], [40], **kw)
    assert not gen._prompts
    gen.generate([system + [5, 9, 1, 2]], [40], **kw)
    assert gen.continued == 0
