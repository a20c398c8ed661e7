"""Batches that share a system turn (trainer/prefix_batches.py): every example still seen once an
epoch, and the shared turn computed once with the same loss and gradients as the full batch."""

from __future__ import annotations

import random

import pytest

from trainer.prefix_batches import PrefixGroupedSampler, grouped_batches, system_turn_key

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.random_llama import random_llama  # noqa: E402
from trainer.prefix_batches import share_prefix_in_training  # noqa: E402


def _example(project: str, prompt: str):
    messages = [{"role": "system", "content": f"You are a coding agent.\n\nWorking directory: /home/dev/{project}"},
                {"role": "user", "content": prompt}, {"role": "assistant", "content": "Done."}]
    return messages, [{"name": "Read", "parameters": {"file_path": "string"}}]


def test_the_key_is_the_system_turn_and_the_tools_not_the_conversation():
    a = system_turn_key(*_example("shop", "Fix the bug."))
    assert a == system_turn_key(*_example("shop", "Explain the cache module."))
    assert a != system_turn_key(*_example("billing", "Fix the bug."))
    messages, tools = _example("shop", "Fix the bug.")
    assert a != system_turn_key(messages, tools + [{"name": "Bash", "parameters": {"command": "string"}}])


def test_grouped_batches_see_every_example_once_and_keep_projects_together():
    keys = [f"project{i % 5}" for i in range(103)]  # 21, 21, 21, 20, 20 examples
    batches = grouped_batches(keys, 4, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(103))
    mixed = [b for b in batches if len({keys[i] for i in b}) > 1]
    # Each project's remainder (1, 1, 1, 0, 0) is pooled: one mixed batch of 3, nothing else mixed.
    assert [len(b) for b in mixed] == [3]
    assert all(len(b) == 4 for b in batches if b not in mixed)
    assert grouped_batches(keys, 4, random.Random(0)) == batches
    assert grouped_batches(keys, 4, random.Random(1)) != batches


def test_the_sampler_yields_whole_batches_and_a_new_order_each_epoch():
    keys = [f"project{i % 3}" for i in range(50)]
    sampler = PrefixGroupedSampler(keys, batch_size=4, seed=7)
    first, second = list(sampler), list(sampler)
    assert len(sampler) == 50
    assert sorted(first) == sorted(second) == list(range(50))
    assert first != second
    # A data loader cuts at multiples of 4: only the last batch is short or mixed.
    cut = [first[i:i + 4] for i in range(0, 50, 4)]
    assert all(len({keys[i] for i in b}) == 1 for b in cut[:-2])
    sampler.set_epoch(0)
    assert list(sampler) == first  # an epoch's order depends on the seed and the epoch alone
    assert list(PrefixGroupedSampler(keys, batch_size=4, seed=7)) == first


def _batch_sharing(prefix: int, rows: int = 3, length: int = 40, pad_from=(40, 33, 26)):
    torch.manual_seed(1)
    ids = torch.randint(3, 300, (rows, length))
    ids[:, :prefix] = ids[0, :prefix]
    labels = ids.clone()
    for row, end in enumerate(pad_from[:rows]):
        ids[row, end:] = 0
        labels[row, end:] = -100
    labels[:, : prefix + 2] = -100  # the system turn and the start of the prompt carry no loss
    return ids, labels


def _layer_inputs(model) -> list[tuple[int, int]]:
    """(rows, tokens) of every batch the first decoder layer runs on, from now on."""
    seen = []

    def record(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        seen.append(tuple(hidden.shape[:2]))

    model.get_decoder().layers[0].register_forward_pre_hook(record, with_kwargs=True)
    return seen


def _loss_and_grads(model, ids, labels):
    model.zero_grad()
    loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_a_shared_prefix_run_once_trains_exactly_as_the_full_batch():
    ids, labels = _batch_sharing(prefix=20)
    model = random_llama().train()
    full = _loss_and_grads(model, ids, labels)
    assert share_prefix_in_training(model, min_shared=8)
    calls = _layer_inputs(model)
    shared = _loss_and_grads(model, ids, labels)
    # Once on one row's 20 shared tokens, once on every row's 20 others.
    assert calls == [(1, 20), (3, 20)]
    assert shared[0] == pytest.approx(full[0], rel=1e-5)
    for name, grad in full[1].items():
        assert torch.allclose(shared[1][name], grad, atol=1e-6, rtol=1e-4), name


def test_batches_that_share_little_and_anything_outside_training_run_as_before():
    model = random_llama()
    assert share_prefix_in_training(model, min_shared=8)
    assert share_prefix_in_training(model, min_shared=8)  # patching twice changes nothing more
    calls = _layer_inputs(model)
    ids, labels = _batch_sharing(prefix=4)
    model.train()
    model(input_ids=ids, labels=labels)  # 4 shared tokens: below the minimum
    shared_ids, _ = _batch_sharing(prefix=20)
    model(input_ids=shared_ids, attention_mask=torch.ones_like(shared_ids))  # a mask: padding it must honour
    model.eval()
    with torch.no_grad():
        model(input_ids=shared_ids)
    assert calls == [(3, 40)] * 3


def test_under_gradient_checkpointing_every_row_runs_whole():
    """Checkpointed layers drop the cache a second pass would read: the batch runs as it is."""
    ids, labels = _batch_sharing(prefix=20)
    model = random_llama().train()
    full = _loss_and_grads(model, ids, labels)
    model.gradient_checkpointing_enable()
    assert share_prefix_in_training(model, min_shared=8)
    calls = _layer_inputs(model)
    checkpointed = _loss_and_grads(model, ids, labels)
    assert (3, 40) in calls and (1, 20) not in calls
    assert checkpointed[0] == pytest.approx(full[0], rel=1e-5)


def _lora_llama():
    peft = pytest.importorskip("peft")
    return peft.get_peft_model(random_llama(), peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).train()


def test_lora_wrapped_models_share_the_prefix_too():
    ids, labels = _batch_sharing(prefix=20)
    model = _lora_llama()
    full = _loss_and_grads(model, ids, labels)
    assert share_prefix_in_training(model, min_shared=8)
    shared = _loss_and_grads(model, ids, labels)
    assert shared[0] == pytest.approx(full[0], rel=1e-5)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(torch.allclose(shared[1][n], full[1][n], atol=1e-6, rtol=1e-4) for n in trained)



def _grad_enabled_at_first_layer(model) -> list[tuple[int, int, bool]]:
    """(rows, tokens, gradient on) of every batch the first decoder layer runs on, from now on."""
    seen = []

    def record(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        seen.append((*hidden.shape[:2], torch.is_grad_enabled()))

    model.get_decoder().layers[0].register_forward_pre_hook(record, with_kwargs=True)
    return seen


def test_without_gradient_the_shared_turn_runs_once_under_no_grad_and_the_loss_is_unchanged():
    ids, labels = _batch_sharing(prefix=20)
    model = random_llama().train()
    full = _loss_and_grads(model, ids, labels)
    assert share_prefix_in_training(model, min_shared=8, gradient=False)
    calls = _grad_enabled_at_first_layer(model)
    frozen = _loss_and_grads(model, ids, labels)
    assert calls == [(1, 20, False), (3, 20, True)]
    assert frozen[0] == pytest.approx(full[0], rel=1e-5), "the same loss: only its gradient changes"
    # What the rows learn from reading the shared turn is kept; how the turn is encoded is not.
    changed = [n for n, g in full[1].items() if not torch.allclose(frozen[1][n], g, atol=1e-6, rtol=1e-4)]
    assert changed and all(frozen[1][n].abs().sum() > 0 for n in full[1] if "layers" in n)


def test_the_part_without_gradient_stops_before_the_first_label():
    """A label inside the tokens the rows share (a row repeated in a batch, a short prompt) keeps the
    gradient of the position that predicts it; a call with no labels runs with gradient throughout."""
    ids, labels = _batch_sharing(prefix=20)
    labels[1, 15] = ids[1, 15]  # row 1 is scored at position 15, inside the shared 20
    model = random_llama().train()
    assert share_prefix_in_training(model, min_shared=8, gradient=False)
    calls = _grad_enabled_at_first_layer(model)
    model(input_ids=ids, labels=labels).loss.backward()
    assert calls == [(1, 14, False), (3, 26, True)]
    calls.clear()
    model(input_ids=ids)  # no labels: nothing says where learning starts
    assert calls == [(1, 20, True), (3, 20, True)]
    calls.clear()
    labels[0, 5] = ids[0, 5]  # a label so early that fewer than min_shared tokens precede it
    model(input_ids=ids, labels=labels)
    assert calls == [(3, 40, True)]


def test_lora_learns_without_the_shared_turns_gradient():
    ids, labels = _batch_sharing(prefix=20)
    model = _lora_llama()
    full = _loss_and_grads(model, ids, labels)
    assert share_prefix_in_training(model, min_shared=8, gradient=False)
    calls = _grad_enabled_at_first_layer(model)
    frozen = _loss_and_grads(model, ids, labels)
    assert calls == [(1, 20, False), (3, 20, True)]
    assert frozen[0] == pytest.approx(full[0], rel=1e-5)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(frozen[1][n].abs().sum() > 0 for n in trained if "lora_B" in n)
