"""The SFT step's CPU shortcuts (trainer/sft_speed.py) leave the loss and its gradients as they were."""

from __future__ import annotations


import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from tests.random_llama import random_llama  # noqa: E402
from trainer.sft_speed import causal_mask_for_right_padding, is_right_padded, score_labelled_positions_only  # noqa: E402


def _tiny_llama():
    return random_llama(max_positions=128)


def _right_padded_batch():
    ids = torch.randint(3, 300, (3, 24))
    mask = torch.ones_like(ids)
    for row, length in enumerate((24, 17, 9)):
        ids[row, length:] = 0
        mask[row, length:] = 0
    labels = ids.clone()
    labels[mask == 0] = -100
    labels[:, :5] = -100  # a prompt: no loss
    return ids, mask, labels


def _loss_and_grads(model, **inputs):
    model.zero_grad()
    loss = model(**inputs).loss
    loss.backward()
    return loss.item(), [p.grad.clone() for p in model.parameters()]


def test_is_right_padded():
    assert is_right_padded(torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]]))
    assert not is_right_padded(torch.tensor([[0, 1, 1], [1, 1, 1]]))  # left padding, as generation pads
    assert not is_right_padded(torch.tensor([[1, 0, 1]]))


def test_a_right_padded_batch_trains_the_same_with_the_causal_mask_alone():
    model = _tiny_llama().train()
    ids, mask, labels = _right_padded_batch()
    masked = _loss_and_grads(model, input_ids=ids, attention_mask=mask, labels=labels)
    dropped_by_hand = _loss_and_grads(model, input_ids=ids, labels=labels)

    causal_mask_for_right_padding(model)
    hooked = _loss_and_grads(model, input_ids=ids, attention_mask=mask, labels=labels)

    for other in (dropped_by_hand, hooked):
        assert other[0] == pytest.approx(masked[0], rel=1e-5)
        for a, b in zip(masked[1], other[1]):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_the_mask_is_kept_where_it_matters():
    """Left padding (generation) and anything outside training keep their masks: dropping a left
    pad's mask would let real tokens attend to pads."""
    model = _tiny_llama()
    causal_mask_for_right_padding(model)
    seen = []
    model.model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("attention_mask")), with_kwargs=True)
    ids = torch.randint(3, 300, (2, 8))
    left = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8])
    right = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0], [1] * 8])

    model.train()
    model(input_ids=ids, attention_mask=left)
    model(input_ids=ids, attention_mask=right)
    model.eval()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=right)
    assert seen[0] is not None and seen[1] is None and seen[2] is not None


def test_trls_fused_head_scores_only_labelled_positions_on_cpu_with_the_same_loss():
    import trl.trainer.utils as trl_utils

    if not hasattr(trl_utils, "add_fused_lm_head"):
        pytest.skip("this TRL has no fused LM head")
    model = _tiny_llama().train()
    ids, mask, labels = _right_padded_batch()
    own = _loss_and_grads(model, input_ids=ids, attention_mask=mask, labels=labels)
    trl_utils.add_fused_lm_head(model)
    every_position = _loss_and_grads(model, input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)

    assert score_labelled_positions_only()
    assert trl_utils._use_triton(torch.device("cpu"))
    assert score_labelled_positions_only()  # twice changes nothing
    labelled_only = _loss_and_grads(model, input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)

    for other in (every_position, labelled_only):
        assert other[0] == pytest.approx(own[0], rel=1e-5)
        for a, b in zip(own[1], other[1]):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
